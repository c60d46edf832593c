import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError, type ErrorCode } from "../../lib/errors";
import { MAX_HEADER_LENGTH, layoutSafetensors, readSafetensors } from "../../lib/formats/safetensors";
import { openModel } from "../../lib/formats";
import { tempDir, writeModel } from "../helpers/models";

/** A file from a header object (or raw header text) and a data size. */
function craft(path: string, header: unknown, dataBytes: number, opts: { rawHeader?: Buffer; declaredLength?: bigint; trailing?: number } = {}): void {
  const json = opts.rawHeader ?? Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.declaredLength ?? BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, Buffer.alloc(dataBytes + (opts.trailing ?? 0))]));
}

async function expectCode(path: string, code: ErrorCode, tensor?: string): Promise<void> {
  await assert.rejects(readSafetensors(path), (e: unknown) => {
    assert.ok(e instanceof MergeError, String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.path, path);
    if (tensor) assert.equal(e.tensor, tensor);
    return true;
  });
}

describe("safetensors reader: every malformed-file code", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const p = (name: string) => join(dir.path, name);
  const ok = { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };

  it("FILE_TOO_SMALL: fewer than 8 bytes", async () => {
    writeFileSync(p("tiny"), Buffer.from([1, 2, 3]));
    await expectCode(p("tiny"), "FILE_TOO_SMALL");
  });
  it("FILE_TOO_SMALL: header length beyond the end of the file", async () => {
    craft(p("short"), ok, 8, { declaredLength: 10_000n });
    await expectCode(p("short"), "FILE_TOO_SMALL");
  });
  it("FILE_TOO_SMALL says how many bytes the header length needs (8 + N) and how many the file has", async () => {
    // The file is exactly N bytes long: "claims N bytes but the file has N" would be no explanation.
    const json = Buffer.from(JSON.stringify(ok));
    const n = json.length + 8 + 4;
    craft(p("exact"), ok, 0, { declaredLength: BigInt(n), trailing: 4 });
    assert.equal(readFileSync(p("exact")).length, n);
    await assert.rejects(readSafetensors(p("exact")), (e: unknown) => {
      assert.ok(e instanceof MergeError && e.code === "FILE_TOO_SMALL", String(e));
      const numbers = (e.message.slice(p("exact").length).match(/\d+/g) ?? []).map(Number);
      assert.ok(numbers.includes(n + 8), `${e.message}: names the ${n + 8} bytes needed`);
      assert.ok(numbers.includes(n), `${e.message}: names the file's ${n} bytes`);
      return true;
    });
  });
  it("HEADER_TOO_LARGE: declared length above the cap, even as a huge u64", async () => {
    craft(p("big"), ok, 8, { declaredLength: BigInt(MAX_HEADER_LENGTH) + 1n });
    await expectCode(p("big"), "HEADER_TOO_LARGE");
    craft(p("huge"), ok, 8, { declaredLength: 0xffffffffffffffffn });
    await expectCode(p("huge"), "HEADER_TOO_LARGE");
  });
  it("HEADER_NOT_UTF8", async () => {
    craft(p("utf8"), null, 0, { rawHeader: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) });
    await expectCode(p("utf8"), "HEADER_NOT_UTF8");
  });
  it("HEADER_NOT_JSON", async () => {
    craft(p("json"), null, 0, { rawHeader: Buffer.from('{"w": {') });
    await expectCode(p("json"), "HEADER_NOT_JSON");
  });
  it("HEADER_INVALID: not an object, or an entry that is not an object", async () => {
    craft(p("array"), [1, 2], 0);
    await expectCode(p("array"), "HEADER_INVALID");
    craft(p("entry"), { w: 5 }, 0);
    await expectCode(p("entry"), "HEADER_INVALID", "w");
  });
  it("METADATA_INVALID: __metadata__ values must be strings", async () => {
    craft(p("meta"), { __metadata__: { format: 1 }, ...ok }, 8);
    await expectCode(p("meta"), "METADATA_INVALID");
    craft(p("meta2"), { __metadata__: ["x"], ...ok }, 8);
    await expectCode(p("meta2"), "METADATA_INVALID");
  });
  it("DTYPE_UNSUPPORTED", async () => {
    craft(p("dtype"), { w: { dtype: "F128", shape: [1], data_offsets: [0, 16] } }, 16);
    await expectCode(p("dtype"), "DTYPE_UNSUPPORTED", "w");
  });
  it("SHAPE_INVALID: negative, fractional or non-array shapes", async () => {
    for (const shape of [[-1], [1.5], "3", [2 ** 60], [null]]) {
      craft(p("shape"), { w: { dtype: "F32", shape, data_offsets: [0, 4] } }, 4);
      await expectCode(p("shape"), "SHAPE_INVALID", "w");
    }
  });
  it("INVALID_OFFSET: malformed offsets, end before begin, a gap, an overlap", async () => {
    craft(p("o1"), { w: { dtype: "F32", shape: [2], data_offsets: [0] } }, 8);
    await expectCode(p("o1"), "INVALID_OFFSET", "w");
    craft(p("o2"), { w: { dtype: "F32", shape: [0], data_offsets: [8, 4] } }, 8);
    await expectCode(p("o2"), "INVALID_OFFSET", "w");
    craft(p("gap"), { w: { dtype: "F32", shape: [1], data_offsets: [0, 4] }, v: { dtype: "F32", shape: [1], data_offsets: [8, 12] } }, 12);
    await expectCode(p("gap"), "INVALID_OFFSET", "v");
    craft(p("overlap"), { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, v: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, 8);
    await expectCode(p("overlap"), "INVALID_OFFSET");
  });
  it("FILE_TRUNCATED: the tensors need more bytes than the file has", async () => {
    craft(p("past"), ok, 4);
    await expectCode(p("past"), "FILE_TRUNCATED");
  });
  it("SIZE_MISMATCH: byte range disagrees with dtype × shape", async () => {
    craft(p("size"), { w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8);
    await expectCode(p("size"), "SIZE_MISMATCH", "w");
  });
  it("SIZE_OVERFLOW: dtype × shape does not fit in 2^53 bytes", async () => {
    craft(p("overflow"), { w: { dtype: "F64", shape: [2 ** 26, 2 ** 26, 2 ** 26], data_offsets: [0, 8] } }, 8);
    await expectCode(p("overflow"), "SIZE_OVERFLOW", "w");
  });
  it("TRAILING_BYTES: data after the last tensor", async () => {
    craft(p("trail"), ok, 8, { trailing: 3 });
    await expectCode(p("trail"), "TRAILING_BYTES");
  });
  it("DUPLICATE_TENSOR: the writer refuses a name twice", () => {
    assert.throws(() => layoutSafetensors([{ name: "x", dtype: "F32", shape: [1] }, { name: "x", dtype: "F32", shape: [1] }]), (e: unknown) => e instanceof MergeError && e.code === "DUPLICATE_TENSOR");
  });
  it("FORMAT_UNKNOWN / FILE_NOT_FOUND through openModel", async () => {
    writeFileSync(p("junk.bin"), Buffer.from("hello world, not a model"));
    await assert.rejects(openModel(p("junk.bin")), (e: unknown) => e instanceof MergeError && e.code === "FORMAT_UNKNOWN");
    await assert.rejects(openModel(p("missing.safetensors")), (e: unknown) => e instanceof MergeError && e.code === "FILE_NOT_FOUND");
  });
});

describe("safetensors reader and writer: valid files", () => {
  const dir = tempDir();
  after(() => dir.cleanup());

  it("reads tensors, shapes, absolute offsets and metadata; accepts any key order and empty tensors", async () => {
    const path = join(dir.path, "m.safetensors");
    // keys listed out of data order, as some writers do
    const header = {
      b: { dtype: "F16", shape: [2], data_offsets: [8, 12] },
      __metadata__: { format: "pt", note: "ü" },
      a: { dtype: "F32", shape: [1, 2], data_offsets: [0, 8] },
      empty: { dtype: "I64", shape: [0, 3], data_offsets: [12, 12] },
      s: { dtype: "U8", shape: [], data_offsets: [12, 13] },
    };
    craft(path, header, 13);
    const m = await readSafetensors(path);
    const json = Buffer.from(JSON.stringify(header)).length;
    assert.deepEqual(m.tensors.map((t) => t.name), ["a", "b", "empty", "s"]);
    assert.equal(m.byName.get("b")!.offset, 8 + json + 8);
    assert.deepEqual(m.byName.get("a")!.shape, [1, 2]);
    assert.deepEqual(m.metadata, { format: "pt", note: "ü" });
    assert.equal(m.headerLength, 8 + json);
  });

  it("writer pads the header to 8 bytes with spaces, keeps the given order, and round-trips bytes", async () => {
    const src = join(dir.path, "src.safetensors");
    writeModel(src, { z: { dtype: "F32", shape: [3], values: [1, 2, 3] }, a: { dtype: "BF16", shape: [1], values: [0.5] }, i: { dtype: "I64", shape: [2], values: [7, -9] } }, { k: "v" });
    const m = await readSafetensors(src);
    const layout = layoutSafetensors(m.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })), m.metadata);
    assert.equal(layout.header.length % 8, 0);
    const jsonLen = Number(layout.header.readBigUInt64LE(0));
    assert.equal(jsonLen, layout.header.length - 8);
    assert.match(layout.header.subarray(8).toString(), /^\{"__metadata__":\{"k":"v"\},"z":.*\} *$/);
    const srcBytes = readFileSync(src);
    const out = Buffer.alloc(layout.size);
    layout.header.copy(out, 0);
    m.tensors.forEach((t, i) => srcBytes.copy(out, layout.offsets[i]!, t.offset, t.offset + t.byteLength));
    const dst = join(dir.path, "dst.safetensors");
    writeFileSync(dst, out);
    const back = await readSafetensors(dst);
    assert.deepEqual(back.tensors.map((t) => t.name), ["z", "a", "i"]);
    for (const t of back.tensors) {
      const orig = m.byName.get(t.name)!;
      assert.deepEqual(out.subarray(t.offset, t.offset + t.byteLength), srcBytes.subarray(orig.offset, orig.offset + orig.byteLength));
    }
    assert.deepEqual(back.metadata, { k: "v" });
  });
});
