/** The UI server under test: temp folders, raw HTTP (to set Host and Origin), an SSE reader. */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startUiServer, type UiServer, type UiServerOptions } from "../../lib/ui/server";
import type { TaskState } from "../../lib/ui/tasks";
import { randomValues, writeModel, type TestTensor } from "../helpers/models";

export interface Fixture {
  root: string;
  models: string;
  out: string;
  ui: UiServer;
  /** Host header value the server accepts. */
  host: string;
  close(): Promise<void>;
}

export async function startFixture(options: Partial<UiServerOptions> = {}, setup?: (models: string, out: string) => void): Promise<Fixture> {
  const root = mkdtempSync(join(tmpdir(), "tm-ui-"));
  const models = join(root, "models"), out = join(root, "out");
  mkdirSync(models);
  mkdirSync(out);
  setup?.(models, out);
  const ui = await startUiServer({ modelDirs: [models], outDir: out, port: 0, ...options });
  return {
    root, models, out, ui, host: `127.0.0.1:${ui.port}`,
    async close() {
      await ui.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface Call {
  method?: string;
  body?: unknown;
  /** Raw body text (overrides body). */
  raw?: string | Buffer;
  headers?: Record<string, string>;
  /** Default: Bearer token. "none": no credentials. */
  auth?: "bearer" | "none" | { cookie: string };
}

export function call(f: Fixture, path: string, c: Call = {}): Promise<Reply> {
  const headers: Record<string, string> = { host: f.host, ...c.headers };
  if (c.auth === undefined || c.auth === "bearer") headers.authorization = `Bearer ${f.ui.token}`;
  else if (c.auth !== "none") headers.cookie = c.auth.cookie;
  const body = c.raw ?? (c.body === undefined ? undefined : JSON.stringify(c.body));
  if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: f.ui.port, path, method: c.method ?? (body === undefined ? "GET" : "POST"), headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: unknown = undefined;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** An SSE subscription collecting every task state the server sends. */
export interface EventStream {
  states: TaskState[];
  /** Resolves with the first state (after now) that satisfies `test`. */
  until(test: (s: TaskState) => boolean, timeoutMs?: number): Promise<TaskState>;
  close(): void;
}

export function events(f: Fixture): Promise<EventStream> {
  return new Promise((resolve, reject) => {
    const states: TaskState[] = [];
    const waiters: { test: (s: TaskState) => boolean; done: (s: TaskState) => void }[] = [];
    const req = request({ host: "127.0.0.1", port: f.ui.port, path: "/api/events", headers: { host: f.host, authorization: `Bearer ${f.ui.token}` } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`events: HTTP ${res.statusCode}`));
      let buffer = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        buffer += d;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!/^event: task$/m.test(block) || data === "") continue;
          const s = JSON.parse(data) as TaskState | null;
          if (!s) continue;
          states.push(s);
          for (const w of [...waiters]) if (w.test(s)) { waiters.splice(waiters.indexOf(w), 1); w.done(s); }
        }
      });
      resolve({
        states,
        until: (test, timeoutMs = 30000) => new Promise((done, fail) => {
          const timer = setTimeout(() => fail(new Error(`no matching task event in ${timeoutMs} ms; last: ${JSON.stringify(states.at(-1))}`)), timeoutMs);
          waiters.push({ test, done: (s) => { clearTimeout(timer); done(s); } });
        }),
        close: () => req.destroy(),
      });
    });
    req.on("error", () => undefined);
    req.end();
  });
}

export const BLOCK_KEYS = {
  in00: "model.diffusion_model.input_blocks.0.0.weight",
  in04: "model.diffusion_model.input_blocks.4.1.proj_in.weight",
  mid: "model.diffusion_model.middle_block.1.proj_out.weight",
  out11: "model.diffusion_model.out.2.weight",
  te: "cond_stage_model.transformer.text_model.final_layer_norm.weight",
  vae: "first_stage_model.decoder.conv_out.bias",
  ids: "cond_stage_model.transformer.text_model.embeddings.position_ids",
};

/** An SD 1.x-shaped model (keys in several blocks), finite values from `seed`. */
export function writeBlockModel(path: string, seed: number, overrides: Partial<Record<keyof typeof BLOCK_KEYS, number[]>> = {}): Record<string, TestTensor> {
  const t: Record<string, TestTensor> = {
    [BLOCK_KEYS.in00]: { dtype: "F32", shape: [3, 4, 1, 1], values: overrides.in00 ?? randomValues(12, seed) },
    [BLOCK_KEYS.in04]: { dtype: "F16", shape: [4, 4], values: overrides.in04 ?? randomValues(16, seed + 1) },
    [BLOCK_KEYS.mid]: { dtype: "F32", shape: [6], values: overrides.mid ?? randomValues(6, seed + 2) },
    [BLOCK_KEYS.out11]: { dtype: "F32", shape: [4, 3, 1, 1], values: overrides.out11 ?? randomValues(12, seed + 3) },
    [BLOCK_KEYS.te]: { dtype: "F16", shape: [9], values: overrides.te ?? randomValues(9, seed + 4) },
    [BLOCK_KEYS.vae]: { dtype: "BF16", shape: [3], values: overrides.vae ?? randomValues(3, seed + 5) },
    [BLOCK_KEYS.ids]: { dtype: "I64", shape: [1, 4], values: [0, 1, 2, 3] },
  };
  writeModel(path, t);
  return t;
}

/** Every entry of a folder, hidden ones included. */
export function entries(dir: string): string[] {
  return readdirSync(dir).sort();
}
