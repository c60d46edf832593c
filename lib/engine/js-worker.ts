/** Worker-thread entry for the TS engine, so tensor math never runs on the caller's event loop. */
import { parentPort, workerData } from "node:worker_threads";
import { MergeError } from "../errors";
import type { Job } from "../native/job";
import { runJsJob } from "./js-engine";

const job = workerData as Job;
runJsJob(job).then(
  (result) => parentPort!.postMessage({ ok: true, result }),
  (e: unknown) => {
    const err = e instanceof MergeError ? e : new MergeError("INTERNAL", e instanceof Error ? e.message : String(e));
    parentPort!.postMessage({ ok: false, error: { code: err.code, message: err.message, path: err.path, tensor: err.tensor } });
  },
);
