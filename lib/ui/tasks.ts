/**
 * Long work the UI starts (a board run, reproduce, hashing, compare) as one task at a time, with
 * its state sent to every open page over Server-Sent Events: several tabs see the same run, and
 * a tab opened mid-run gets the state so far. Cancelling aborts the library call's AbortSignal;
 * the library removes what it staged, so a cancelled task leaves nothing.
 */
import type { ServerResponse } from "node:http";
import { MergeError } from "../errors";
import { HttpError } from "./security";

export type TaskKind = "run" | "reproduce" | "hash" | "compare";

export interface TaskState {
  id: string;
  kind: TaskKind;
  /** For people: "board: 3 rows", "hash 4 models". */
  title: string;
  state: "running" | "done" | "failed" | "cancelled";
  startedAt: string;
  finishedAt: string | null;
  /** "hashing", "merging", "finishing", "comparing" while running. */
  phase: string | null;
  /** The file being hashed (merges hash their inputs for the recipe metadata first). */
  hashing: { path: string; bytesDone: number; bytesTotal: number } | null;
  /** One entry per pass of a merge (1-based `pass`), or one for a comparison or hashing. */
  passes: { pass: number; passes: number; fraction: number; bytesDone: number; bytesTotal: number }[];
  /** Each planned output and where it is: planned, writing, finishing, done, skipped. */
  outputs: { path: string; state: string }[];
  result: unknown;
  error: { code: string; message: string } | null;
}

interface Running {
  state: TaskState;
  controller: AbortController;
  promise: Promise<void>;
}

let counter = 0;

/** Least time between two states sent to the pages while a task runs. */
export const BROADCAST_MS = 100;

export class TaskHub {
  private current: Running | null = null;
  private readonly clients = new Set<ServerResponse>();
  private closed = false;

  /** The task running or the last one finished (null before the first). */
  get state(): TaskState | null {
    return this.current?.state ?? null;
  }

  /**
   * Starts a task; refused while another runs. `work` gets the signal and an `update` that
   * changes the state and tells every page.
   */
  start(kind: TaskKind, title: string, outputs: string[], work: (signal: AbortSignal, update: (change: (s: TaskState) => void) => void) => Promise<unknown>): TaskState {
    if (this.closed) throw new HttpError(503, "SHUTTING_DOWN", "the server is stopping");
    if (this.current?.state.state === "running") {
      throw new HttpError(409, "TASK_RUNNING", `a task is running (${this.current.state.title}); wait for it or cancel it`);
    }
    const state: TaskState = {
      id: `${Date.now().toString(36)}-${++counter}`, kind, title, state: "running", startedAt: new Date().toISOString(), finishedAt: null,
      phase: null, hashing: null, passes: [], outputs: outputs.map((path) => ({ path, state: "planned" })), result: null, error: null,
    };
    const controller = new AbortController();
    // Progress comes many times a second (hashing: every block read): pages get at most one state
    // per BROADCAST_MS within one step; a new phase, pass or output state goes out at once.
    let pending: NodeJS.Timeout | null = null;
    let shape = "";
    const update = (change: (s: TaskState) => void) => {
      change(state);
      const now = `${state.phase} ${state.passes.length} ${state.outputs.map((o) => o.state).join()}`;
      if (state.state !== "running" || now !== shape) {
        shape = now;
        if (pending) clearTimeout(pending);
        pending = null;
        this.broadcast(state);
      } else if (!pending) {
        pending = setTimeout(() => { pending = null; this.broadcast(state); }, BROADCAST_MS);
      }
    };
    const promise = work(controller.signal, update).then(
      (result) => update((s) => { s.state = "done"; s.result = result; s.phase = null; s.finishedAt = new Date().toISOString(); }),
      (e: unknown) => update((s) => {
        const aborted = e instanceof MergeError && e.code === "ABORTED";
        s.state = aborted ? "cancelled" : "failed";
        s.phase = null;
        s.finishedAt = new Date().toISOString();
        for (const o of s.outputs) if (o.state !== "done" && o.state !== "skipped") o.state = "not written";
        s.error = e instanceof MergeError ? { code: e.code, message: e.message } : { code: "INTERNAL", message: e instanceof Error ? e.message : String(e) };
      }),
    );
    this.current = { state, controller, promise };
    this.broadcast(state);
    return state;
  }

  cancel(id: string): TaskState {
    const c = this.current;
    if (!c || c.state.id !== id) throw new HttpError(404, "NOT_FOUND", `no task ${id}`);
    if (c.state.state === "running") c.controller.abort();
    return c.state;
  }

  /** An SSE stream: the current state at once, then every change, with a comment every 15 s to keep proxies from closing it. */
  subscribe(res: ServerResponse): void {
    res.writeHead(200, { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" });
    res.write(`retry: 2000\n\n`);
    this.send(res, "task", this.state);
    this.clients.add(res);
    const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15000);
    res.on("close", () => {
      clearInterval(keepAlive);
      this.clients.delete(res);
    });
  }

  /** Stops: cancels the running task and waits until the library has cleaned up; ends every stream. */
  async close(): Promise<void> {
    this.closed = true;
    const c = this.current;
    if (c && c.state.state === "running") {
      c.controller.abort();
      await c.promise;
    }
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  private broadcast(state: TaskState): void {
    for (const res of this.clients) this.send(res, "task", state);
  }

  private send(res: ServerResponse, event: string, data: unknown): void {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }
}
