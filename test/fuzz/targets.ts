/**
 * The TS parser fuzz targets: seed inputs (real files from our writers and hand-built
 * pickles), a mutator, and a check. A check returns normally when the parser accepted the
 * input and the result is sound, or when it refused it with a MergeError; it throws a
 * FuzzFinding for anything else: another exception (TypeError, RangeError, stack overflow), a
 * tensor outside the file, or a header read differently than an independent JSON.parse reads it.
 */
import { crc32 } from "node:zlib";
import { DTYPE_SIZE, type Dtype } from "../../lib/dtypes";
import { MergeError } from "../../lib/errors";
import type { OutputEntry } from "../../lib/formats/output";
import { unpickle } from "../../lib/formats/ckpt/pickle";
import { OP, PickleWriter } from "../../lib/formats/ckpt/pickle-writer";
import { readCkptSource } from "../../lib/formats/ckpt/reader";
import { bufferSource } from "../../lib/formats/ckpt/source";
import { torchHooks } from "../../lib/formats/ckpt/torch";
import { layoutCkpt, pickleCheckpoint } from "../../lib/formats/ckpt/writer";
import { parseSafetensorsHeader } from "../../lib/formats/safetensors";
import type { ModelFile } from "../../lib/model";
import { buildZip } from "../fixtures/ckpt/zip-builder";
import { testBytes } from "../ckpt/helpers";
import { encodeValues } from "../helpers/models";
import { mutateBytes, mutateSafetensors, type Random } from "./mutate";

/** A parser result that breaks a rule, or an exception other than MergeError. */
export class FuzzFinding extends Error {
  override name = "FuzzFinding";
}

export interface FuzzTarget {
  name: string;
  seeds(): Uint8Array[];
  mutate(input: Uint8Array, random: Random): Uint8Array;
  /** Resolves with "ok" or "CODE|message" for a refusal; rejects with a FuzzFinding. */
  check(data: Uint8Array): Promise<string>;
}

const entries: OutputEntry[] = [
  { name: "model.w", dtype: "F32", shape: [3, 4] },
  { name: "model.h", dtype: "F16", shape: [5] },
  { name: "model.ids", dtype: "I64", shape: [1, 7] },
  { name: "scalar", dtype: "BF16", shape: [] },
];

/** A ckpt as our writer lays it out, with real data and CRCs. */
export function writerCkpt(forceZip64: boolean): Uint8Array {
  const layout = layoutCkpt(entries, { recipe: "x" }, { forceZip64 });
  const out = Buffer.alloc(layout.size);
  for (const l of layout.literals) out.set(l.data, l.offset);
  entries.forEach((e, i) => out.set(testBytes(e.dtype, e.shape.reduce((p, d) => p * d, 1), i), layout.offsets[i]!));
  const crcs = layout.crc32Ranges!.map((r) => crc32(out.subarray(r.offset, r.offset + r.length)) >>> 0);
  for (const p of layout.finish!(crcs)) out.set(p.data, p.offset);
  return out;
}

const sbu = (w: PickleWriter, text: string) => w.raw(OP.SHORT_BINUNICODE, Buffer.byteLength(text), Buffer.from(text));

/** A pickle exercising the protocol-0 text opcodes and protocol-4/5 opcodes around a state dict. */
export function richPickle(): Uint8Array {
  const w = new PickleWriter().proto(4);
  w.raw(OP.FRAME, Buffer.alloc(8));
  w.op(OP.EMPTY_DICT).op(OP.MEMOIZE).op(OP.MARK);
  sbu(w, "texts");
  w.op(OP.MARK).raw(OP.INT, Buffer.from("42\n")).raw(OP.INT, Buffer.from("01\n")).raw(OP.LONG, Buffer.from("-123456789012345678901L\n"));
  w.raw(OP.STRING, Buffer.from("'a\\x41\\n'\n")).raw(OP.UNICODE, Buffer.from("caf\\u00e9\n")).raw(OP.FLOAT, Buffer.from("1.5e3\n"));
  w.raw(OP.PUT, Buffer.from("900\n")).raw(OP.GET, Buffer.from("900\n")).op(OP.LIST);
  sbu(w, "sets").op(OP.EMPTY_SET).op(OP.MARK).int(1).int(2).op(OP.ADDITEMS);
  sbu(w, "bytes").raw(OP.SHORT_BINBYTES, 3, Buffer.from("abc"));
  sbu(w, "frozen").op(OP.MARK).op(OP.NONE).op(OP.NEWTRUE).op(OP.FROZENSET);
  sbu(w, "od").raw(OP.SHORT_BINUNICODE, 11, Buffer.from("collections")).raw(OP.SHORT_BINUNICODE, 11, Buffer.from("OrderedDict")).op(OP.STACK_GLOBAL);
  w.op(OP.EMPTY_TUPLE).op(OP.NEWOBJ).op(OP.MARK).str("k").raw(OP.BINFLOAT, Buffer.from([0x3f, 0xf0, 0, 0, 0, 0, 0, 0])).op(OP.SETITEMS);
  w.op(OP.EMPTY_DICT).str("_metadata").op(OP.EMPTY_DICT).op(OP.SETITEM).op(OP.BUILD);
  w.op(OP.SETITEMS).op(OP.STOP);
  return w.bytes();
}

/** A legacy torch.save file: magic, protocol, sys_info, object, keys, storages. */
export function legacyFile(): Uint8Array {
  const w = new PickleWriter();
  w.proto(2).int(0x1950a86a20f9469cfc6cn).op(OP.STOP);
  w.proto(2).int(1001).op(OP.STOP);
  w.proto(2).op(OP.EMPTY_DICT).str("little_endian").bool(true).op(OP.SETITEM).op(OP.STOP);
  w.proto(2).op(OP.EMPTY_DICT).str("w").global("torch._utils", "_rebuild_tensor_v2");
  w.op(OP.MARK).op(OP.MARK).str("storage").global("torch", "FloatStorage").str("17").str("cpu").int(6).op(OP.NONE).op(OP.TUPLE).op(OP.BINPERSID);
  w.int(2).intTuple([2, 2]).intTuple([2, 1]).bool(false).global("collections", "OrderedDict").op(OP.EMPTY_TUPLE).op(OP.REDUCE).op(OP.TUPLE).op(OP.REDUCE).op(OP.SETITEM).op(OP.STOP);
  w.proto(2).op(OP.EMPTY_LIST).str("17").op(OP.APPEND).op(OP.STOP);
  const count = Buffer.alloc(8);
  count.writeBigInt64LE(6n);
  return Buffer.concat([w.bytes(), count, Buffer.from(testBytes("F32", 6, 9))]);
}

/** A safetensors file built by hand from a header object (key order kept, data zero-filled). */
export function safetensorsFile(header: Record<string, unknown>, dataBytes: number): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.from(encodeValues("U8", Array.from({ length: dataBytes }, (_, i) => i)))]);
}

function safetensorsSeeds(): Uint8Array[] {
  return [
    safetensorsFile({
      __metadata__: { format: "pt", sd_merge_recipe: '{"type":"merge"}' },
      "model.w": { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
      "model.h": { dtype: "F16", shape: [4], data_offsets: [24, 32] },
      "model.b": { dtype: "BF16", shape: [], data_offsets: [32, 34] },
      "model.e": { dtype: "I64", shape: [0, 5], data_offsets: [34, 34] },
    }, 34),
    safetensorsFile({ "b.x": { dtype: "U8", shape: [3], data_offsets: [5, 8] }, "a.x": { dtype: "BOOL", shape: [5], data_offsets: [0, 5] } }, 8),
    safetensorsFile({ __metadata__: {} }, 0),
  ];
}

function fail(what: string): never {
  throw new FuzzFinding(what);
}

/** A refusal must be a MergeError; anything else thrown is a finding. */
function refusal(e: unknown): string {
  if (e instanceof FuzzFinding) throw e;
  if (e instanceof MergeError) return `${e.code}|${e.message}`;
  throw new FuzzFinding(`threw a non-MergeError: ${(e as Error)?.stack ?? String(e)}`);
}

function tensorsInside(model: ModelFile, size: number): void {
  for (const t of model.tensors) {
    if (!(t.offset >= 0 && t.byteLength >= 0 && t.offset + t.byteLength <= size)) fail(`tensor "${t.name}" [${t.offset}, +${t.byteLength}) is outside the ${size}-byte file`);
  }
}

/**
 * An accepted safetensors header, re-read independently: every JSON key but __metadata__ is
 * one tensor, with its dtype's size × the shape's product, tiling the data from the header's
 * end to the file's end; every metadata key is kept, as data (a key named __proto__ too).
 */
function checkSafetensors(data: Uint8Array): string {
  if (data.length < 8) return "FILE_TOO_SMALL";
  const n = Number(Buffer.from(data.buffer, data.byteOffset, 8).readBigUInt64LE(0));
  if (n > data.length - 8) return "FILE_TOO_SMALL"; // readSafetensors' check before the parser
  const json = data.subarray(8, 8 + n);
  let parsed;
  try {
    parsed = parseSafetensorsHeader(json, data.length, "fuzz.safetensors");
  } catch (e) {
    return refusal(e);
  }
  const header = JSON.parse(Buffer.from(json).toString("utf8")) as Record<string, unknown>;
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const got = parsed.tensors.map((t) => t.name);
  if (got.length !== names.length || new Set(got).size !== got.length || !names.every((k) => got.includes(k))) {
    fail(`tensor names ${JSON.stringify(got)} differ from the header's keys ${JSON.stringify(names)}`);
  }
  let end = 8 + n;
  for (const t of [...parsed.tensors].sort((a, b) => a.offset - b.offset)) {
    const entry = header[t.name] as { dtype: Dtype; shape: number[] };
    const bytes = DTYPE_SIZE[entry.dtype] * entry.shape.reduce((p, d) => p * d, 1);
    if (t.dtype !== entry.dtype || t.byteLength !== bytes || t.offset !== end) fail(`tensor "${t.name}" read as ${t.dtype} [${t.offset}, +${t.byteLength}), header says ${entry.dtype} ${JSON.stringify(entry.shape)} at ${end}`);
    end += bytes;
  }
  if (end !== data.length) fail(`tensors end at ${end} of a ${data.length}-byte file`);
  const meta = (header.__metadata__ ?? {}) as Record<string, unknown>;
  const keys = Object.keys(meta);
  const gotKeys = Object.keys(parsed.metadata);
  if (gotKeys.length !== keys.length || !keys.every((k) => Object.prototype.hasOwnProperty.call(parsed.metadata, k) && parsed.metadata[k] === meta[k])) {
    fail(`metadata keys ${JSON.stringify(gotKeys)} differ from the header's ${JSON.stringify(keys)}`);
  }
  return "ok";
}

async function checkCkpt(data: Uint8Array, kind: "ckpt" | "pickle"): Promise<string> {
  try {
    tensorsInside(await readCkptSource(bufferSource(data, "fuzz.ckpt"), kind), data.length);
    return "ok";
  } catch (e) {
    return refusal(e);
  }
}

const wrappedStorages = () => entries.map((e, i) => ({ name: `archive/data/${i}`, data: testBytes(e.dtype, e.shape.reduce((p, d) => p * d, 1), i) }));

export const TS_TARGETS: FuzzTarget[] = [
  { name: "safetensors-header", seeds: safetensorsSeeds, mutate: mutateSafetensors, check: async (d) => checkSafetensors(d) },
  {
    name: "pickle",
    seeds: () => [pickleCheckpoint(entries, { a: "b" }), richPickle()],
    mutate: mutateBytes,
    check: async (d) => {
      try {
        unpickle(d, torchHooks(false), { where: "fuzz" });
        return "ok";
      } catch (e) {
        return refusal(e);
      }
    },
  },
  { name: "zip", seeds: () => [writerCkpt(false), writerCkpt(true)], mutate: mutateBytes, check: (d) => checkCkpt(d, "ckpt") },
  {
    // Mutated pickles inside valid archives: the state-dict extraction behind the zip layer.
    name: "ckpt-state-dict",
    seeds: () => [pickleCheckpoint(entries)],
    mutate: mutateBytes,
    check: (pickle) => checkCkpt(buildZip([{ name: "archive/data.pkl", data: pickle }, ...wrappedStorages()]).bytes, "ckpt"),
  },
  { name: "legacy", seeds: () => [legacyFile()], mutate: mutateBytes, check: (d) => checkCkpt(d, "pickle") },
];
