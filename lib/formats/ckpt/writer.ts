/**
 * Plans a .ckpt the way torch.save writes one, so PyTorch (`torch.load(..., weights_only=True)`)
 * and every tool built on it load it: a zip archive, entries stored uncompressed, each record's
 * data aligned to 64 bytes by padding in an extra field ("FB" + 'Z' bytes, as PyTorch's
 * writer does), zip64 records where sizes or offsets need them (and the zip64 end record that
 * torch always writes), CRC-32 per entry.
 *
 *   archive/data.pkl     {"state_dict": {name: tensor, ...}} pickled at protocol 2 with
 *                        torch._utils._rebuild_tensor_v2 and one storage per tensor
 *   archive/byteorder    "little"
 *   archive/data/0 … N-1 tensor bytes, in entry order (written by the engine)
 *   archive/version      "3\n"
 *
 * String metadata, when there is any, goes in a top-level "__metadata__" dict next to
 * "state_dict"; loaders that take `ckpt["state_dict"]` ignore it, and our reader returns it.
 * safetensors' `format: "pt"` key says nothing in a .ckpt and is left out, so a merge without
 * user metadata writes exactly the classic `{"state_dict": {...}}`.
 *
 * The engine writes the literals and the tensor data, computes the CRC-32 of each tensor record
 * (`crc32Ranges`), and `finish()` turns those into the patches for the local headers and the
 * central directory.
 */
import { crc32 } from "node:zlib";
import { DTYPE_SIZE } from "../../dtypes";
import { MergeError } from "../../errors";
import type { OutputEntry, OutputLayout } from "../output";
import { OP, PickleWriter } from "./pickle-writer";
import { CKPT_METADATA_KEY } from "./state-dict";
import { DTYPE_STORAGE } from "./torch";

export interface CkptLayoutOptions {
  /** Folder name inside the archive (torch.save uses "archive"). */
  archiveName?: string;
  /** Write zip64 records for every entry, even small ones (tests the >4 GiB path on small files). */
  forceZip64?: boolean;
}

/** Record data alignment, as PyTorch's writer (kFieldAlignment). */
export const CKPT_ALIGNMENT = 64;
const U32_MAX = 0xffffffff;
const DOS_DATE_1980_01_01 = 0x0021;
const FLAG_UTF8 = 0x0800;

interface ZipRecord {
  name: Buffer;
  size: number;
  localHeaderOffset: number;
  dataOffset: number;
  zip64: boolean;
  /** Known content (pickle, byteorder, version), or undefined for tensor data. */
  content?: Uint8Array;
  crc: number;
}

/** Contiguous row-major strides, as torch computes them (a size-0 dimension counts as 1). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= Math.max(shape[i]!, 1);
  }
  return strides;
}

/** The data.pkl of a torch.save'd `{"state_dict": {...}}`. Storage i belongs to entry i. */
export function pickleCheckpoint(entries: readonly OutputEntry[], metadata: Record<string, string> = {}): Uint8Array {
  const w = new PickleWriter();
  w.proto(2).op(OP.EMPTY_DICT).op(OP.MARK);
  w.str("state_dict").op(OP.EMPTY_DICT);
  // Python's pickler batches SETITEMS by 1000; do the same so the stack stays small.
  for (let start = 0; start < entries.length; start += 1000) {
    w.op(OP.MARK);
    entries.slice(start, start + 1000).forEach((e, j) => {
      const numel = e.shape.reduce((p, d) => p * d, 1);
      w.str(e.name);
      w.global("torch._utils", "_rebuild_tensor_v2");
      w.op(OP.MARK);
      w.op(OP.MARK).str("storage", true).global("torch", DTYPE_STORAGE[e.dtype]).str(String(start + j)).str("cpu", true).int(numel).op(OP.TUPLE);
      w.op(OP.BINPERSID);
      w.int(0).intTuple(e.shape).intTuple(contiguousStrides(e.shape)).bool(false);
      w.global("collections", "OrderedDict").op(OP.EMPTY_TUPLE).op(OP.REDUCE);
      w.op(OP.TUPLE).op(OP.REDUCE);
    });
    w.op(OP.SETITEMS);
  }
  const meta = Object.entries(metadata).filter(([k, v]) => !(k === "format" && v === "pt"));
  if (meta.length > 0) {
    w.str(CKPT_METADATA_KEY).op(OP.EMPTY_DICT).op(OP.MARK);
    for (const [k, v] of meta) w.str(k).str(v);
    w.op(OP.SETITEMS);
  }
  w.op(OP.SETITEMS).op(OP.STOP);
  return w.bytes();
}

function localHeader(r: ZipRecord, crc: number): Buffer {
  const z64Len = r.zip64 ? 20 : 0;
  const headerEnd = r.localHeaderOffset + 30 + r.name.length + z64Len;
  const padLen = r.dataOffset - headerEnd - 4;
  const out = Buffer.alloc(r.dataOffset - r.localHeaderOffset);
  out.writeUInt32LE(0x04034b50, 0);
  out.writeUInt16LE(r.zip64 ? 45 : 20, 4);
  out.writeUInt16LE(FLAG_UTF8, 6);
  out.writeUInt16LE(0, 8); // stored
  out.writeUInt16LE(0, 10);
  out.writeUInt16LE(DOS_DATE_1980_01_01, 12);
  out.writeUInt32LE(crc >>> 0, 14);
  out.writeUInt32LE(r.zip64 ? U32_MAX : r.size, 18);
  out.writeUInt32LE(r.zip64 ? U32_MAX : r.size, 22);
  out.writeUInt16LE(r.name.length, 26);
  out.writeUInt16LE(z64Len + 4 + padLen, 28);
  r.name.copy(out, 30);
  let at = 30 + r.name.length;
  if (r.zip64) {
    out.writeUInt16LE(0x0001, at);
    out.writeUInt16LE(16, at + 2);
    out.writeBigUInt64LE(BigInt(r.size), at + 4);
    out.writeBigUInt64LE(BigInt(r.size), at + 12);
    at += 20;
  }
  out.write("FB", at, "latin1");
  out.writeUInt16LE(padLen, at + 2);
  out.fill(0x5a, at + 4, at + 4 + padLen); // 'Z', as PyTorch pads
  return out;
}

function centralTail(records: ZipRecord[], cdOffset: number, crcs: number[], force: boolean): Buffer {
  const parts: Buffer[] = [];
  records.forEach((r, i) => {
    const bigSize = force || r.size >= U32_MAX;
    const bigOffset = force || r.localHeaderOffset >= U32_MAX;
    const z64Fields = (bigSize ? 2 : 0) + (bigOffset ? 1 : 0);
    const extraLen = z64Fields > 0 ? 4 + 8 * z64Fields : 0;
    const rec = Buffer.alloc(46 + r.name.length + extraLen);
    rec.writeUInt32LE(0x02014b50, 0);
    rec.writeUInt16LE(45, 4); // made by: spec 4.5
    rec.writeUInt16LE(z64Fields > 0 ? 45 : 20, 6);
    rec.writeUInt16LE(FLAG_UTF8, 8);
    rec.writeUInt16LE(0, 10);
    rec.writeUInt16LE(0, 12);
    rec.writeUInt16LE(DOS_DATE_1980_01_01, 14);
    rec.writeUInt32LE(crcs[i]! >>> 0, 16);
    rec.writeUInt32LE(bigSize ? U32_MAX : r.size, 20);
    rec.writeUInt32LE(bigSize ? U32_MAX : r.size, 24);
    rec.writeUInt16LE(r.name.length, 28);
    rec.writeUInt16LE(extraLen, 30);
    rec.writeUInt32LE(bigOffset ? U32_MAX : r.localHeaderOffset, 42);
    r.name.copy(rec, 46);
    if (extraLen > 0) {
      let at = 46 + r.name.length;
      rec.writeUInt16LE(0x0001, at);
      rec.writeUInt16LE(8 * z64Fields, at + 2);
      at += 4;
      if (bigSize) {
        rec.writeBigUInt64LE(BigInt(r.size), at);
        rec.writeBigUInt64LE(BigInt(r.size), at + 8);
        at += 16;
      }
      if (bigOffset) rec.writeBigUInt64LE(BigInt(r.localHeaderOffset), at);
    }
    parts.push(rec);
  });
  const cdSize = parts.reduce((n, p) => n + p.length, 0);
  const z64Offset = cdOffset + cdSize;
  // zip64 end record + locator (torch always writes them), then the classic end record.
  const end = Buffer.alloc(56 + 20 + 22);
  end.writeUInt32LE(0x06064b50, 0);
  end.writeBigUInt64LE(44n, 4);
  end.writeUInt16LE(45, 12);
  end.writeUInt16LE(45, 14);
  end.writeBigUInt64LE(BigInt(records.length), 24);
  end.writeBigUInt64LE(BigInt(records.length), 32);
  end.writeBigUInt64LE(BigInt(cdSize), 40);
  end.writeBigUInt64LE(BigInt(cdOffset), 48);
  end.writeUInt32LE(0x07064b50, 56);
  end.writeBigUInt64LE(BigInt(z64Offset), 64);
  end.writeUInt32LE(1, 72);
  end.writeUInt32LE(0x06054b50, 76);
  const n16 = force || records.length >= 0xffff ? 0xffff : records.length;
  end.writeUInt16LE(n16, 84);
  end.writeUInt16LE(n16, 86);
  end.writeUInt32LE(force || cdSize >= U32_MAX ? U32_MAX : cdSize, 88);
  end.writeUInt32LE(force || cdOffset >= U32_MAX ? U32_MAX : cdOffset, 92);
  parts.push(end);
  return Buffer.concat(parts);
}

/**
 * Plans a .ckpt output: literals (local headers, the pickle, small records, the central
 * directory), the data offset of each entry, the CRC ranges and the `finish` patcher.
 *
 * @example
 * const layout = layoutCkpt([{ name: "w", dtype: "F16", shape: [4, 4] }], {});
 * // write layout.literals, each tensor at layout.offsets[i], then the patches of
 * // layout.finish!(crcOfEachRange)
 */
export function layoutCkpt(entries: OutputEntry[], metadata: Record<string, string> = {}, options: CkptLayoutOptions = {}): OutputLayout {
  const archive = options.archiveName ?? "archive";
  if (!/^[A-Za-z0-9_.-]+$/.test(archive)) throw new MergeError("INVALID_ARGUMENT", `archive name ${JSON.stringify(archive)} must be a plain folder name`);
  const force = options.forceZip64 === true;
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.name)) throw new MergeError("DUPLICATE_TENSOR", `tensor "${e.name}" appears twice`, { tensor: e.name });
    seen.add(e.name);
    if (!e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new MergeError("SHAPE_INVALID", `tensor "${e.name}" has an invalid shape`, { tensor: e.name });
  }
  const pickle = pickleCheckpoint(entries, metadata);
  const specs: { name: string; size: number; content?: Uint8Array }[] = [
    { name: `${archive}/data.pkl`, size: pickle.length, content: pickle },
    { name: `${archive}/byteorder`, size: 6, content: Buffer.from("little", "latin1") },
    ...entries.map((e, i) => ({ name: `${archive}/data/${i}`, size: e.shape.reduce((p, d) => p * d, DTYPE_SIZE[e.dtype]) })),
    { name: `${archive}/version`, size: 2, content: Buffer.from("3\n", "latin1") },
  ];
  const records: ZipRecord[] = [];
  let cursor = 0;
  for (const s of specs) {
    const name = Buffer.from(s.name, "utf8");
    const zip64 = force || s.size >= U32_MAX;
    const headerEnd = cursor + 30 + name.length + (zip64 ? 20 : 0);
    const pad = (CKPT_ALIGNMENT - ((headerEnd + 4) % CKPT_ALIGNMENT)) % CKPT_ALIGNMENT;
    const dataOffset = headerEnd + 4 + pad;
    const crc = s.content ? crc32(s.content) >>> 0 : 0;
    records.push({ name, size: s.size, localHeaderOffset: cursor, dataOffset, zip64, crc, ...(s.content ? { content: s.content } : {}) });
    cursor = dataOffset + s.size;
    if (!Number.isSafeInteger(cursor)) throw new MergeError("INVALID_ARGUMENT", "output too large");
  }
  const cdOffset = cursor;
  const tensorRecords = records.slice(2, 2 + entries.length);
  const literals: { offset: number; data: Uint8Array }[] = [];
  for (const r of records) {
    const head = localHeader(r, r.crc);
    literals.push({ offset: r.localHeaderOffset, data: r.content ? Buffer.concat([head, r.content]) : head });
  }
  const crcsWith = (tensorCrcs: number[]) => records.map((r, i) => (i >= 2 && i < 2 + entries.length ? tensorCrcs[i - 2]! : r.crc));
  const tail = centralTail(records, cdOffset, crcsWith(entries.map(() => 0)), force);
  literals.push({ offset: cdOffset, data: tail });
  return {
    format: "ckpt",
    size: cdOffset + tail.length,
    offsets: tensorRecords.map((r) => r.dataOffset),
    literals,
    crc32Ranges: tensorRecords.map((r) => ({ offset: r.dataOffset, length: r.size })),
    finish: (crcs: number[]) => {
      if (crcs.length !== entries.length || !crcs.every((c) => Number.isInteger(c) && c >= 0 && c <= U32_MAX)) {
        throw new MergeError("INTERNAL", `ckpt finish() expects ${entries.length} CRC-32 values, got ${crcs.length}`);
      }
      const patches: { offset: number; data: Uint8Array }[] = tensorRecords.map((r, i) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(crcs[i]! >>> 0, 0);
        return { offset: r.localHeaderOffset + 14, data: b };
      });
      patches.push({ offset: cdOffset, data: centralTail(records, cdOffset, crcsWith(crcs), force) });
      return patches;
    },
  };
}
