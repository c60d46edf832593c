/** Runs a job on the chosen engine: "native" (the addon), "js" (pure TS, in a worker thread) or "auto". */
import { stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { MergeError, type ErrorCode } from "../errors";
import type { Job, JobResult } from "../native/job";

export type EngineName = "auto" | "native" | "js";

export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

/** A control block both engines can see: [0] cancel flag, [1] bytes done, [2] total bytes. */
export function newControl(totalBytes: number): Float64Array {
  const control = new Float64Array(new SharedArrayBuffer(4 * 8));
  control[2] = totalBytes;
  return control;
}

function runInWorker(job: Job): Promise<JobResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(join(__dirname, "js-worker.js"), { workerData: job });
    let settled = false;
    worker.once("message", (m: { ok: boolean; result?: JobResult; error?: { code: ErrorCode; message: string; path?: string; tensor?: string } }) => {
      settled = true;
      if (m.ok) resolve(m.result!);
      else {
        const { code, message, ...context } = m.error!;
        reject(new MergeError(code, message, Object.fromEntries(Object.entries(context).filter(([, v]) => v !== undefined))));
      }
    });
    worker.once("error", (e) => { settled = true; reject(new MergeError("INTERNAL", `TS engine worker failed: ${e.message}`, { cause: e })); });
    worker.once("exit", (code) => { if (!settled) reject(new MergeError("INTERNAL", `TS engine worker exited with code ${code}`)); });
  });
}

/** What this module needs of lib/native/binding.ts (loaded lazily: the addon may be absent). */
interface NativeModule {
  nativeAvailable(): boolean;
  requireNative(): unknown;
  runNativeJob(job: Job): Promise<JobResult>;
  prepareOutputBuffers(maxOutputBytes: number): void;
  discardOutputBuffers(): void;
}
let nativeModule: NativeModule | null | undefined;
function native(): NativeModule | null {
  if (nativeModule === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      nativeModule = require("../native/binding") as NativeModule;
    } catch {
      nativeModule = null;
    }
  }
  return nativeModule;
}

/** Whether the native addon is loaded and usable. */
export function nativeAvailable(): boolean {
  const n = native();
  return n !== null && n.nativeAvailable();
}

/** Which engine `auto` resolves to on this machine. */
export function resolveEngine(engine: EngineName): "native" | "js" {
  if (engine === "js") return "js";
  if (engine === "native") {
    if (!nativeAvailable()) {
      native()?.requireNative(); // throws NATIVE_UNAVAILABLE listing what was tried and the fix
      throw new MergeError("NATIVE_UNAVAILABLE", "the native addon is not available (run `npm run build:native`)");
    }
    return "native";
  }
  return nativeAvailable() ? "native" : "js";
}

export async function runJob(job: Job, engine: "native" | "js"): Promise<JobResult> {
  if (engine === "js") return runInWorker(job);
  return native()!.runNativeJob(job);
}

/**
 * The output windows' size (native/core/job.h window_bytes) times 4: an input of at least this
 * size gives an output of at least one window in any dtype of 8 bits or more, so the prepared
 * buffers fit it; smaller jobs (tests, tiny models) allocate their own as before.
 */
const PREPARE_MIN_INPUT_BYTES = 128 * 2 ** 20;

/**
 * Before planning a native job that reads `inputPaths`: faults in its
 * output window buffers on a libuv worker while the planning runs (lib/native/binding.ts
 * prepareOutputBuffers). Call discardPreparedOutput() in a finally: it frees them if the job
 * never ran. Does nothing for the TS engine.
 */
export async function prepareNativeOutput(engine: "native" | "js", inputPaths: string[]): Promise<void> {
  if (engine !== "native") return;
  // A file that cannot be read fails later with the planner's own error, not here.
  const sizes = await Promise.all(inputPaths.map((p) => stat(p).then((s) => s.size, () => 0)));
  const largest = Math.max(0, ...sizes);
  if (largest >= PREPARE_MIN_INPUT_BYTES) native()?.prepareOutputBuffers(largest);
}

/** Frees what prepareNativeOutput pooled and no job took (a job empties the pool when it ends). */
export function discardPreparedOutput(engine: "native" | "js"): void {
  if (engine === "native") native()?.discardOutputBuffers();
}
