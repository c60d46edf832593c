/**
 * A strict reader for the zip archives PyTorch writes (torch.save since 1.6): only what the
 * format needs, and every number checked before it becomes an offset.
 *
 * The central directory is the only index trusted for names; each entry's local header is read
 * too (its name and extra field decide where the data really starts) and must agree with it.
 * Entries may not overlap and must lie before the central directory, so one byte can never
 * belong to two entries (the "overlapping files" zip bomb, and parser-differential tricks
 * where two readers see different contents). Zip64 records are read (SD checkpoints exceed
 * 4 GiB). Only stored and deflated methods are understood; deflated data is inflated with a
 * hard output cap, and only for the small records (data.pkl), never for tensor storages.
 */
import { crc32, inflateRawSync } from "node:zlib";
import { MergeError } from "../../errors";
import type { ByteSource } from "./source";

export const ZIP_METHOD_STORED = 0;
export const ZIP_METHOD_DEFLATE = 8;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_SIZE = 56;
const LOCAL_SIZE = 30;
const CENTRAL_SIZE = 46;
const EXTRA_ZIP64 = 0x0001;

export interface ZipLimits {
  /** Largest central directory accepted (bytes). */
  maxCentralDirectory: number;
  /** Most entries accepted. */
  maxEntries: number;
}

export const DEFAULT_ZIP_LIMITS: ZipLimits = { maxCentralDirectory: 256 * 1024 * 1024, maxEntries: 1_000_000 };

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  /** Absolute offset of the entry's first data byte (after the local header and its extra field). */
  dataOffset: number;
}

export interface ZipDirectory {
  entries: ZipEntry[];
  byName: Map<string, ZipEntry>;
  /** Where the central directory starts (every entry's data ends at or before it). */
  centralDirectoryOffset: number;
}

function fail(source: ByteSource, message: string): never {
  throw new MergeError("ZIP_INVALID", `${source.path}: ${message}`, { path: source.path });
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A u64 as a number, refusing values beyond 2^53 (no file is that large). */
function u64(source: ByteSource, dv: DataView, at: number, what: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(source, `${what} ${v} is too large`);
  return Number(v);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeName(source: ByteSource, bytes: Uint8Array, flags: number): string {
  if ((flags & 0x0800) === 0) {
    // Not flagged UTF-8: IBM437 in theory. torch writes ASCII; accept ASCII only.
    for (const b of bytes) if (b >= 0x80) fail(source, "entry name is not ASCII and not flagged UTF-8");
  }
  let name: string;
  try {
    name = utf8.decode(bytes);
  } catch {
    return fail(source, "entry name is not valid UTF-8");
  }
  if (name.length === 0) fail(source, "an entry has an empty name");
  if (name.includes("\0")) fail(source, `entry name ${JSON.stringify(name)} contains a NUL byte`);
  return name;
}

/** The zip64 extended-information extra field, read in the order the spec fixes. */
function readZip64Extra(
  source: ByteSource,
  extra: Uint8Array,
  need: { uncompressed: boolean; compressed: boolean; offset: boolean },
  name: string,
): { uncompressed?: number; compressed?: number; offset?: number } {
  const dv = view(extra);
  let at = 0;
  while (at + 4 <= extra.length) {
    const id = dv.getUint16(at, true);
    const len = dv.getUint16(at + 2, true);
    if (at + 4 + len > extra.length) fail(source, `entry "${name}" has a truncated extra field`);
    if (id === EXTRA_ZIP64) {
      const out: { uncompressed?: number; compressed?: number; offset?: number } = {};
      let p = at + 4;
      const end = at + 4 + len;
      const take = (what: string): number => {
        if (p + 8 > end) fail(source, `entry "${name}" has a zip64 extra field without its ${what}`);
        const v = u64(source, dv, p, `entry "${name}" zip64 ${what}`);
        p += 8;
        return v;
      };
      if (need.uncompressed) out.uncompressed = take("uncompressed size");
      if (need.compressed) out.compressed = take("compressed size");
      if (need.offset) out.offset = take("local header offset");
      return out;
    }
    at += 4 + len;
  }
  if (need.uncompressed || need.compressed || need.offset) fail(source, `entry "${name}" needs a zip64 extra field but has none`);
  return {};
}

interface EndRecord {
  entries: number;
  cdSize: number;
  cdOffset: number;
  /** First byte of the end records (zip64 ones included): the central directory must end here. */
  end: number;
}

async function readEndRecords(source: ByteSource): Promise<EndRecord> {
  if (source.size < EOCD_SIZE) fail(source, `${source.size} bytes is too small for a zip archive`);
  const tailLength = Math.min(source.size, EOCD_SIZE + 0xffff);
  const tailStart = source.size - tailLength;
  const tail = await source.read(tailStart, tailLength);
  const dv = view(tail);
  // The EOCD is the last record whose comment runs exactly to the end of the file.
  let at = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (dv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + dv.getUint16(i + 20, true) === tail.length) {
      at = i;
      break;
    }
  }
  if (at < 0) fail(source, "no end-of-central-directory record (not a zip archive, or truncated)");
  const eocdPos = tailStart + at;
  const disk = dv.getUint16(at + 4, true);
  const cdDisk = dv.getUint16(at + 6, true);
  const entriesOnDisk = dv.getUint16(at + 8, true);
  let entries = dv.getUint16(at + 10, true);
  let cdSize = dv.getUint32(at + 12, true);
  let cdOffset = dv.getUint32(at + 16, true);
  let end = eocdPos;
  const hasLocator = eocdPos >= ZIP64_LOCATOR_SIZE && (await source.read(eocdPos - ZIP64_LOCATOR_SIZE, 4)).every((b, i) => b === [0x50, 0x4b, 0x06, 0x07][i]);
  if (hasLocator) {
    const loc = view(await source.read(eocdPos - ZIP64_LOCATOR_SIZE, ZIP64_LOCATOR_SIZE));
    if (loc.getUint32(0, true) !== SIG_ZIP64_LOCATOR) fail(source, "bad zip64 locator");
    if (loc.getUint32(4, true) !== 0 || loc.getUint32(16, true) > 1) fail(source, "multi-disk (split) archives are not supported");
    const z64Pos = u64(source, loc, 8, "zip64 end record offset");
    if (z64Pos + ZIP64_EOCD_SIZE > eocdPos - ZIP64_LOCATOR_SIZE) fail(source, "zip64 end record lies outside the archive");
    const z = view(await source.read(z64Pos, ZIP64_EOCD_SIZE));
    if (z.getUint32(0, true) !== SIG_ZIP64_EOCD) fail(source, "zip64 locator does not point at a zip64 end record");
    if (z.getUint32(16, true) !== 0 || z.getUint32(20, true) !== 0) fail(source, "multi-disk (split) archives are not supported");
    const z64EntriesDisk = u64(source, z, 24, "zip64 entry count");
    const z64Entries = u64(source, z, 32, "zip64 entry count");
    const z64CdSize = u64(source, z, 40, "zip64 central directory size");
    const z64CdOffset = u64(source, z, 48, "zip64 central directory offset");
    if (z64EntriesDisk !== z64Entries) fail(source, "multi-disk (split) archives are not supported");
    // Where the 32-bit record holds a real value, it must agree with the zip64 one: two
    // different answers are how archives are made to look different to different readers.
    if ((entries !== 0xffff && entries !== z64Entries) || (cdSize !== 0xffffffff && cdSize !== z64CdSize) || (cdOffset !== 0xffffffff && cdOffset !== z64CdOffset)) {
      fail(source, "zip64 end record disagrees with the end-of-central-directory record");
    }
    entries = z64Entries;
    cdSize = z64CdSize;
    cdOffset = z64CdOffset;
    end = z64Pos;
  } else {
    if (disk !== 0 || cdDisk !== 0 || entriesOnDisk !== entries) fail(source, "multi-disk (split) archives are not supported");
    if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) fail(source, "zip64 values without a zip64 end record");
  }
  if (cdOffset + cdSize !== end) fail(source, `central directory [${cdOffset}, ${cdOffset + cdSize}) does not end where the end records start (${end})`);
  return { entries, cdSize, cdOffset, end };
}

/**
 * Reads and validates the directory of a zip archive, local headers included. No entry data
 * is read.
 */
export async function readZipDirectory(source: ByteSource, limits: ZipLimits = DEFAULT_ZIP_LIMITS): Promise<ZipDirectory> {
  const end = await readEndRecords(source);
  if (end.cdSize > limits.maxCentralDirectory) fail(source, `central directory of ${end.cdSize} bytes exceeds the ${limits.maxCentralDirectory}-byte limit`);
  if (end.entries > limits.maxEntries) fail(source, `${end.entries} entries exceed the limit of ${limits.maxEntries}`);
  if (end.entries * CENTRAL_SIZE > end.cdSize) fail(source, `central directory of ${end.cdSize} bytes cannot hold ${end.entries} entries`);
  const cd = await source.read(end.cdOffset, end.cdSize);
  const dv = view(cd);
  const entries: ZipEntry[] = [];
  const byName = new Map<string, ZipEntry>();
  let at = 0;
  for (let i = 0; i < end.entries; i++) {
    if (at + CENTRAL_SIZE > cd.length || dv.getUint32(at, true) !== SIG_CENTRAL) fail(source, `central directory entry ${i} is missing or damaged`);
    const flags = dv.getUint16(at + 8, true);
    const method = dv.getUint16(at + 10, true);
    const crc = dv.getUint32(at + 16, true);
    let compressedSize = dv.getUint32(at + 20, true);
    let uncompressedSize = dv.getUint32(at + 24, true);
    const nameLen = dv.getUint16(at + 28, true);
    const extraLen = dv.getUint16(at + 30, true);
    const commentLen = dv.getUint16(at + 32, true);
    const diskStart = dv.getUint16(at + 34, true);
    let localHeaderOffset = dv.getUint32(at + 42, true);
    const recordEnd = at + CENTRAL_SIZE + nameLen + extraLen + commentLen;
    if (recordEnd > cd.length) fail(source, `central directory entry ${i} runs past the directory`);
    const name = decodeName(source, cd.subarray(at + CENTRAL_SIZE, at + CENTRAL_SIZE + nameLen), flags);
    const extra = cd.subarray(at + CENTRAL_SIZE + nameLen, at + CENTRAL_SIZE + nameLen + extraLen);
    if (diskStart !== 0 && diskStart !== 0xffff) fail(source, "multi-disk (split) archives are not supported");
    const z64 = readZip64Extra(source, extra, {
      uncompressed: uncompressedSize === 0xffffffff,
      compressed: compressedSize === 0xffffffff,
      offset: localHeaderOffset === 0xffffffff,
    }, name);
    if (z64.uncompressed !== undefined) uncompressedSize = z64.uncompressed;
    if (z64.compressed !== undefined) compressedSize = z64.compressed;
    if (z64.offset !== undefined) localHeaderOffset = z64.offset;
    if ((flags & 0x0001) !== 0) fail(source, `entry "${name}" is encrypted`);
    if (byName.has(name)) fail(source, `entry "${name}" appears twice`);
    if (method === ZIP_METHOD_STORED && compressedSize !== uncompressedSize) {
      fail(source, `stored entry "${name}" declares ${compressedSize} bytes stored but ${uncompressedSize} uncompressed`);
    }
    const entry: ZipEntry = { name, method, flags, crc32: crc, compressedSize, uncompressedSize, localHeaderOffset, dataOffset: -1 };
    entries.push(entry);
    byName.set(name, entry);
    at = recordEnd;
  }
  if (at !== cd.length) fail(source, `${cd.length - at} unexplained bytes at the end of the central directory`);
  await resolveLocalHeaders(source, entries, end.cdOffset);
  return { entries, byName, centralDirectoryOffset: end.cdOffset };
}

/** Reads every local header, fixes each entry's data offset, and refuses overlaps. */
async function resolveLocalHeaders(source: ByteSource, entries: ZipEntry[], cdOffset: number): Promise<void> {
  const sorted = [...entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  // Independent small reads; issue them in batches so a 2,000-entry checkpoint opens quickly.
  const BATCH = 256;
  for (let i = 0; i < sorted.length; i += BATCH) {
    await Promise.all(sorted.slice(i, i + BATCH).map((e) => resolveLocalHeader(source, e, cdOffset)));
  }
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.dataOffset + prev.compressedSize > cur.localHeaderOffset) {
      fail(source, `entries "${prev.name}" and "${cur.name}" overlap`);
    }
  }
}

async function resolveLocalHeader(source: ByteSource, entry: ZipEntry, cdOffset: number): Promise<void> {
  const name = entry.name;
  if (entry.localHeaderOffset + LOCAL_SIZE > cdOffset) fail(source, `entry "${name}" starts at ${entry.localHeaderOffset}, outside the archive data`);
  // One read usually covers the header, the name and the extra field (torch's padding is < 64
  // bytes, plus 20 for zip64); a longer extra field costs a second read.
  const guess = Math.min(cdOffset - entry.localHeaderOffset, LOCAL_SIZE + new TextEncoder().encode(name).length + 128);
  let block = await source.read(entry.localHeaderOffset, guess);
  const head = view(block);
  if (head.getUint32(0, true) !== SIG_LOCAL) fail(source, `entry "${name}" has no local header at ${entry.localHeaderOffset}`);
  const flags = head.getUint16(6, true);
  const method = head.getUint16(8, true);
  const crc = head.getUint32(14, true);
  const compressed = head.getUint32(18, true);
  const uncompressed = head.getUint32(22, true);
  const nameLen = head.getUint16(26, true);
  const extraLen = head.getUint16(28, true);
  const varStart = entry.localHeaderOffset + LOCAL_SIZE;
  if (varStart + nameLen + extraLen > cdOffset) fail(source, `entry "${name}" local header runs past the archive data`);
  if (LOCAL_SIZE + nameLen + extraLen > block.length) block = await source.read(entry.localHeaderOffset, LOCAL_SIZE + nameLen + extraLen);
  const variable = block.subarray(LOCAL_SIZE, LOCAL_SIZE + nameLen + extraLen);
  const localName = variable.subarray(0, nameLen);
  const expected = new TextEncoder().encode(name);
  if (localName.length !== expected.length || !localName.every((b, i) => b === expected[i])) {
    fail(source, `entry "${name}" has a different name in its local header`);
  }
  if (method !== entry.method) fail(source, `entry "${name}" has a different method in its local header`);
  if ((flags & 0x0001) !== 0) fail(source, `entry "${name}" is encrypted`);
  // Without a data descriptor (bit 3), the local header repeats the CRC and sizes: they must agree.
  if ((flags & 0x0008) === 0) {
    const extra = variable.subarray(nameLen);
    const z64 = readZip64Extra(source, extra, { uncompressed: uncompressed === 0xffffffff, compressed: compressed === 0xffffffff, offset: false }, name);
    const lc = z64.compressed ?? compressed;
    const lu = z64.uncompressed ?? uncompressed;
    if (lc !== entry.compressedSize || lu !== entry.uncompressedSize || crc !== entry.crc32) {
      fail(source, `entry "${name}" local header disagrees with the central directory (sizes or CRC)`);
    }
  }
  entry.dataOffset = varStart + nameLen + extraLen;
  if (entry.dataOffset + entry.compressedSize > cdOffset) {
    fail(source, `entry "${name}" data [${entry.dataOffset}, ${entry.dataOffset + entry.compressedSize}) runs past the archive data (ends at ${cdOffset})`);
  }
}

/**
 * Reads a whole (small) entry into memory: stored or deflated, at most `maxBytes` once
 * uncompressed, and checks its CRC-32.
 */
export async function readZipEntry(source: ByteSource, entry: ZipEntry, maxBytes: number): Promise<Uint8Array> {
  if (entry.uncompressedSize > maxBytes) {
    fail(source, `entry "${entry.name}" declares ${entry.uncompressedSize} bytes, over the ${maxBytes}-byte limit`);
  }
  let data: Uint8Array;
  if (entry.method === ZIP_METHOD_STORED) {
    data = await source.read(entry.dataOffset, entry.compressedSize);
  } else if (entry.method === ZIP_METHOD_DEFLATE) {
    if (entry.compressedSize > maxBytes) fail(source, `entry "${entry.name}" has ${entry.compressedSize} compressed bytes, over the ${maxBytes}-byte limit`);
    const raw = await source.read(entry.dataOffset, entry.compressedSize);
    try {
      // The cap is the declared size plus one byte: anything that inflates further is a lie.
      data = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.uncompressedSize + 1) });
    } catch (e) {
      return fail(source, `entry "${entry.name}" does not inflate to its declared ${entry.uncompressedSize} bytes (${(e as Error).message})`);
    }
    if (data.length !== entry.uncompressedSize) fail(source, `entry "${entry.name}" inflates to ${data.length} bytes, not the declared ${entry.uncompressedSize}`);
  } else {
    throw new MergeError("CKPT_UNSUPPORTED", `${source.path}: entry "${entry.name}" uses compression method ${entry.method}; only stored and deflated entries are supported`, { path: source.path });
  }
  if ((crc32(data) >>> 0) !== entry.crc32) fail(source, `entry "${entry.name}" fails its CRC-32 check (corrupt file)`);
  return data;
}
