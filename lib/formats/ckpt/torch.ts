/**
 * The allowlist: the few globals a PyTorch state dict pickle needs, each implemented as a pure
 * TypeScript function that describes a tensor (storage key, offset, shape, strides) instead of
 * building one. Modelled on torch's own `_weights_only_unpickler` and on the restricted
 * unpickler of the classic web UI (modules/safe.py), which is what real checkpoints are known
 * to pass.
 *
 * A few globals that real Stable Diffusion checkpoints carry outside the state dict (numpy
 * scalars for `global_step`, PyTorch Lightning's ModelCheckpoint callback state, `_codecs.encode`
 * for bytes) are accepted as *opaque records*: nothing about them is looked up or run, and they
 * are only ever reported as ignored top-level entries.
 */
import type { Dtype } from "../../dtypes";
import { MergeError } from "../../errors";
import { PyDict, PyExternal, PyGlobal, PySet, PyTuple, pyTypeName, type GlobalImpl, type PyValue, type UnpickleHooks } from "./pickle";

/** torch storage class names → our dtype (null: a torch dtype we do not support). */
export const STORAGE_DTYPES: Readonly<Record<string, Dtype | null>> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
  Float8_e5m2Storage: "F8_E5M2",
  Float8_e4m3fnStorage: "F8_E4M3",
  UInt16Storage: "U16",
  UInt32Storage: "U32",
  UInt64Storage: "U64",
  ComplexFloatStorage: null,
  ComplexDoubleStorage: null,
  ComplexHalfStorage: null,
  QInt8Storage: null,
  QUInt8Storage: null,
  QInt32Storage: null,
  QUInt4x2Storage: null,
  QUInt2x4Storage: null,
};

/** Element sizes of the storage types we cannot read (legacy files still need them to skip their bytes). */
export const UNSUPPORTED_STORAGE_SIZE: Readonly<Record<string, number>> = {
  ComplexFloatStorage: 8, ComplexDoubleStorage: 16, ComplexHalfStorage: 4, QInt8Storage: 1, QUInt8Storage: 1,
  QInt32Storage: 4, QUInt4x2Storage: 1, QUInt2x4Storage: 1,
};

/** Our dtype → the storage class torch.save names for it (the writer's table). */
export const DTYPE_STORAGE: Readonly<Record<Dtype, string>> = {
  F32: "FloatStorage", F16: "HalfStorage", BF16: "BFloat16Storage", F64: "DoubleStorage",
  I64: "LongStorage", I32: "IntStorage", I16: "ShortStorage", I8: "CharStorage", U8: "ByteStorage",
  BOOL: "BoolStorage", F8_E5M2: "Float8_e5m2Storage", F8_E4M3: "Float8_e4m3fnStorage",
  U16: "UInt16Storage", U32: "UInt32Storage", U64: "UInt64Storage",
};

/** A storage as a persistent id names it: the bytes live elsewhere (a zip record, or after the pickles in legacy files). */
export class StorageRef extends PyExternal {
  readonly pyType = "torch storage";
  constructor(
    readonly storageType: string,
    readonly dtype: Dtype | null,
    readonly key: string,
    readonly location: string,
    /** Element count. */
    readonly numel: number,
  ) {
    super();
  }
}

/** A tensor view of a storage, as `_rebuild_tensor_v2` would have built it. */
export class TensorRef extends PyExternal {
  readonly pyType = "torch tensor";
  constructor(
    readonly storage: StorageRef,
    readonly storageOffset: PyValue,
    readonly shape: PyValue,
    readonly stride: PyValue,
  ) {
    super();
  }
}

class StorageClass implements GlobalImpl {
  readonly isClass = true;
  constructor(readonly name: string) {}
  call(_args: PyValue[], where: () => string): PyValue {
    throw new MergeError("PICKLE_INVALID", `${where()}: a storage class may only appear in a persistent id, not be called`);
  }
}

function fn(impl: (args: PyValue[], where: () => string) => PyValue, isClass = false): GlobalImpl {
  return { isClass, call: impl };
}

function invalid(where: () => string, message: string): never {
  throw new MergeError("PICKLE_INVALID", `${where()}: ${message}`);
}

function expectArgs(args: PyValue[], counts: number[], name: string, where: () => string): void {
  if (!counts.includes(args.length)) invalid(where, `${name} called with ${args.length} arguments`);
}

function rebuildTensor(args: PyValue[], name: string, where: () => string): TensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) return invalid(where, `${name}: first argument is a ${pyTypeName(storage)}, not a storage`);
  return new TensorRef(storage, offset ?? null, size ?? null, stride ?? null);
}

const asTensor = (v: PyValue | undefined, name: string, where: () => string): TensorRef =>
  v instanceof TensorRef ? v : invalid(where, `${name}: expected a tensor, got ${pyTypeName(v)}`);

/** Opaque classes: instances are recorded, never interpreted. */
const opaque = (): GlobalImpl => ({ isClass: true, opaque: true, call: () => null });

function makeGlobals(): Map<string, GlobalImpl> {
  const g = new Map<string, GlobalImpl>();
  const orderedDict: GlobalImpl = fn((args, where) => {
    const d = new PyDict(true);
    if (args.length === 0) return d;
    // OrderedDict(iterable of pairs), as some writers pickle it.
    const items = args[0];
    if (args.length !== 1 || !(Array.isArray(items) || items instanceof PyTuple)) invalid(where, "OrderedDict called with unexpected arguments");
    for (const pair of Array.isArray(items) ? items : (items as PyTuple).items) {
      const kv = pair instanceof PyTuple ? pair.items : Array.isArray(pair) ? pair : null;
      if (!kv || kv.length !== 2) invalid(where, "OrderedDict item is not a pair");
      d.set(kv![0]!, kv![1]!, where);
    }
    return d;
  }, true);
  g.set("collections.OrderedDict", orderedDict);
  g.set("torch._utils._rebuild_tensor", fn((args, where) => {
    expectArgs(args, [4], "_rebuild_tensor", where);
    return rebuildTensor(args, "_rebuild_tensor", where);
  }));
  g.set("torch._utils._rebuild_tensor_v2", fn((args, where) => {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    expectArgs(args, [6, 7], "_rebuild_tensor_v2", where);
    return rebuildTensor(args, "_rebuild_tensor_v2", where);
  }));
  g.set("torch._utils._rebuild_parameter", fn((args, where) => {
    expectArgs(args, [3], "_rebuild_parameter", where);
    return asTensor(args[0], "_rebuild_parameter", where);
  }));
  g.set("torch._utils._rebuild_parameter_with_state", fn((args, where) => {
    expectArgs(args, [4], "_rebuild_parameter_with_state", where);
    return asTensor(args[0], "_rebuild_parameter_with_state", where);
  }));
  const tensorClass = fn((args, where) => asTensor(args[0], "Parameter", where), true);
  g.set("torch.nn.parameter.Parameter", tensorClass);
  g.set("torch.Tensor", fn((_a, where) => invalid(where, "torch.Tensor may not be instantiated"), true));
  // torch >= 1.12 pickles tensors that carry Python attributes as
  // _rebuild_from_type_v2(func, type, args, state): apply the (allowed) rebuild function only.
  g.set("torch._tensor._rebuild_from_type_v2", fn((args, where) => {
    expectArgs(args, [4], "_rebuild_from_type_v2", where);
    const [func, type, inner] = args;
    if (!(func instanceof PyGlobal) || func.impl.isClass) invalid(where, "_rebuild_from_type_v2: first argument is not an allowed rebuild function");
    if (!(type instanceof PyGlobal) || (type.qualifiedName !== "torch.Tensor" && type.qualifiedName !== "torch.nn.parameter.Parameter")) {
      invalid(where, `_rebuild_from_type_v2: tensor subclass ${pyTypeName(type)} is not supported`);
    }
    if (!(inner instanceof PyTuple)) return invalid(where, "_rebuild_from_type_v2: arguments are not a tuple");
    return asTensor((func as PyGlobal).impl.call(inner.items, where), "_rebuild_from_type_v2", where);
  }));
  g.set("torch.Size", fn((args, where) => {
    const dims = args[0];
    if (args.length !== 1 || !(dims instanceof PyTuple || Array.isArray(dims))) invalid(where, "torch.Size called with unexpected arguments");
    return new PyTuple(dims instanceof PyTuple ? dims.items : (dims as PyValue[]));
  }, true));
  for (const name of Object.keys(STORAGE_DTYPES)) {
    g.set(`torch.${name}`, new StorageClass(name));
    g.set(`torch.cuda.${name}`, new StorageClass(name)); // legacy files saved from the GPU
  }
  // Inert globals seen outside the state dict of real checkpoints.
  for (const name of ["numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray", "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]) {
    g.set(name, opaque());
  }
  g.set("_codecs.encode", fn((args, where) => {
    // Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1").
    const [text, encoding] = args;
    if (typeof text !== "string" || (encoding !== undefined && typeof encoding !== "string")) invalid(where, "_codecs.encode called with unexpected arguments");
    const enc = String(encoding ?? "utf-8").toLowerCase().replace(/[-_]/g, "");
    if (enc === "latin1" || enc === "iso88591") return Uint8Array.from(text as string, (c) => c.charCodeAt(0) & 0xff);
    if (enc === "utf8") return new TextEncoder().encode(text as string);
    return invalid(where, `_codecs.encode with encoding ${JSON.stringify(encoding)}`);
  }));
  for (const name of ["builtins.set", "__builtin__.set"]) {
    g.set(name, fn((args) => {
      const s = new PySet(false);
      const items = args[0];
      if (Array.isArray(items)) s.items.push(...items);
      else if (items instanceof PyTuple) s.items.push(...items.items);
      return s;
    }, true));
  }
  return g;
}

let globals: Map<string, GlobalImpl> | undefined;

/** The allowlisted global for `module.name`, if any. */
export function findTorchGlobal(module: string, name: string): GlobalImpl | undefined {
  globals ??= makeGlobals();
  return globals.get(`${module}.${name}`);
}

const asString = (v: PyValue | undefined): string | undefined =>
  typeof v === "string" ? v : v instanceof Uint8Array ? new TextDecoder("latin1").decode(v) : undefined;

/**
 * Persistent-id resolution for torch's two layouts:
 * zip: ('storage', storage_type, key, location, numel);
 * legacy: ('storage', storage_type, root_key, location, numel, view_metadata).
 * The same key must always name the same storage.
 */
export function torchHooks(legacy: boolean): UnpickleHooks & { storages: Map<string, StorageRef> } {
  const storages = new Map<string, StorageRef>();
  return {
    storages,
    findGlobal: findTorchGlobal,
    persistentLoad(pid, where) {
      if (!(pid instanceof PyTuple)) return invalid(where, `persistent id is a ${pyTypeName(pid)}, not a storage tuple`);
      const items = pid.items;
      if (asString(items[0]) !== "storage") return invalid(where, `persistent id of kind ${JSON.stringify(asString(items[0]) ?? pyTypeName(items[0]))}; only storages are allowed`);
      if (items.length !== (legacy ? 6 : 5)) return invalid(where, `storage persistent id has ${items.length} fields, expected ${legacy ? 6 : 5}`);
      const [, type, keyValue, locationValue, numel, view] = items;
      if (!(type instanceof PyGlobal) || !(type.impl instanceof StorageClass)) return invalid(where, `storage type is a ${pyTypeName(type)}, not a torch storage class`);
      const key = asString(keyValue);
      if (key === undefined) return invalid(where, "storage key is not a string");
      const location = asString(locationValue) ?? "?";
      if (typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) {
        throw new MergeError("SIZE_MISMATCH", `${where()}: storage "${key}" declares ${String(numel)} elements`);
      }
      if (legacy && view !== null) {
        throw new MergeError("CKPT_UNSUPPORTED", `${where()}: storage views (a pre-1.0 torch feature) are not supported`);
      }
      const name = type.impl.name;
      const existing = storages.get(key);
      if (existing) {
        if (existing.storageType !== name || existing.numel !== numel) invalid(where, `storage "${key}" is described twice, differently`);
        return existing;
      }
      const ref = new StorageRef(name, STORAGE_DTYPES[name] ?? null, key, location, numel);
      storages.set(key, ref);
      return ref;
    },
  };
}
