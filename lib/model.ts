import type { Dtype } from "./dtypes";
import type { InputStamp } from "./engine/input-stamps";
import type { Fp8Scale } from "./scaled-fp8";

/** Where one tensor's bytes sit in its file: contiguous, little-endian, row-major (see `strided`). */
export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Absolute byte offset of the first element in the file. */
  offset: number;
  /** Byte length (= numel × dtype size). */
  byteLength: number;
  /**
   * Set for a .ckpt tensor stored as a non-contiguous view of its storage: its elements are not
   * the range [offset, offset + byteLength), and the engines read it from a contiguous copy
   * (lib/formats/ckpt/strided.ts) instead.
   */
  strided?: StridedView;
}

/** Element i (row-major multi-index k) of a strided tensor is storage element `elementOffset + Σ k[d]·stride[d]`. */
export interface StridedView {
  /** Absolute byte offset of the storage's element 0 in the file. */
  storageOffset: number;
  /** Elements in the storage. */
  storageElements: number;
  elementOffset: number;
  stride: number[];
}

export type ModelFormat = "safetensors" | "ckpt";

/**
 * A model file opened for reading: its tensor table and metadata, no tensor data.
 * Both formats produce this; the engines only ever need `path`, `size` and the table, because
 * tensor data is read in place (memory-mapped by the native engine, read in chunks by the TS one).
 */
export interface ModelFile {
  path: string;
  format: ModelFormat;
  /** File size in bytes when it was opened; engines re-check it. */
  size: number;
  /** Tensors in file order (data offset order for safetensors, key order as stored for ckpt). */
  tensors: TensorInfo[];
  /** Lookup by name. */
  byName: Map<string, TensorInfo>;
  /** safetensors `__metadata__` (empty for ckpt). */
  metadata: Record<string, string>;
  /** Byte length of the header (safetensors: 8 + JSON length). */
  headerLength: number;
  /** Notes about what was ignored while reading (for example ckpt top-level entries). */
  notes: string[];
  /** 2022-era SD 1.x keys given their modern names when the file was opened (lib/keys.ts). */
  renamedKeys?: number;
  /** Size, mtime and identity just before the header was read: a change after it fails the merge (INPUT_CHANGED). */
  stamp?: InputStamp;
  /** Scaled fp8 weights (by weight name): their per-tensor scales, read by lib/scaled-fp8.ts. */
  fp8Scales?: ReadonlyMap<string, Fp8Scale>;
  /**
   * A logical model whose tensors live in other files (a sharded Hugging Face folder, the layers
   * of a passthrough merge, lib/hf): `path` names the whole, each tensor's `offset` is in the
   * file `fileOf` gives for its name, and `files` are what the engines open (job inputs).
   */
  parts?: ModelParts;
}

export interface ModelParts {
  files: ModelFile[];
  fileOf: Map<string, ModelFile>;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeToString(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
