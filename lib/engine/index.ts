/** Runs a job on the chosen engine: "native" (the addon), "js" (pure TS, in a worker thread) or "auto". */
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
