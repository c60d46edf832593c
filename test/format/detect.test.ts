/**
 * Format detection by what each format requires: a safetensors file whose header length begins
 * with the bytes of a pickle protocol marker (0x80 0x00…0x05) or of a zip signature is still
 * safetensors, and torch.save's files (zip, and legacy pickles of every protocol) are still
 * checkpoints.
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { detectFormat, detectFormatOf, openModel } from "../../lib/formats";
import { merge } from "../../lib/merge";
import { requireTorch, runPython } from "../ckpt/helpers";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir, writeModel } from "../helpers/models";

/** Every header length whose first two bytes are a pickle PROTO opcode: 0x80, protocol 0 to 5. */
const PICKLE_LIKE = [0x080, 0x180, 0x280, 0x380, 0x480, 0x580, 0x10280, 0x20480];

/** A valid safetensors file whose JSON header is exactly `n` bytes (padded with spaces). */
function writeWithHeaderLength(path: string, n: number, values: number[]): void {
  const json = `{"w":{"dtype":"F32","shape":[${values.length}],"data_offsets":[0,${values.length * 4}]}}`;
  if (json.length > n) throw new Error("header too small for the test tensor");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(n));
  const data = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => data.writeFloatLE(v, i * 4));
  writeFileSync(path, Buffer.concat([len, Buffer.from(json.padEnd(n, " ")), data]));
}

describe("format detection: each format by what it requires", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const b = join(dir.path, "b.safetensors");
  before(() => writeModel(b, { w: { dtype: "F32", shape: [4], values: [10, 20, 30, 40] } }));

  for (const n of PICKLE_LIKE) {
    it(`a safetensors header of 0x${n.toString(16)} bytes (starts ${(n & 0xff).toString(16)} ${((n >> 8) & 0xff).toString(16).padStart(2, "0")}) opens and merges`, async () => {
      const a = join(dir.path, `h${n.toString(16)}.safetensors`);
      writeWithHeaderLength(a, n, [2, 4, 6, 8]);
      assert.equal(await detectFormat(a), "safetensors");
      const m = await openModel(a);
      assert.equal(m.format, "safetensors");
      assert.equal(m.headerLength, 8 + n);
      for (const engine of ENGINES) {
        const out = join(dir.path, `h${n.toString(16)}-${engine}.safetensors`);
        await merge({ a, b, out, method: "weighted-sum", multiplier: 0.5, engine });
        assert.deepEqual(readModel(out).tensors.get("w")!.values, [6, 12, 18, 24]);
      }
    });
  }

  it("a truncated safetensors file whose header length looks like a pickle marker is reported as truncated", async () => {
    const a = join(dir.path, "cut-280.safetensors");
    writeWithHeaderLength(a, 0x280, [1, 2, 3, 4]);
    const whole = readFileSync(a);
    writeFileSync(a, whole.subarray(0, 0x200)); // an interrupted download: the header itself is cut
    await assert.rejects(openModel(a), (e: unknown) => e instanceof MergeError && e.code === "FILE_TOO_SMALL");
  });

  it("tensormerge reads back its own output when that header is 0x280 bytes", async () => {
    const a = join(dir.path, "own-a.safetensors");
    writeWithHeaderLength(a, 64, [2, 4, 6, 8]);
    const headerOf = (p: string) => {
      const buf = readFileSync(p);
      const n = Number(buf.readBigUInt64LE(0));
      return { n, unpadded: buf.subarray(8, 8 + n).toString().trimEnd().length };
    };
    // Size the metadata so the output's JSON is exactly 0x280 bytes (no padding needed).
    const first = join(dir.path, "own-probe.safetensors");
    await merge({ a, b, out: first, method: "weighted-sum", multiplier: 0.5, recipeMetadata: false, metadata: { filler: "x" } });
    const fill = "x".repeat(1 + 0x280 - headerOf(first).unpadded);
    const out = join(dir.path, "own-280.safetensors");
    await merge({ a, b, out, method: "weighted-sum", multiplier: 0.5, recipeMetadata: false, metadata: { filler: fill } });
    assert.equal(headerOf(out).n, 0x280);
    assert.equal((await openModel(out)).format, "safetensors");
    const again = join(dir.path, "own-again.safetensors");
    await merge({ a: out, b, out: again, method: "weighted-sum", multiplier: 0.5 });
    assert.deepEqual(readModel(again).tensors.get("w")!.values, [8, 16, 24, 32]);
  });

  it("decides from the first 9 bytes: '{' at byte 8 is safetensors, whatever N's bytes look like", () => {
    const head = (n: bigint, byte8: number) => {
      const h = Buffer.alloc(9);
      h.writeBigUInt64LE(n);
      h[8] = byte8;
      return h;
    };
    assert.equal(detectFormatOf(head(0x04034b50n, 0x7b)), "safetensors"); // N starts "PK\x03\x04"
    assert.equal(detectFormatOf(head(0x280n, 0x7b)), "safetensors");
    assert.equal(detectFormatOf(Buffer.from("504b0304140000000000", "hex")), "ckpt");
    assert.equal(detectFormatOf(Buffer.from("80028a0a6cfc9c46f9206a", "hex")), "pickle"); // torch.save, protocol 2
    assert.equal(detectFormatOf(Buffer.from("80049514000000000000", "hex")), "pickle"); // protocol 4: FRAME
    assert.equal(detectFormatOf(Buffer.from("8006", "hex")), "unknown");
    assert.equal(detectFormatOf(Buffer.from("hello")), "unknown");
  });

  it("torch.save files stay checkpoints: zip, and legacy pickles of protocols 2 to 5", async function () {
    requireTorch(this);
    const paths = ["zip", "p2", "p3", "p4", "p5"].map((k) => join(dir.path, `torch-${k}.ckpt`));
    runPython(String.raw`
import sys, torch
sd = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
torch.save(sd, sys.argv[1])
for p, path in zip((2, 3, 4, 5), sys.argv[2:]):
    torch.save(sd, path, _use_new_zipfile_serialization=False, pickle_protocol=p)
`, paths);
    for (const [i, p] of paths.entries()) {
      assert.equal(await detectFormat(p), i === 0 ? "ckpt" : "pickle", p);
      const m = await openModel(p);
      assert.equal(m.format, "ckpt");
      assert.deepEqual(m.tensors.map((t) => [t.name, t.shape]), [["w", [4]]]);
    }
  });
});
