/**
 * From the unpickled object to the tensor table: find the state dict (top level or under
 * "state_dict"), and turn each tensor description into the file range of its bytes.
 *
 * A tensor is a view (offset, shape, strides) of a storage. A contiguous row-major view is a
 * file range the engines read in place; several tensors may share one storage (their ranges then
 * overlap, which readers allow). Any other view (a transpose, a slice with a step, a permute, an
 * expand) is described by its strides (`TensorInfo.strided`) and materialised contiguously
 * before a merge (strided.ts).
 */
import { DTYPE_SIZE } from "../../dtypes";
import { MergeError } from "../../errors";
import type { TensorInfo } from "../../model";
import { PyDict, PyTuple, pyTypeName, type PyValue } from "./pickle";
import { StorageRef, TensorRef } from "./torch";

/** Where a storage's bytes are in the file. */
export interface StorageLocation {
  /** Absolute offset of element 0. */
  offset: number;
  /** Bytes available there. */
  byteLength: number;
}

export interface StateDict {
  tensors: TensorInfo[];
  metadata: Record<string, string>;
  notes: string[];
}

/** Top-level key under which tensormerge stores string metadata (the recipe) in the .ckpt files it writes. */
export const CKPT_METADATA_KEY = "__metadata__";

const MAX_LISTED = 12;

function listNames(names: string[]): string {
  const shown = names.slice(0, MAX_LISTED).map((n) => JSON.stringify(n)).join(", ");
  return names.length > MAX_LISTED ? `${shown} and ${names.length - MAX_LISTED} more` : shown;
}

function intList(v: PyValue): number[] | undefined {
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : undefined;
  if (!items) return undefined;
  const out: number[] = [];
  for (const x of items) {
    if (typeof x !== "number" || !Number.isSafeInteger(x)) return undefined;
    out.push(x);
  }
  return out;
}

/** A dict of str → str as a plain object whose keys are all own properties ("__proto__" too). */
function stringMap(v: PyValue): Record<string, string> | undefined {
  if (!(v instanceof PyDict)) return undefined;
  const pairs: [string, string][] = [];
  for (const [k, x] of v.entries()) {
    if (typeof k !== "string" || typeof x !== "string") return undefined;
    pairs.push([k, x]);
  }
  return Object.fromEntries(pairs);
}

/** Describes one tensor's bytes, or throws a MergeError naming it. */
export function tensorInfo(name: string, t: TensorRef, locate: (storage: StorageRef, tensor: string) => StorageLocation, path: string): TensorInfo {
  const fail = (code: ConstructorParameters<typeof MergeError>[0], message: string): never => {
    throw new MergeError(code, `${path}: tensor "${name}" ${message}`, { path, tensor: name });
  };
  const storage = t.storage;
  const dtype = storage.dtype;
  if (dtype === null) return fail("DTYPE_UNSUPPORTED", `uses torch.${storage.storageType}, a type tensormerge does not support`);
  const shape = intList(t.shape);
  if (!shape || shape.some((d) => d < 0)) return fail("SHAPE_INVALID", `has an invalid size (${pyTypeName(t.shape)})`);
  const stride = intList(t.stride);
  if (!stride || stride.length !== shape.length) return fail("SHAPE_INVALID", `has strides that do not match its ${shape.length} dimensions`);
  const offset = t.storageOffset;
  if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) return fail("INVALID_OFFSET", `has an invalid storage offset (${String(offset)})`);
  const size = DTYPE_SIZE[dtype];
  let numel = 1;
  for (const d of shape) {
    numel *= d;
    if (!Number.isSafeInteger(numel * size)) fail("SIZE_MISMATCH", `size [${shape.join(", ")}] overflows`);
  }
  if (stride.some((x) => x < 0)) fail("SHAPE_INVALID", `has a negative stride [${stride.join(", ")}]`);
  if (numel > 0 && !isContiguous(shape, stride)) {
    // A view torch.load reads (a transpose, a slice, a permute, an expand): described here,
    // materialised contiguously before a merge (strided.ts).
    let last = offset;
    for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * stride[i]!;
    if (!Number.isSafeInteger(last) || last >= storage.numel) {
      fail("INVALID_OFFSET", `(size [${shape.join(", ")}], stride [${stride.join(", ")}], offset ${offset}) reaches element ${last} of storage "${storage.key}", which has ${storage.numel}`);
    }
    const loc = locate(storage, name);
    if (!Number.isSafeInteger(loc.offset + storage.numel * size) || storage.numel * size > loc.byteLength) fail("INVALID_OFFSET", "lies outside its storage's bytes");
    return { name, dtype, shape, offset: loc.offset + offset * size, byteLength: numel * size, strided: { storageOffset: loc.offset, storageElements: storage.numel, elementOffset: offset, stride } };
  }
  if (offset + numel > storage.numel) {
    fail("INVALID_OFFSET", `needs elements [${offset}, ${offset + numel}) of storage "${storage.key}", which has ${storage.numel}`);
  }
  const loc = locate(storage, name);
  const begin = offset * size;
  const byteLength = numel * size;
  if (!Number.isSafeInteger(loc.offset + begin + byteLength) || begin + byteLength > loc.byteLength) {
    fail("INVALID_OFFSET", `lies outside its storage's bytes`);
  }
  return { name, dtype, shape, offset: loc.offset + begin, byteLength };
}

/** Row-major contiguous: each stride is the product of the later sizes (any stride is fine for a size-1 dim). */
function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

/** Picks the state dict out of a checkpoint object and locates every tensor. */
export function extractStateDict(root: PyValue, locate: (storage: StorageRef, tensor: string) => StorageLocation, path: string): StateDict {
  if (!(root instanceof PyDict)) {
    throw new MergeError("CKPT_UNSUPPORTED", `${path}: the checkpoint holds a ${pyTypeName(root)}, not a dict of tensors`, { path });
  }
  const notes: string[] = [];
  let metadata: Record<string, string> = {};
  let sd = root;
  const inner = root.get("state_dict");
  if (inner instanceof PyDict) {
    sd = inner;
    const ignored: string[] = [];
    for (const [k, v] of root.entries()) {
      if (k === "state_dict") continue;
      if (k === CKPT_METADATA_KEY) {
        const m = stringMap(v);
        if (m) {
          metadata = m;
          continue;
        }
      }
      ignored.push(`${typeof k === "string" ? k : String(pyTypeName(k))}`);
    }
    if (ignored.length > 0) notes.push(`ignored top-level entries besides "state_dict": ${listNames(ignored)}`);
  }
  const tensors: TensorInfo[] = [];
  const skipped: string[] = [];
  const byStorage = new Map<string, number>();
  for (const [k, v] of sd.entries()) {
    if (typeof k !== "string" || !(v instanceof TensorRef)) {
      skipped.push(typeof k === "string" ? `${k} (${pyTypeName(v)})` : `<${pyTypeName(k)} key>`);
      continue;
    }
    tensors.push(tensorInfo(k, v, locate, path));
    byStorage.set(v.storage.key, (byStorage.get(v.storage.key) ?? 0) + 1);
  }
  if (skipped.length > 0) notes.push(`ignored non-tensor entries of the state dict: ${listNames(skipped)}`);
  const shared = [...byStorage.values()].filter((n) => n > 1).length;
  if (shared > 0) notes.push(`${shared} storage(s) are shared by several tensors`);
  const strided = tensors.filter((t) => t.strided).length;
  if (strided > 0) notes.push(`${strided} tensor(s) are non-contiguous views (transposed, sliced or expanded); a merge copies them contiguously first`);
  if (tensors.length === 0) {
    throw new MergeError("CKPT_UNSUPPORTED", `${path}: no tensors found (top-level keys: ${listNames([...root.entries()].map(([k]) => String(k)))})`, { path });
  }
  return { tensors, metadata, notes };
}
