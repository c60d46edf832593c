/**
 * The hashes the Stable Diffusion ecosystem uses to name model files:
 *
 * - `sha256`: SHA-256 of the whole file (A1111's "sha256", Civitai's SHA256); its first 10 hex
 *   digits are the short form A1111 shows and Civitai calls AutoV2 (`autov2`).
 * - `legacy`: the old A1111 `model_hash` (Civitai AutoV1): SHA-256 of the 64 KiB at offset 1 MiB,
 *   first 8 hex digits. Like A1111's Python (`seek(0x100000); read(0x10000)`), a file shorter
 *   than 1 MiB + 64 KiB hashes whatever bytes are there, so every file under 1 MiB has
 *   `e3b0c442` (the hash of nothing).
 * - `tensorSha256` (safetensors only): SHA-256 of the bytes after the header, i.e. from
 *   `8 + N` (N = the header length in the first 8 bytes) to the end of the file. This is
 *   kohya-ss `addnet_hash_safetensors` (stored by trainers as `sshs_model_hash`), the ModelSpec
 *   `modelspec.hash_sha256`, and what Civitai calls AutoV3: it survives metadata edits.
 *
 * The whole file is read once, in the main thread with asynchronous reads, into a shared ring of
 * buffers that two worker threads hash in parallel (whole file, tensor data), so the event loop
 * never runs SHA-256 and both hashes cost one pass over the disk.
 */
import { open } from "node:fs/promises";
import { Worker } from "node:worker_threads";
import { MergeError, fsError } from "../errors";

export interface FileHashes {
  /** SHA-256 of the whole file, 64 lower-case hex digits. */
  sha256: string;
  /** First 10 hex digits of sha256 (A1111's short hash, Civitai AutoV2). */
  autov2: string;
  /** Old A1111 model hash, 8 hex digits (Civitai AutoV1). */
  legacy: string;
  /** SHA-256 of the tensor data of a safetensors file (Civitai AutoV3); null for other formats. */
  tensorSha256: string | null;
}

export interface HashOptions {
  signal?: AbortSignal;
  /** Called after each chunk with bytes hashed so far and the file size. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/** Counters for tests and diagnostics: how much data the hashers have read. */
export const hashCounters = { files: 0, bytes: 0 };

const LEGACY_OFFSET = 0x100000;
const LEGACY_LENGTH = 0x10000;
/** 1 MiB slots: small enough that both workers hash a chunk while it is still in the CPU cache. */
const SLOT_SIZE = 1024 * 1024;
const SLOTS = 8;
const READS_IN_FLIGHT = 2;

/**
 * Old A1111 model hash: SHA-256 of the 64 KiB at offset 1 MiB (fewer bytes, or none, if the
 * file is shorter), first 8 hex digits.
 *
 * @example
 * await legacyModelHash("tiny.safetensors"); // "e3b0c442" for any file under 1 MiB
 */
export async function legacyModelHash(path: string): Promise<string> {
  const { createHash } = await import("node:crypto");
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(e, path, "hashing");
  }
  try {
    const buf = Buffer.alloc(LEGACY_LENGTH);
    let got = 0;
    while (got < LEGACY_LENGTH) {
      const { bytesRead } = await handle.read(buf, got, LEGACY_LENGTH - got, LEGACY_OFFSET + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return createHash("sha256").update(buf.subarray(0, got)).digest("hex").slice(0, 8);
  } catch (e) {
    throw fsError(e, path, "hashing");
  } finally {
    await handle.close();
  }
}

/**
 * Where a safetensors file's tensor data starts (8 + header length), or null if the file is not
 * safetensors. Reads 9 bytes.
 */
export async function safetensorsDataOffset(path: string): Promise<number | null> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(e, path, "hashing");
  }
  try {
    const size = (await handle.stat()).size;
    const head = Buffer.alloc(9);
    const { bytesRead } = await handle.read(head, 0, 9, 0);
    if (bytesRead < 9 || head[8] !== 0x7b) return null;
    const n = head.readBigUInt64LE(0);
    if (n + 8n > BigInt(size)) return null;
    return Number(n) + 8;
  } finally {
    await handle.close();
  }
}

// The worker only hashes: the main thread owns the file and the ring of slots.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const ring = new Uint8Array(workerData.ring);
let hash = null;
parentPort.on("message", (m) => {
  if (m.t === "begin") { hash = createHash("sha256"); return; }
  if (m.t === "chunk") {
    hash.update(ring.subarray(m.start, m.start + m.length));
    parentPort.postMessage({ t: "done", slot: m.slot });
    return;
  }
  if (m.t === "end") { parentPort.postMessage({ t: "digest", hex: hash.digest("hex") }); hash = null; }
});
`;

interface HashWorker {
  worker: Worker;
  /** Resolves the digest of the current job. */
  onDigest?: (hex: string) => void;
  onError?: (e: Error) => void;
}

/**
 * Two hashing threads sharing one ring of read buffers. One job at a time (both CPUs are busy
 * during a job anyway); jobs queue. Workers are unref'd while idle so they never keep a process alive.
 */
class HashPool {
  private ring: SharedArrayBuffer | undefined;
  private workers: HashWorker[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  /** Per slot: how many workers still use it. */
  private pending = new Int32Array(SLOTS);
  private slotWaiters: (() => void)[] = [];

  run(path: string, dataOffset: number | null, options: HashOptions): Promise<{ sha256: string; tensorSha256: string | null }> {
    const job = this.queue.then(() => this.hash(path, dataOffset, options));
    this.queue = job.catch(() => undefined);
    return job;
  }

  private start(): HashWorker[] {
    if (this.workers.length === 2) return this.workers;
    this.ring ??= new SharedArrayBuffer(SLOT_SIZE * SLOTS);
    this.pending.fill(0);
    for (let i = 0; i < 2; i++) {
      const w: HashWorker = { worker: new Worker(WORKER_SOURCE, { eval: true, workerData: { ring: this.ring } }) };
      w.worker.on("message", (m: { t: string; slot?: number; hex?: string }) => {
        if (!this.workers.includes(w)) return; // a late message from a worker dropped by reset()
        if (m.t === "done") {
          this.pending[m.slot!]!--;
          const waiters = this.slotWaiters.splice(0);
          for (const wake of waiters) wake();
        } else if (m.t === "digest") {
          const resolve = w.onDigest;
          w.onDigest = undefined;
          resolve?.(m.hex!);
        }
      });
      w.worker.on("error", (e) => {
        this.reset();
        w.onError?.(e);
      });
      this.workers.push(w);
    }
    return this.workers;
  }

  /** Drops the workers (after an abort or a crash); the next job starts fresh ones. */
  private reset(): void {
    for (const w of this.workers) void w.worker.terminate();
    this.workers = [];
    this.pending.fill(0);
    for (const wake of this.slotWaiters.splice(0)) wake();
  }

  private async freeSlot(signal: AbortSignal | undefined): Promise<number> {
    for (;;) {
      if (signal?.aborted) throw new MergeError("ABORTED", "hashing was cancelled");
      const slot = this.pending.findIndex((n) => n === 0);
      if (slot >= 0) return slot;
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
  }

  private async hash(path: string, dataOffset: number | null, options: HashOptions): Promise<{ sha256: string; tensorSha256: string | null }> {
    const { signal, onProgress } = options;
    if (signal?.aborted) throw new MergeError("ABORTED", "hashing was cancelled");
    let handle;
    try {
      handle = await open(path, "r");
    } catch (e) {
      throw fsError(e, path, "hashing");
    }
    const workers = this.start();
    for (const w of workers) w.worker.ref();
    const [whole, tensors] = workers as [HashWorker, HashWorker];
    let failed: Error | undefined;
    const digests = [whole, tensors].map((w) => new Promise<string>((resolve, reject) => {
      w.onDigest = resolve;
      w.onError = (e) => { failed = e; reject(e); };
    }));
    digests.forEach((d) => d.catch(() => undefined));
    const reads: { slot: number; position: number; length: number; done: Promise<void> }[] = [];
    try {
      const size = (await handle.stat()).size;
      onProgress?.(0, size); // a bar (and its clock) can start before the first chunk
      whole.worker.postMessage({ t: "begin" });
      if (dataOffset !== null) tensors.worker.postMessage({ t: "begin" });
      const ring = new Uint8Array(this.ring!);
      // Two reads in flight keep the disk busy while the previous chunk is handed over.
      const readChunk = async (slot: number, position: number, length: number) => {
        let got = 0;
        while (got < length) {
          const { bytesRead } = await handle.read(ring, slot * SLOT_SIZE + got, length - got, position + got);
          if (bytesRead === 0) throw new MergeError("INPUT_CHANGED", `${path}: the file shrank while it was being hashed; nothing was saved`, { path });
          got += bytesRead;
        }
      };
      let next = 0;
      let posted = 0;
      while (posted < size) {
        if (failed) throw failed;
        if (signal?.aborted) throw new MergeError("ABORTED", "hashing was cancelled");
        while (reads.length < READS_IN_FLIGHT && next < size) {
          const slot = await this.freeSlot(signal);
          this.pending[slot] = 1; // held by the reader until posted
          const length = Math.min(SLOT_SIZE, size - next);
          const done = readChunk(slot, next, length);
          done.catch(() => undefined); // awaited in order below; an earlier failure may come first
          reads.push({ slot, position: next, length, done });
          next += length;
        }
        const r = reads.shift()!;
        await r.done;
        const start = r.slot * SLOT_SIZE;
        this.pending[r.slot] = 1;
        whole.worker.postMessage({ t: "chunk", slot: r.slot, start, length: r.length });
        if (dataOffset !== null && r.position + r.length > dataOffset) {
          const skip = Math.max(0, dataOffset - r.position);
          this.pending[r.slot]!++;
          tensors.worker.postMessage({ t: "chunk", slot: r.slot, start: start + skip, length: r.length - skip });
        }
        posted += r.length;
        hashCounters.bytes += r.length;
        onProgress?.(posted, size);
      }
      whole.worker.postMessage({ t: "end" });
      if (dataOffset !== null) tensors.worker.postMessage({ t: "end" });
      const sha256 = await digests[0]!;
      const tensorSha256 = dataOffset !== null ? await digests[1]! : null;
      hashCounters.files++;
      return { sha256, tensorSha256 };
    } catch (e) {
      // Reads still in flight write into the ring: let them land before the next job uses it.
      await Promise.allSettled(reads.map((r) => r.done));
      // Workers may still hold slots of this job: start clean next time.
      this.reset();
      if (e instanceof MergeError) throw e;
      throw fsError(e, path, "hashing");
    } finally {
      for (const w of this.workers) {
        w.onDigest = undefined;
        w.onError = undefined;
        w.worker.unref();
      }
      await handle.close();
    }
  }
}

let pool: HashPool | undefined;

/**
 * SHA-256 of the whole file and, when `dataOffset` is given, of the bytes from `dataOffset` to
 * the end, in one read of the file, off the event loop.
 *
 * @example
 * const { sha256, tensorSha256 } = await sha256File("model.safetensors", await safetensorsDataOffset("model.safetensors"));
 */
export function sha256File(path: string, dataOffset: number | null = null, options: HashOptions = {}): Promise<{ sha256: string; tensorSha256: string | null }> {
  pool ??= new HashPool();
  return pool.run(path, dataOffset, options);
}

/**
 * All hashes of a model file (one pass over the data plus a 64 KiB read). Not cached; see
 * `getFileHashes` in hash-cache.ts for the cached version.
 *
 * @example
 * const h = await computeFileHashes("models/dreamshaper_8.safetensors");
 * console.log(h.sha256.slice(0, 10) === h.autov2, h.legacy.length); // true 8
 */
export async function computeFileHashes(path: string, options: HashOptions = {}): Promise<FileHashes> {
  const dataOffset = await safetensorsDataOffset(path);
  const [{ sha256, tensorSha256 }, legacy] = await Promise.all([sha256File(path, dataOffset, options), legacyModelHash(path)]);
  return { sha256, autov2: sha256.slice(0, 10), legacy, tensorSha256 };
}
