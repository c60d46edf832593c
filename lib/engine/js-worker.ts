/**
 * Worker-thread entry for the TS engine, so tensor math never runs on the caller's event loop.
 * Two roles: the coordinator of a job (workerData is the Job), and, with `threads` > 1, a part
 * worker the coordinator starts to compute its share of the chunks (workerData is a PartData).
 */
import { parentPort, workerData } from "node:worker_threads";
import { MergeError } from "../errors";
import type { Job } from "../native/job";
import { runJsJob, runPart, type CoordinatorMessage, type PartData } from "./js-engine";

const data = workerData as Job | PartData;
if ("part" in data && data.part) {
  void runPart(data, (m) => parentPort!.postMessage(m), (receive) => {
    const listener = (m: CoordinatorMessage): void => receive(m);
    parentPort!.on("message", listener);
    // without a listener the port no longer keeps the worker alive, so it exits when done
    return () => parentPort!.off("message", listener);
  });
} else {
  runJsJob(data as Job).then(
    (result) => parentPort!.postMessage({ ok: true, result }),
    (e: unknown) => {
      const err = e instanceof MergeError ? e : new MergeError("INTERNAL", e instanceof Error ? e.message : String(e));
      parentPort!.postMessage({ ok: false, error: { code: err.code, message: err.message, path: err.path, tensor: err.tensor } });
    },
  );
}
