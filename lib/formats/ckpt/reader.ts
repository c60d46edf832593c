/**
 * Reads the tensor table of a PyTorch checkpoint without executing any of it and without
 * reading tensor data: the zip format of torch.save (>= 1.6) and the legacy format before it.
 *
 * Zip: `<root>/data.pkl` (the pickle), `<root>/data/<key>` (one stored record per storage),
 * `<root>/byteorder`, `<root>/version`. Each tensor becomes the file range of its bytes inside
 * its storage's record, which the engines then read in place.
 *
 * Legacy: five pickles back to back (magic number, protocol version, system info, the object,
 * the list of storage keys), then each storage as an int64 element count and its raw bytes.
 */
import { DTYPE_SIZE } from "../../dtypes";
import { MergeError } from "../../errors";
import type { ModelFile, TensorInfo } from "../../model";
import { PickleTruncatedError, PyDict, unpickle, type PyValue } from "./pickle";
import { type ByteSource, withFileSource } from "./source";
import { extractStateDict, type StateDict } from "./state-dict";
import { UNSUPPORTED_STORAGE_SIZE, torchHooks, type StorageRef } from "./torch";
import { ZIP_METHOD_STORED, readZipDirectory, readZipEntry, type ZipEntry } from "./zip";

/** Largest pickle accepted (an SD checkpoint's is about 100-300 KB). */
export const MAX_PICKLE_BYTES = 64 * 1024 * 1024;

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

/**
 * Reads a .ckpt / .pt / .pth file's tensor table.
 *
 * @example
 * const model = await readCkptModel("v1-5-pruned-emaonly.ckpt");
 * console.log(model.tensors.length, model.notes);
 */
export async function readCkptModel(path: string, kind: "ckpt" | "pickle" = "ckpt"): Promise<ModelFile> {
  return withFileSource(path, (source) => readCkptSource(source, kind));
}

/** The same, from any byte source (used by the tests and the fuzzer on in-memory files). */
export async function readCkptSource(source: ByteSource, kind: "ckpt" | "pickle" = "ckpt"): Promise<ModelFile> {
  const { sd, headerLength, notes } = kind === "ckpt" ? await readZipCheckpoint(source) : await readLegacyCheckpoint(source);
  return {
    path: source.path,
    format: "ckpt",
    size: source.size,
    tensors: sd.tensors,
    byName: new Map(sd.tensors.map((t: TensorInfo) => [t.name, t])),
    metadata: sd.metadata,
    headerLength,
    notes: [...notes, ...sd.notes],
  };
}

function unsupported(source: ByteSource, message: string): never {
  throw new MergeError("CKPT_UNSUPPORTED", `${source.path}: ${message}`, { path: source.path });
}

/** The archive's root folder: the one holding data.pkl (torch takes the first entry's folder). */
function findRoot(source: ByteSource, entries: ZipEntry[]): string {
  const roots = entries.map((e) => /^([^/]+)\/data\.pkl$/.exec(e.name)?.[1]).filter((r): r is string => r !== undefined);
  if (roots.length === 0) {
    return unsupported(source, entries.some((e) => e.name.endsWith("/constants.pkl"))
      ? "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint"
      : "zip archive without <root>/data.pkl: not a PyTorch checkpoint");
  }
  if (roots.length === 1) return roots[0]!;
  const first = entries[0]!.name.split("/")[0]!;
  if (!roots.includes(first)) unsupported(source, "several data.pkl records and none under the first entry's folder");
  return first;
}

async function readZipCheckpoint(source: ByteSource): Promise<{ sd: StateDict; headerLength: number; notes: string[] }> {
  const dir = await readZipDirectory(source);
  if (dir.entries.length === 0) unsupported(source, "empty zip archive");
  const root = findRoot(source, dir.entries);
  const notes: string[] = [];
  const byteorder = dir.byName.get(`${root}/byteorder`);
  if (byteorder) {
    const text = new TextDecoder("latin1").decode(await readZipEntry(source, byteorder, 16)).trim();
    if (text !== "little") unsupported(source, `tensors are stored ${JSON.stringify(text)}-endian; only little-endian checkpoints are supported`);
  }
  const pkl = dir.byName.get(`${root}/data.pkl`)!;
  const pickle = await readZipEntry(source, pkl, MAX_PICKLE_BYTES);
  const hooks = torchHooks(false);
  const { value } = unpickle(pickle, hooks, { where: `${source.path}: ${pkl.name}`, path: source.path });
  const located = new Map<string, { offset: number; byteLength: number }>();
  const locate = (storage: StorageRef, tensor: string) => {
    const hit = located.get(storage.key);
    if (hit) return hit;
    const ctx = { path: source.path, tensor };
    const entry = dir.byName.get(`${root}/data/${storage.key}`);
    if (!entry) throw new MergeError("ZIP_INVALID", `${source.path}: tensor "${tensor}" uses storage "${storage.key}" but the archive has no ${root}/data/${storage.key}`, ctx);
    if (entry.method !== ZIP_METHOD_STORED) {
      throw new MergeError("CKPT_UNSUPPORTED", `${source.path}: tensor "${tensor}" is in a compressed zip record (${entry.name}); tensormerge reads tensors in place and needs stored records, as torch.save writes them`, ctx);
    }
    const bytes = storage.numel * DTYPE_SIZE[storage.dtype!];
    if (entry.uncompressedSize !== bytes) {
      throw new MergeError("SIZE_MISMATCH", `${source.path}: storage "${storage.key}" of tensor "${tensor}" declares ${storage.numel} ${storage.storageType} elements (${bytes} bytes) but its record has ${entry.uncompressedSize} bytes`, ctx);
    }
    const loc = { offset: entry.dataOffset, byteLength: bytes };
    located.set(storage.key, loc);
    return loc;
  };
  const sd = extractStateDict(value, locate, source.path);
  return { sd, headerLength: pickle.length, notes };
}

async function readLegacyCheckpoint(source: ByteSource): Promise<{ sd: StateDict; headerLength: number; notes: string[] }> {
  // The pickles come first and their total length is unknown: parse a prefix, growing it
  // while the parse runs out of bytes.
  let chunk = Math.min(source.size, 1024 * 1024);
  for (;;) {
    const head = await source.read(0, chunk);
    try {
      return await parseLegacy(source, head);
    } catch (e) {
      if (!(e instanceof PickleTruncatedError) || chunk >= source.size) throw e;
      if (chunk >= MAX_PICKLE_BYTES) unsupported(source, `legacy checkpoint pickles exceed ${MAX_PICKLE_BYTES} bytes`);
      chunk = Math.min(source.size, chunk * 4, MAX_PICKLE_BYTES);
    }
  }
}

async function parseLegacy(source: ByteSource, head: Uint8Array): Promise<{ sd: StateDict; headerLength: number; notes: string[] }> {
  const where = `${source.path} (legacy torch.save format)`;
  const plain = { findGlobal: () => undefined };
  const opts = (start: number) => ({ where, path: source.path, start });
  const magic = unpickle(head, plain, opts(0));
  if (magic.value !== LEGACY_MAGIC && magic.value !== Number(LEGACY_MAGIC)) {
    unsupported(source, "a bare pickle, not a torch.save checkpoint (no torch magic number)");
  }
  const protocol = unpickle(head, plain, opts(magic.end));
  if (protocol.value !== LEGACY_PROTOCOL) unsupported(source, `legacy torch.save protocol ${String(protocol.value)} (expected ${LEGACY_PROTOCOL})`);
  const sysInfo = unpickle(head, plain, opts(protocol.end));
  if (sysInfo.value instanceof PyDict && sysInfo.value.get("little_endian") === false) unsupported(source, "tensors are stored big-endian; only little-endian checkpoints are supported");
  const hooks = torchHooks(true);
  const main = unpickle(head, hooks, opts(sysInfo.end));
  const keysPickle = unpickle(head, plain, opts(main.end));
  const keys: PyValue = keysPickle.value;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string")) unsupported(source, "legacy storage key list is not a list of strings");
  const located = new Map<string, { offset: number; byteLength: number }>();
  let cursor = keysPickle.end;
  for (const key of keys as string[]) {
    const storage = hooks.storages.get(key);
    if (!storage) throw new MergeError("PICKLE_INVALID", `${where}: storage "${key}" is listed but never used`, { path: source.path });
    if (located.has(key)) throw new MergeError("PICKLE_INVALID", `${where}: storage "${key}" is listed twice`, { path: source.path });
    if (cursor + 8 > source.size) throw new MergeError("INVALID_OFFSET", `${where}: storage "${key}" starts at byte ${cursor} with an 8-byte element count, but the file has ${source.size} bytes`, { path: source.path });
    const countBytes = await source.read(cursor, 8);
    const count = new DataView(countBytes.buffer, countBytes.byteOffset, 8).getBigInt64(0, true);
    if (count !== BigInt(storage.numel)) throw new MergeError("SIZE_MISMATCH", `${where}: storage "${key}" has ${count} elements on disk but the pickle says ${storage.numel}`, { path: source.path });
    const elementSize = storage.dtype ? DTYPE_SIZE[storage.dtype] : UNSUPPORTED_STORAGE_SIZE[storage.storageType] ?? 1;
    const bytes = storage.numel * elementSize;
    if (!Number.isSafeInteger(cursor + 8 + bytes) || cursor + 8 + bytes > source.size) {
      throw new MergeError("FILE_TRUNCATED", `${where}: storage "${key}" needs bytes ${cursor + 8} to ${cursor + 8 + bytes}, but the file has ${source.size} (truncated?)`, { path: source.path });
    }
    located.set(key, { offset: cursor + 8, byteLength: bytes });
    cursor += 8 + bytes;
  }
  const notes = ["legacy (pre-1.6) torch.save format"];
  if (cursor < source.size) notes.push(`${source.size - cursor} bytes after the last storage were ignored`);
  const locate = (storage: StorageRef, tensor: string) => {
    const loc = located.get(storage.key);
    if (!loc) throw new MergeError("PICKLE_INVALID", `${where}: tensor "${tensor}" uses storage "${storage.key}", which is not in the storage list`, { path: source.path, tensor });
    return loc;
  };
  return { sd: extractStateDict(main.value, locate, source.path), headerLength: keysPickle.end, notes };
}
