/**
 * Bounded, deterministic mutation fuzzing of the pickle and zip parsers (part of `npm test`).
 * Every mutated input must either parse, with every tensor range inside the file, or be
 * refused with a MergeError; any other exception (TypeError, RangeError, a stack overflow)
 * or a hang is a bug. Failures print the target, seed and iteration to replay.
 *
 * TM_FUZZ_ITERATIONS=<n> multiplies the run for a longer local session.
 */
import { strict as assert } from "node:assert";
import { crc32 } from "node:zlib";
import { MergeError } from "../../lib/errors";
import type { OutputEntry } from "../../lib/formats/output";
import { unpickle } from "../../lib/formats/ckpt/pickle";
import { OP, PickleWriter } from "../../lib/formats/ckpt/pickle-writer";
import { readCkptSource } from "../../lib/formats/ckpt/reader";
import { bufferSource } from "../../lib/formats/ckpt/source";
import { torchHooks } from "../../lib/formats/ckpt/torch";
import { layoutCkpt, pickleCheckpoint } from "../../lib/formats/ckpt/writer";
import { buildZip } from "../fixtures/ckpt/zip-builder";
import { testBytes } from "./helpers";
import { seededRandom } from "../../lib/synthetic";

const SCALE = Math.max(1, Number(process.env.TM_FUZZ_ITERATIONS ?? "1"));

/** The project's seeded generator (mulberry32): reproducible mutations. */
const rng = seededRandom;

const OPCODES = Object.values(OP);
const INTERESTING32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

function mutate(input: Uint8Array, random: () => number): Uint8Array {
  let data = Buffer.from(input);
  const pick = (n: number) => Math.floor(random() * n);
  const rounds = 1 + pick(4);
  for (let r = 0; r < rounds && data.length > 0; r++) {
    const at = pick(data.length);
    switch (pick(8)) {
      case 0: data[at]! ^= 1 << pick(8); break;
      case 1: data[at] = [0, 0xff, 0x7f, 0x80, pick(256)][pick(5)]!; break;
      case 2: if (at + 4 <= data.length) data.writeUInt32LE(INTERESTING32[pick(INTERESTING32.length)]!, at); break;
      case 3: data[at] = OPCODES[pick(OPCODES.length)]!; break;
      case 4: { // insert random bytes
        const ins = Buffer.from(Array.from({ length: 1 + pick(8) }, () => pick(256)));
        data = Buffer.concat([data.subarray(0, at), ins, data.subarray(at)]);
        break;
      }
      case 5: { // duplicate a chunk
        const len = 1 + pick(Math.min(64, data.length - at));
        data = Buffer.concat([data.subarray(0, at + len), data.subarray(at, at + len), data.subarray(at + len)]);
        break;
      }
      case 6: { // delete a chunk
        const len = 1 + pick(Math.min(32, data.length - at));
        data = Buffer.concat([data.subarray(0, at), data.subarray(at + len)]);
        break;
      }
      default: data = data.subarray(0, at); // truncate
    }
  }
  return data;
}

function check(e: unknown, target: string, seed: number, i: number): void {
  if (e instanceof MergeError) return;
  assert.fail(`${target}: seed ${seed} iteration ${i} threw a non-MergeError: ${(e as Error)?.stack ?? String(e)}`);
}

const entries: OutputEntry[] = [
  { name: "model.w", dtype: "F32", shape: [3, 4] },
  { name: "model.h", dtype: "F16", shape: [5] },
  { name: "model.ids", dtype: "I64", shape: [1, 7] },
  { name: "scalar", dtype: "BF16", shape: [] },
];

/** A ckpt as our writer lays it out, with real data and CRCs. */
function writerCkpt(forceZip64: boolean): Uint8Array {
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
function richPickle(): Uint8Array {
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
function legacyFile(): Uint8Array {
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

async function fuzzFile(target: string, seedInput: Uint8Array, kind: "ckpt" | "pickle", seed: number, iterations: number): Promise<void> {
  // The unmutated input must parse: otherwise the fuzzer only exercises the first check.
  const base = await readCkptSource(bufferSource(seedInput, target), kind);
  assert.ok(base.tensors.length > 0);
  const random = rng(seed);
  for (let i = 0; i < iterations; i++) {
    const data = mutate(seedInput, random);
    try {
      const model = await readCkptSource(bufferSource(data, target), kind);
      for (const t of model.tensors) {
        assert.ok(t.offset >= 0 && t.byteLength >= 0 && t.offset + t.byteLength <= data.length, `${target}: seed ${seed} iteration ${i}: tensor "${t.name}" outside the file`);
      }
    } catch (e) {
      check(e, target, seed, i);
    }
  }
}

describe("ckpt fuzz (bounded, deterministic)", function () {
  this.timeout(120_000);

  it("pickle parser: mutated torch-style and rich pickles", () => {
    const seeds = [pickleCheckpoint(entries, { a: "b" }), richPickle()];
    for (const [s, input] of seeds.entries()) {
      unpickle(input, torchHooks(false), { where: "seed" });
      const random = rng(1000 + s);
      for (let i = 0; i < 8000 * SCALE; i++) {
        const data = mutate(input, random);
        try {
          unpickle(data, torchHooks(false), { where: "fuzz" });
        } catch (e) {
          check(e, `pickle seed ${s}`, 1000 + s, i);
        }
      }
    }
  });

  it("zip reader: mutated archives from our writer (classic and zip64)", async () => {
    await fuzzFile("zip", writerCkpt(false), "ckpt", 2000, 3000 * SCALE);
    await fuzzFile("zip64", writerCkpt(true), "ckpt", 2001, 3000 * SCALE);
  });

  it("state dict extraction: mutated pickles inside valid archives", async () => {
    const pickle = pickleCheckpoint(entries);
    const storages = entries.map((e, i) => ({ name: `archive/data/${i}`, data: testBytes(e.dtype, e.shape.reduce((p, d) => p * d, 1), i) }));
    const random = rng(3000);
    await readCkptSource(bufferSource(buildZip([{ name: "archive/data.pkl", data: pickle }, ...storages]).bytes));
    for (let i = 0; i < 3000 * SCALE; i++) {
      const zip = buildZip([{ name: "archive/data.pkl", data: mutate(pickle, random) }, ...storages]).bytes;
      try {
        const model = await readCkptSource(bufferSource(zip, "wrapped"));
        for (const t of model.tensors) assert.ok(t.offset + t.byteLength <= zip.length, `wrapped: iteration ${i}: tensor "${t.name}" outside the file`);
      } catch (e) {
        check(e, "wrapped", 3000, i);
      }
    }
  });

  it("legacy reader: mutated legacy files", async () => {
    await fuzzFile("legacy", legacyFile(), "pickle", 4000, 3000 * SCALE);
  });
});
