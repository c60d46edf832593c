/**
 * safetensors, to the published spec: an 8-byte little-endian header length N, N bytes of
 * UTF-8 JSON `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": {str: str} }`,
 * then the tensor data, whose offsets are relative to the end of the header.
 *
 * The header is untrusted: checks follow safetensors' own `read_metadata` / `Metadata::validate`
 * (length cap, UTF-8, JSON shape, known dtypes, safe integer arithmetic, offsets contiguous from 0,
 * data ending exactly at the end of the file). The native engine re-checks every range again.
 */
import { open } from "node:fs/promises";
import { DTYPE_SIZE, isDtype, type Dtype } from "../dtypes";
import { MergeError, fsError } from "../errors";
import type { ModelFile, TensorInfo } from "../model";

/** Same cap as the reference implementation (100 MB). */
export const MAX_HEADER_LENGTH = 100_000_000;
export const METADATA_KEY = "__metadata__";

export interface ParsedHeader {
  tensors: TensorInfo[];
  metadata: Record<string, string>;
  headerLength: number;
}

/**
 * Keys of the top-level JSON object of `text`, which must be valid JSON (JSON.parse accepted it),
 * as [start, end) ranges of their quoted source text. One linear pass, no recursion: JSON.parse
 * keeps only the last of two equal keys, so duplicates can only be found in the text itself.
 */
function topLevelKeyRanges(text: string): [number, number][] {
  const keys: [number, number][] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
      if (depth === 1 && expectKey) {
        keys.push([start, i + 1]);
        expectKey = false;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      expectKey = depth === 1;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/** The first top-level key that appears twice in `text` (decoded), if any. */
function duplicateTopLevelKey(text: string, distinctKeys: number): string | undefined {
  const ranges = topLevelKeyRanges(text);
  if (ranges.length === distinctKeys) return undefined;
  const seen = new Set<string>();
  for (const [start, end] of ranges) {
    const key = JSON.parse(text.slice(start, end)) as string; // decodes escapes: "\u0061" is "a"
    if (seen.has(key)) return key;
    seen.add(key);
  }
  return undefined;
}

/**
 * Validates a safetensors header given its JSON bytes and the file size.
 * `headerLength` is the byte length of the JSON (N).
 *
 * Names are data: a tensor or metadata key called `__proto__` or `constructor` is kept like any
 * other (the JSON is read into own properties and Maps, never assigned into a plain object).
 */
export function parseSafetensorsHeader(json: Uint8Array, fileSize: number, path: string): ParsedHeader {
  const fail = (code: ConstructorParameters<typeof MergeError>[0], message: string, tensor?: string): never => {
    throw new MergeError(code, `${path}: ${message}`, tensor === undefined ? { path } : { path, tensor });
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    return fail("HEADER_NOT_UTF8", "safetensors header is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    return fail("HEADER_NOT_JSON", `safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    return fail("HEADER_INVALID", "safetensors header must be a JSON object");
  }
  // JSON.parse defines every key as an own property (`__proto__` included): read them as entries.
  const entries = Object.entries(parsed as Record<string, unknown>);
  const duplicate = duplicateTopLevelKey(text, entries.length);
  if (duplicate === METADATA_KEY) fail("HEADER_INVALID", `${METADATA_KEY} appears twice in the header`);
  if (duplicate !== undefined) fail("DUPLICATE_TENSOR", `tensor "${duplicate}" appears twice in the header`, duplicate);
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const dataStart = 8 + json.length;
  for (const [name, raw] of entries) {
    if (name === METADATA_KEY) {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) fail("METADATA_INVALID", "__metadata__ must be an object of strings");
      const pairs = Object.entries(raw as Record<string, unknown>);
      for (const [k, v] of pairs) if (typeof v !== "string") fail("METADATA_INVALID", `__metadata__ value for "${k}" is not a string`);
      metadata = Object.fromEntries(pairs) as Record<string, string>; // own properties, even "__proto__"
      continue;
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) fail("HEADER_INVALID", `entry "${name}" is not an object`, name);
    const entry = raw as Record<string, unknown>;
    const own = (key: string): unknown => (Object.hasOwn(entry, key) ? entry[key] : undefined);
    const dtype = own("dtype");
    if (!isDtype(dtype)) fail("DTYPE_UNSUPPORTED", `tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`, name);
    const shape = own("shape");
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail("SHAPE_INVALID", `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`, name);
    }
    const offsets = own("data_offsets");
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail("INVALID_OFFSET", `tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`, name);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail("INVALID_OFFSET", `tensor "${name}" ends before it begins (${begin} > ${end})`, name);
    // Checked multiplication: stop as soon as the byte size leaves the safe-integer range.
    let bytes = DTYPE_SIZE[dtype as Dtype];
    for (const d of shape as number[]) {
      bytes *= d;
      if (!Number.isSafeInteger(bytes)) fail("SIZE_OVERFLOW", `tensor "${name}" shape ${JSON.stringify(shape)} overflows: more than 2^53 bytes`, name);
    }
    if (end - begin !== bytes) {
      fail("SIZE_MISMATCH", `tensor "${name}" has ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${bytes}`, name);
    }
    tensors.push({ name, dtype: dtype as Dtype, shape: shape as number[], offset: dataStart + begin, byteLength: bytes });
  }
  // Sort by offset: writers may list keys in any order; data must still tile [0, end) exactly.
  tensors.sort((x, y) => x.offset - y.offset || x.byteLength - y.byteLength);
  let expected = dataStart;
  for (const t of tensors) {
    if (t.offset !== expected) {
      fail("INVALID_OFFSET", `tensor "${t.name}" starts at data offset ${t.offset - dataStart}, expected ${expected - dataStart} (tensors must be contiguous from 0)`, t.name);
    }
    expected += t.byteLength;
  }
  if (expected > fileSize) fail("FILE_TRUNCATED", `tensor data ends at byte ${expected} but the file has ${fileSize} bytes (truncated: an interrupted download or copy?)`);
  if (expected < fileSize) fail("TRAILING_BYTES", `${fileSize - expected} bytes after the last tensor (tensor data ends at byte ${expected}, the file has ${fileSize} bytes)`);
  return { tensors, metadata, headerLength: dataStart };
}

/** Reads and validates the header of a safetensors file. No tensor data is read. */
export async function readSafetensors(path: string): Promise<ModelFile> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(e, path, "opening");
  }
  try {
    const size = (await handle.stat()).size;
    if (size < 8) throw new MergeError("FILE_TOO_SMALL", `${path}: ${size} bytes is too small for a safetensors file`, { path });
    const lenBuf = Buffer.alloc(8);
    await handle.read(lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_LENGTH)) {
      throw new MergeError("HEADER_TOO_LARGE", `${path}: header length ${n} exceeds the ${MAX_HEADER_LENGTH}-byte limit`, { path });
    }
    const headerLen = Number(n);
    if (8 + headerLen > size) {
      throw new MergeError("FILE_TOO_SMALL", `${path}: the header length says ${headerLen} bytes of JSON, so the file needs at least ${8 + headerLen} bytes (8 + ${headerLen}), but it has ${size}`, { path });
    }
    const json = Buffer.alloc(headerLen);
    const { bytesRead } = await handle.read(json, 0, headerLen, 8);
    if (bytesRead !== headerLen) throw new MergeError("FILE_TRUNCATED", `${path}: read ${bytesRead} of the header's ${headerLen} bytes (the file shrank while it was read?)`, { path });
    const parsed = parseSafetensorsHeader(json, size, path);
    return {
      path,
      format: "safetensors",
      size,
      tensors: parsed.tensors,
      byName: new Map(parsed.tensors.map((t) => [t.name, t])),
      metadata: parsed.metadata,
      headerLength: parsed.headerLength,
      notes: [],
    };
  } catch (e) {
    if (e instanceof MergeError) throw e;
    throw fsError(e, path, "reading the header");
  } finally {
    await handle.close();
  }
}

export interface HeaderEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
}

export interface HeaderLayout {
  /** The whole header: 8-byte length + JSON padded with spaces to a multiple of 8. */
  header: Buffer;
  /** Absolute file offset of each entry's data, in the given order. */
  offsets: number[];
  /** Total file size. */
  size: number;
}

/**
 * Plans a safetensors file: data laid out in the order given (the caller decides the order;
 * merges keep A's order), header JSON with keys in that same order and `__metadata__` first,
 * padded with spaces so data starts 8-byte aligned, as the reference `prepare()` does.
 *
 * The JSON is assembled key by key rather than from an object, so every name is written as
 * given: a tensor called `__proto__` is a key like any other, and names that look like integers
 * ("0", "12") keep their place instead of moving first, as object key order would put them.
 */
export function layoutSafetensors(entries: HeaderEntry[], metadata: Record<string, string> = {}): HeaderLayout {
  const members: string[] = [];
  if (Object.keys(metadata).length > 0) members.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  const seen = new Set<string>();
  let cursor = 0;
  const relative: number[] = [];
  for (const e of entries) {
    if (e.name === METADATA_KEY) {
      throw new MergeError("INVALID_ARGUMENT", `tensor "${e.name}" cannot be stored in a safetensors file: the name is reserved for metadata (write a .ckpt instead)`, { tensor: e.name });
    }
    if (seen.has(e.name)) throw new MergeError("DUPLICATE_TENSOR", `tensor "${e.name}" appears twice`, { tensor: e.name });
    seen.add(e.name);
    let bytes = DTYPE_SIZE[e.dtype];
    for (const d of e.shape) bytes *= d;
    members.push(`${JSON.stringify(e.name)}:${JSON.stringify({ dtype: e.dtype, shape: e.shape, data_offsets: [cursor, cursor + bytes] })}`);
    relative.push(cursor);
    cursor += bytes;
  }
  let json = Buffer.from(`{${members.join(",")}}`, "utf8");
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const out = Buffer.alloc(8 + json.length);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  const dataStart = out.length;
  return { header: out, offsets: relative.map((r) => dataStart + r), size: dataStart + cursor };
}
