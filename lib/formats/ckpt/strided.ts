/**
 * Non-contiguous .ckpt tensors (a weight saved as `t.T`, `t[:, ::2]`, a permuted conv, an
 * expanded stride-0 view): torch.load reads them, so tensormerge must too.
 *
 * Design: before a merge, each such tensor is copied, contiguously, into a temporary *side file*
 * next to the first output, and the job reads it from there like any contiguous tensor; the file
 * is removed when the merge ends. The alternative, a strided read inside both engines, would put
 * a gather into every kernel's input path, twice (C++ and TS), for a case real checkpoints rarely
 * have; the side file keeps the job format and both engines unchanged, so they stay bit-identical
 * by construction. The cost: the strided tensors' bytes are written once more and read back
 * (disk space: their total size, counted by the free-space check), and the copy runs before the
 * first pass without progress events.
 *
 * The copy runs in a worker thread (never on the event loop) with bounded memory: output blocks
 * (or tiles) of BLOCK_BYTES, their storage indices (8 bytes per element) and one window of
 * WINDOW_BYTES of the storage, about 26 MiB at most (strided-worker.ts).
 */
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { DTYPE_SIZE } from "../../dtypes";
import { MergeError, type ErrorCode } from "../../errors";
import { numelOf, type ModelFile, type TensorInfo } from "../../model";

/** Memory of one copy: an output block, its source indices (8 bytes per element) and a storage window. */
export const BLOCK_BYTES = 2 * 1024 * 1024;
export const WINDOW_BYTES = 16 * 1024 * 1024;

/** One tensor to copy, as the worker needs it. */
export interface StridedCopy {
  name: string;
  elementSize: number;
  shape: number[];
  stride: number[];
  elementOffset: number;
  storageOffset: number;
  storageElements: number;
  /** Where its contiguous bytes go in the side file. */
  sideOffset: number;
}

export interface StridedJob {
  source: { path: string; size: number };
  side: string;
  sideSize: number;
  copies: StridedCopy[];
  /** Memory bounds (multiples of 8): BLOCK_BYTES and WINDOW_BYTES unless a test asks for smaller. */
  blockBytes: number;
  windowBytes: number;
  /** [0] = 1 asks the worker to stop (checked between blocks, so its files are closed properly). */
  cancel: Int32Array;
}

interface SideSpec {
  source: ModelFile;
  copies: StridedCopy[];
}

const sides = new WeakMap<ModelFile, ModelFile>();
const specs = new WeakMap<ModelFile, SideSpec>();

/**
 * The side file of a model with non-contiguous tensors, as a model the planner can read from
 * (undefined when every tensor is contiguous). Its path is a placeholder that names no file;
 * `materialiseSideFile` writes the real one and the job reads it under that name.
 */
export function sideModelOf(model: ModelFile): ModelFile | undefined {
  if (sides.has(model)) return sides.get(model);
  const strided = model.tensors.filter((t) => t.strided);
  if (strided.length === 0) return undefined;
  let offset = 0;
  const tensors: TensorInfo[] = [];
  const copies: StridedCopy[] = [];
  for (const t of strided) {
    const v = t.strided!;
    tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, offset, byteLength: t.byteLength });
    copies.push({ name: t.name, elementSize: DTYPE_SIZE[t.dtype], shape: t.shape, stride: v.stride, elementOffset: v.elementOffset, storageOffset: v.storageOffset, storageElements: v.storageElements, sideOffset: offset });
    offset += numelOf(t.shape) * DTYPE_SIZE[t.dtype];
  }
  const side: ModelFile = {
    path: `${model.path}\u0000contiguous copies`,
    format: model.format,
    size: offset,
    tensors,
    byName: new Map(tensors.map((t) => [t.name, t])),
    metadata: {},
    headerLength: 0,
    notes: [`contiguous copies of ${tensors.length} non-contiguous tensors of ${model.path}`],
  };
  sides.set(model, side);
  specs.set(side, { source: model, copies });
  return side;
}

/** A tensor of `model` as the engines read it: from the side file when it is strided. */
export function readableTensor(model: ModelFile, tensor: TensorInfo): { model: ModelFile; tensor: TensorInfo } {
  if (!tensor.strided) return { model, tensor };
  const side = sideModelOf(model)!;
  return { model: side, tensor: side.byName.get(tensor.name)! };
}

/** The model a side file copies from (undefined for a real file). */
export function sideSource(side: ModelFile): ModelFile | undefined {
  return specs.get(side)?.source;
}

/** Writes the side file at `path` (created exclusively), in a worker thread; rejects with ABORTED when `signal` fires. */
export function materialiseSideFile(side: ModelFile, path: string, signal?: AbortSignal, bounds = { blockBytes: BLOCK_BYTES, windowBytes: WINDOW_BYTES }): Promise<void> {
  const spec = specs.get(side);
  if (!spec) return Promise.reject(new MergeError("INTERNAL", `${side.path} is not a side file`));
  if (bounds.blockBytes % 8 || bounds.windowBytes % 8 || bounds.blockBytes <= 0 || bounds.windowBytes <= 0) return Promise.reject(new MergeError("INTERNAL", "side file bounds must be positive multiples of 8 bytes"));
  if (signal?.aborted) return Promise.reject(new MergeError("ABORTED", "the merge was cancelled"));
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const job: StridedJob = { source: { path: spec.source.path, size: spec.source.size }, side: path, sideSize: side.size, copies: spec.copies, ...bounds, cancel };
  return new Promise((resolve, reject) => {
    const worker = new Worker(join(__dirname, "strided-worker.js"), { workerData: job });
    // The worker answers ABORTED within one block (milliseconds), after closing its files.
    const onAbort = () => Atomics.store(cancel, 0, 1);
    signal?.addEventListener("abort", onAbort, { once: true });
    let outcome: MergeError | null | undefined; // null: done; undefined: no answer yet
    worker.once("message", (m: { ok: boolean; error?: { code: ErrorCode; message: string; path?: string; tensor?: string } }) => {
      if (m.ok) outcome = null;
      else {
        const { code, message, ...context } = m.error!;
        outcome = new MergeError(code, message, Object.fromEntries(Object.entries(context).filter(([, v]) => v !== undefined)));
      }
    });
    worker.once("error", (e) => { outcome ??= new MergeError("INTERNAL", `copying the non-contiguous tensors of ${spec.source.path} failed: ${e.message}`, { cause: e }); });
    // Settle only once the thread is gone, so nothing of it outlives the promise.
    worker.once("exit", (code) => {
      signal?.removeEventListener("abort", onAbort);
      if (outcome === null) resolve();
      else reject(outcome ?? new MergeError("INTERNAL", `the worker copying non-contiguous tensors exited with code ${code}`));
    });
  });
}
