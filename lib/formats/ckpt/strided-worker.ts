/**
 * Worker thread of strided.ts: copies non-contiguous tensors of a .ckpt into a side file,
 * contiguously, with bounded memory (one block, its index and one window). Two ways:
 * - blocks: for each block of output elements, compute each element's storage index (row-major
 *   odometer over the view's strides), then read the storage span the block touches in windows
 *   and pick the elements each window holds. A storage that fits in a window is read once; a
 *   slice or an expand touches a short span per block.
 * - tiles, for a storage larger than a window whose last dim is not its most compact (a large
 *   transpose or channels-last permute, where every row-major block would touch the whole
 *   storage): see copyByTiles.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { MergeError, fsError } from "../../errors";
import type { StridedCopy, StridedJob } from "./strided";

type Copier = (dst: number, src: number) => void;

/** Element copy by size, through integer views (float views could canonicalise NaN payloads). */
function copierFor(size: number, out: Uint8Array, window: Uint8Array): Copier {
  switch (size) {
    case 1: return (d, s) => { out[d] = window[s]!; };
    case 2: {
      const o = new Uint16Array(out.buffer), w = new Uint16Array(window.buffer);
      return (d, s) => { o[d] = w[s]!; };
    }
    case 4: {
      const o = new Uint32Array(out.buffer), w = new Uint32Array(window.buffer);
      return (d, s) => { o[d] = w[s]!; };
    }
    default: {
      const o = new Uint32Array(out.buffer), w = new Uint32Array(window.buffer);
      return (d, s) => { o[2 * d] = w[2 * s]!; o[2 * d + 1] = w[2 * s + 1]!; };
    }
  }
}

function readFully(fd: number, path: string, buffer: Uint8Array, length: number, position: number, tensor: string): void {
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      n = readSync(fd, buffer, done, length - done, position + done);
    } catch (e) {
      throw fsError(e, path, "reading");
    }
    if (n === 0) throw new MergeError("FILE_TRUNCATED", `${path}: ends at byte ${position + done} while reading tensor "${tensor}" (did it change during the merge?)`, { path, tensor });
    done += n;
  }
}

function writeFully(fd: number, path: string, buffer: Uint8Array, from: number, length: number, position: number): void {
  let done = 0;
  while (done < length) {
    try {
      done += writeSync(fd, buffer, from + done, length - done, position + done);
    } catch (e) {
      throw fsError(e, path, "writing");
    }
  }
}

/** Storage indices of output elements [start, start + count) into `index`; returns [min, max]. */
function storageIndices(c: StridedCopy, start: number, count: number, index: Float64Array): [number, number] {
  const rank = c.shape.length;
  const k = new Array<number>(rank).fill(0);
  let rest = start;
  for (let d = rank - 1; d >= 0; d--) {
    k[d] = rest % c.shape[d]!;
    rest = Math.floor(rest / c.shape[d]!);
  }
  let src = c.elementOffset;
  for (let d = 0; d < rank; d++) src += k[d]! * c.stride[d]!;
  let lo = src, hi = src;
  const last = rank - 1, innerStride = c.stride[last] ?? 0, innerSize = c.shape[last] ?? 1;
  for (let i = 0; i < count; i++) {
    index[i] = src;
    if (src < lo) lo = src;
    if (src > hi) hi = src;
    if (rank === 0) break;
    // Odometer step: the last dim first, carrying into earlier ones.
    if (++k[last]! < innerSize) {
      src += innerStride;
      continue;
    }
    k[last] = 0;
    src -= (innerSize - 1) * innerStride;
    for (let d = last - 1; d >= 0; d--) {
      if (++k[d]! < c.shape[d]!) {
        src += c.stride[d]!;
        break;
      }
      k[d] = 0;
      src -= (c.shape[d]! - 1) * c.stride[d]!;
    }
  }
  return [lo, hi];
}

interface Files {
  job: StridedJob;
  src: number;
  dst: number;
  /** The output block (or tile) and the storage window, allocated once. */
  out: Uint8Array;
  window: Uint8Array;
}

function checkCancel(job: StridedJob): void {
  if (Atomics.load(job.cancel, 0) !== 0) throw new MergeError("ABORTED", "the merge was cancelled");
}

function pastStorage(f: Files, c: StridedCopy): never {
  throw new MergeError("INVALID_OFFSET", `${f.job.source.path}: tensor "${c.name}" reads past its storage`, { path: f.job.source.path, tensor: c.name });
}

/** Output blocks in row-major order, each filled from the storage windows it touches. */
function copyByBlocks(f: Files, c: StridedCopy): void {
  const { job, src, dst, out, window } = f;
  const n = c.shape.reduce((p, d) => p * d, 1);
  const es = c.elementSize;
  const blockElems = job.blockBytes / es, windowElems = job.windowBytes / es;
  const index = new Float64Array(Math.min(blockElems, n));
  const copy = copierFor(es, out, window);
  let loadedStart = 0, loadedEnd = 0; // storage elements held by `window`
  for (let start = 0; start < n; start += blockElems) {
    checkCancel(job);
    const count = Math.min(blockElems, n - start);
    const [lo, hi] = storageIndices(c, start, count, index);
    if (hi >= c.storageElements) pastStorage(f, c);
    // Each window starts at the lowest index not yet copied (windows holding none are never
    // read) and is kept for the next block when it covers that block's span too, so a
    // storage that fits in one window is read once.
    for (let w = lo; w <= hi;) {
      if (w < loadedStart || Math.min(hi + 1, w + windowElems) > loadedEnd) {
        loadedStart = w;
        loadedEnd = Math.min(c.storageElements, w + windowElems);
        readFully(src, job.source.path, window, (loadedEnd - loadedStart) * es, c.storageOffset + loadedStart * es, c.name);
      }
      const end = loadedEnd;
      let next = Infinity;
      for (let i = 0; i < count; i++) {
        const s = index[i]!;
        if (s >= w && s < end) copy(i, s - loadedStart);
        else if (s >= end && s < next) next = s;
      }
      w = next;
    }
    writeFully(dst, job.side, out, 0, count * es, c.sideOffset + start * es);
  }
}

/**
 * For a view whose last dim is not its most compact one (a transpose, a channels-last permute):
 * the other dim with the smallest stride, to tile along with the last; undefined otherwise.
 */
function tileDim(c: StridedCopy): number | undefined {
  const last = c.shape.length - 1;
  let p: number | undefined;
  for (let d = 0; d < last; d++) if (c.shape[d]! > 1 && (p === undefined || c.stride[d]! < c.stride[p]!)) p = d;
  return p !== undefined && c.stride[p]! < c.stride[last]! ? p : undefined;
}

/**
 * Tiles of (dim p × last dim), other dims fixed: each tile reads one short run of the storage
 * per last-dim index and writes one contiguous run of the output per p index. Row-major blocks
 * of a large transpose would each touch the whole storage; a tile touches only its own elements.
 */
function copyByTiles(f: Files, c: StridedCopy, p: number): void {
  const { job, src, dst, out, window } = f;
  const es = c.elementSize, last = c.shape.length - 1;
  const blockElems = job.blockBytes / es, windowElems = job.windowBytes / es;
  const [SP, SL, TP, TL] = [c.shape[p]!, c.shape[last]!, c.stride[p]!, c.stride[last]!];
  const outStride = c.shape.map((_, d) => c.shape.slice(d + 1).reduce((x, y) => x * y, 1));
  const tl = Math.min(SL, Math.max(1, Math.floor(Math.sqrt(blockElems))));
  // tp·tl fits the block; a run of tp elements (stride TP) fits the window.
  const tp = Math.max(1, Math.min(SP, Math.floor(blockElems / tl), TP > 0 ? Math.floor((windowElems - 1) / TP) + 1 : SP));
  const copy = copierFor(es, out, window);
  const outer = c.shape.map((_, d) => d).filter((d) => d !== p && d !== last);
  const k = outer.map(() => 0);
  for (;;) {
    let srcBase = c.elementOffset, dstBase = 0;
    outer.forEach((d, i) => { srcBase += k[i]! * c.stride[d]!; dstBase += k[i]! * outStride[d]!; });
    for (let p0 = 0; p0 < SP; p0 += tp) {
      const np = Math.min(tp, SP - p0);
      for (let l0 = 0; l0 < SL; l0 += tl) {
        checkCancel(job);
        const nl = Math.min(tl, SL - l0);
        for (let j = 0; j < nl; j++) {
          const run = srcBase + p0 * TP + (l0 + j) * TL, span = (np - 1) * TP + 1;
          if (run + span > c.storageElements) pastStorage(f, c);
          readFully(src, job.source.path, window, span * es, c.storageOffset + run * es, c.name);
          for (let i = 0; i < np; i++) copy(i * nl + j, i * TP);
        }
        for (let i = 0; i < np; i++) writeFully(dst, job.side, out, i * nl * es, nl * es, c.sideOffset + (dstBase + (p0 + i) * outStride[p]! + l0) * es);
      }
    }
    // Next outer index (row-major odometer); done after the last.
    let d = outer.length - 1;
    for (; d >= 0; d--) {
      if (++k[d]! < c.shape[outer[d]!]!) break;
      k[d] = 0;
    }
    if (d < 0) return;
  }
}

function run(job: StridedJob): void {
  const src = (() => {
    try {
      return openSync(job.source.path, "r");
    } catch (e) {
      throw fsError(e, job.source.path, "opening");
    }
  })();
  let dst: number | undefined;
  try {
    if (fstatSync(src).size !== job.source.size) {
      throw new MergeError("FILE_TRUNCATED", `${job.source.path}: its size changed since it was opened (${job.source.size} → ${fstatSync(src).size} bytes)`, { path: job.source.path });
    }
    try {
      dst = openSync(job.side, "wx");
    } catch (e) {
      throw fsError(e, job.side, "creating");
    }
    const files: Files = { job, src, dst, out: new Uint8Array(job.blockBytes), window: new Uint8Array(job.windowBytes) };
    for (const c of job.copies) {
      // A storage that fits in one window is read once by blocks; a larger one is tiled when its layout allows.
      const p = c.storageElements * c.elementSize > job.windowBytes ? tileDim(c) : undefined;
      if (p === undefined) copyByBlocks(files, c);
      else copyByTiles(files, c, p);
    }
    if (fstatSync(dst).size !== job.sideSize) throw new MergeError("INTERNAL", `${job.side}: wrote ${fstatSync(dst).size} bytes, expected ${job.sideSize}`);
  } finally {
    closeSync(src);
    if (dst !== undefined) closeSync(dst);
  }
}

try {
  run(workerData as StridedJob);
  parentPort!.postMessage({ ok: true });
} catch (e) {
  const err = e instanceof MergeError ? e : new MergeError("INTERNAL", `copying non-contiguous tensors: ${(e as Error).message}`);
  parentPort!.postMessage({ ok: false, error: { code: err.code, message: err.message, path: err.path, tensor: err.tensor } });
}
