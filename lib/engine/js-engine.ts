/**
 * The pure-TypeScript engine: executes a `Job` with exactly the native engine's arithmetic
 * (fp32 per operation via Math.fround, the same conversions), reading inputs in bounded chunks
 * with positioned reads. It is the fallback where the addon cannot load and the yardstick the
 * native engine is measured and tested against. Runs inside a worker thread (see js-worker.ts),
 * and with `threads` > 1 shares the chunks out to that many more.
 */
import { open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { crc32 } from "node:zlib";
import { MergeError, fsError, type ErrorCode } from "../errors";
import type { Job, JobResult } from "../native/job";
import { JS_CHUNK_ELEMENTS, STOPPED, chunksOf, runChunks, type PieceStats, type StatsExchange } from "./js-chunks";
import { alignedBuffer, readExact, type NonFiniteCount } from "./js-codec";
import { OutputWriter, openDirect } from "./js-direct";

export { JS_CHUNK_ELEMENTS } from "./js-chunks";
export { countNonFinite } from "./js-codec";

/** What a part worker (js-worker.ts) is given: the job without its literals, and shared counters. */
export interface PartData {
  part: true;
  job: Job;
  /** [0] the next unclaimed chunk, [1] stop flag (a worker failed). */
  shared: Int32Array;
  /** Per piece: 1 once a worker claimed the computing of its reductions (StatsExchange). */
  statsClaims: Int32Array;
}
/** A piece's statistics, sent by the worker that computed them and relayed to the others. */
type StatsMessage = { stats: number; values: number[]; columns: (Float64Array | undefined)[] };
type PartMessage = { bytes: number } | StatsMessage | { ok: true; nonFinite: NonFiniteCount[]; computedStats: number; heapGrowths: number } | { ok: false; stopped?: boolean; error?: { code: ErrorCode; message: string; path?: string; tensor?: string } };
/** From the coordinator to a part worker: another worker's statistics, or "stop waiting". */
export type CoordinatorMessage = StatsMessage | { stop: true };

/** Runs `threads` part workers over the job's chunks; the first real error wins, after all stopped. */
async function runParts(job: Job, threads: number, onBytes: (bytes: number) => void, nonFinite: NonFiniteCount[]): Promise<{ computedStats: number; heapGrowths: number }> {
  let computedStats = 0, heapGrowths = 0;
  const shared = new Int32Array(new SharedArrayBuffer(8));
  const statsClaims = new Int32Array(new SharedArrayBuffer(4 * Math.max(1, job.pieces.length)));
  const partJob: Job = { ...job, outputs: job.outputs.map((o) => ({ ...o, literals: [] })) };
  const workers: Worker[] = [];
  let failure: MergeError | undefined;
  const fail = (e: MergeError): void => {
    failure ??= e;
    Atomics.store(shared, 1, 1);
    // a worker waiting for statistics the failed one was computing must not wait forever
    for (const w of workers) w.postMessage({ stop: true } satisfies CoordinatorMessage);
  };
  await Promise.all(Array.from({ length: threads }, () => new Promise<void>((resolve) => {
    const data: PartData = { part: true, job: partJob, shared, statsClaims };
    const worker = new Worker(join(__dirname, "js-worker.js"), { workerData: data });
    workers.push(worker);
    let done = false;
    worker.on("message", (m: PartMessage) => {
      if ("bytes" in m) { onBytes(m.bytes); return; }
      if ("stats" in m) {
        for (const w of workers) if (w !== worker) w.postMessage(m satisfies CoordinatorMessage);
        return;
      }
      done = true;
      if (m.ok) {
        m.nonFinite.forEach((c, o) => { nonFinite[o]!.nan += c.nan; nonFinite[o]!.inf += c.inf; });
        computedStats += m.computedStats;
        heapGrowths += m.heapGrowths;
      }
      if (!m.ok && !m.stopped) {
        const { code, message, ...context } = m.error!;
        fail(new MergeError(code, message, Object.fromEntries(Object.entries(context).filter(([, v]) => v !== undefined))));
      }
    });
    worker.once("error", (e) => { done = true; fail(new MergeError("INTERNAL", `TS engine worker failed: ${e.message}`, { cause: e })); });
    worker.once("exit", (code) => {
      if (!done) fail(new MergeError("INTERNAL", `TS engine worker exited with code ${code}`));
      resolve();
    });
  })));
  if (failure) throw failure;
  return { computedStats, heapGrowths };
}

/**
 * A part worker's side of the statistics exchange: claims through the shared array, publishes
 * through `post`, and waits for what `receive` gets from the coordinator.
 */
function partExchange(claims: Int32Array, post: (m: PartMessage) => void): { exchange: StatsExchange; receive: (m: CoordinatorMessage) => void } {
  const arrived = new Map<number, PieceStats>();
  const waiting = new Map<number, { resolve: (s: PieceStats) => void; reject: (e: Error) => void }>();
  let stopped = false, latest = -1;
  const forget = (p: number): void => {
    latest = Math.max(latest, p);
    for (const q of arrived.keys()) if (q < p) arrived.delete(q);
  };
  return {
    exchange: {
      claim: (p) => { forget(p); return Atomics.compareExchange(claims, p, 0, 1) === 0; },
      publish: (p, s) => post({ stats: p, values: s.values, columns: s.columns }),
      wait: (p) => {
        const have = arrived.get(p);
        if (have) { arrived.delete(p); return Promise.resolve(have); }
        if (stopped) return Promise.reject(new Error(STOPPED));
        return new Promise((resolve, reject) => waiting.set(p, { resolve, reject }));
      },
    },
    receive: (m) => {
      if ("stop" in m) {
        stopped = true;
        for (const w of waiting.values()) w.reject(new Error(STOPPED));
        waiting.clear();
        return;
      }
      const stats = { values: m.values, columns: m.columns };
      const w = waiting.get(m.stats);
      if (w) { waiting.delete(m.stats); w.resolve(stats); }
      else if (m.stats >= latest) arrived.set(m.stats, stats); // chunks are claimed in increasing order: older ones are never needed
    },
  };
}

/**
 * Part worker body: opens its own handles (the outputs exist by now) and claims chunks.
 * `subscribe` delivers the coordinator's messages until the returned function is called.
 */
export async function runPart(data: PartData, post: (m: PartMessage) => void, subscribe: (receive: (m: CoordinatorMessage) => void) => () => void): Promise<void> {
  const { job, shared } = data;
  const handles: FileHandle[] = [];
  const writers: OutputWriter[] = [];
  const { exchange, receive } = partExchange(data.statsClaims, post);
  const unsubscribe = subscribe(receive);
  try {
    const inputs: FileHandle[] = [];
    for (const input of job.inputs) {
      inputs.push(await open(input.path, "r").catch((e) => { throw fsError(e, input.path, "opening an input"); }));
      handles.push(inputs[inputs.length - 1]!);
    }
    for (const output of job.outputs) {
      const handle = await open(output.path, "r+").catch((e) => { throw fsError(e, output.path, "opening the output"); });
      handles.push(handle);
      writers.push(new OutputWriter(handle, await openDirect(output.path)));
    }
    const nonFinite = job.outputs.map(() => ({ nan: 0, inf: 0 }));
    const counts = await runChunks(job, inputs, writers, () => Atomics.add(shared, 0, 1), (bytes) => post({ bytes }), nonFinite, shared.subarray(1), exchange);
    post({ ok: true, nonFinite, ...counts });
  } catch (e) {
    if (e instanceof Error && e.message === STOPPED && !(e instanceof MergeError)) post({ ok: false, stopped: true });
    else {
      const err = e instanceof MergeError ? e : new MergeError("INTERNAL", e instanceof Error ? e.message : String(e));
      post({ ok: false, error: { code: err.code, message: err.message, path: err.path, tensor: err.tensor } });
    }
  } finally {
    unsubscribe();
    for (const w of writers) await w.close().catch(() => undefined);
    for (const h of handles) await h.close().catch(() => undefined);
  }
}

/**
 * Executes a job; the same contract as the native `runJob`. With `job.threads` > 1 the chunks
 * are shared out to that many part workers (disjoint element ranges, each written at its own
 * position): the same bytes as one thread, memory bounded by threads × a few chunk buffers.
 */
export async function runJsJob(job: Job): Promise<JobResult> {
  const inputs: FileHandle[] = [];
  const outputs: FileHandle[] = [];
  const writers: OutputWriter[] = [];
  const created: string[] = [];
  const control = job.control;
  let bytesWritten = 0;
  const onBytes = (bytes: number): void => {
    bytesWritten += bytes;
    control[1] = bytesWritten;
  };
  try {
    for (const input of job.inputs) {
      const handle = await open(input.path, "r").catch((e) => { throw fsError(e, input.path, "opening an input"); });
      inputs.push(handle);
      const size = (await handle.stat()).size;
      if (size !== input.size) throw new MergeError("SIZE_MISMATCH", `${input.path}: the file changed size (${input.size} → ${size} bytes) since it was read`, { path: input.path });
    }
    for (const output of job.outputs) {
      // "wx+": CRC ranges are read back from the output
      const handle = await open(output.path, "wx+").catch((e) => { throw fsError(e, output.path, "creating the output"); });
      created.push(output.path);
      outputs.push(handle);
      await handle.truncate(output.size);
      for (const l of output.literals) await handle.write(l.data, 0, l.data.length, l.offset);
    }
    // Per output, by the rule of exec.h (exec_write_range): op results, and converted copies where the input was finite.
    const nonFinite = job.outputs.map(() => ({ nan: 0, inf: 0 }));
    const threads = Math.max(1, Math.min(job.threads || 1, chunksOf(job).length));
    let counts: { computedStats: number; heapGrowths: number };
    if (threads > 1) counts = await runParts(job, threads, onBytes, nonFinite);
    else {
      let next = 0;
      for (const o of job.outputs) writers.push(new OutputWriter(outputs[writers.length]!, await openDirect(o.path)));
      counts = await runChunks(job, inputs, writers, () => next++, onBytes, nonFinite);
      for (const w of writers) await w.close();
    }
    const raw = alignedBuffer(JS_CHUNK_ELEMENTS * 8);
    const crcs: number[][] = [];
    for (let o = 0; o < job.outputs.length; o++) {
      const ranges = job.outputs[o]!.crc32Ranges ?? [];
      const sums: number[] = [];
      for (const r of ranges) {
        let crc = 0;
        for (let done = 0; done < r.length; done += raw.length) {
          const len = Math.min(raw.length, r.length - done);
          await readExact(outputs[o]!, raw, len, r.offset + done, job.outputs[o]!.path);
          crc = crc32(raw.subarray(0, len), crc);
        }
        sums.push(crc >>> 0);
      }
      crcs.push(sums);
      await outputs[o]!.sync();
    }
    // computedStats: pieces whose reductions were computed, all threads together (each once);
    // heapGrowths: buffer-set heaps outgrown (regionsBound sizes them up front: 0)
    return { bytesWritten, isa: "js", threads, crc32: crcs, nonFinite, stats: counts };
  } catch (e) {
    for (const path of created) await unlink(path).catch(() => undefined);
    throw e;
  } finally {
    for (const w of writers) await w.close().catch(() => undefined);
    for (const h of [...inputs, ...outputs]) await h.close().catch(() => undefined);
  }
}
