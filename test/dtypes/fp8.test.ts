/**
 * fp8 conversions, exhaustively: all 256 codes of each format widened, and ~2.9 million fp32
 * bit patterns narrowed (every upper half with six lower halves, every tie between two codes
 * and its neighbours, the overflow and subnormal edges, random patterns), in the TS functions
 * and in every native kernel set (forced ISA, 1 and 2 threads), against the independent
 * reference of fp8-reference.ts.
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { f32BitsToF8E4m3, f32BitsToF8E5m2, f8E4m3ToF32Bits, f8E5m2ToF32Bits } from "../../lib/dtypes";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import { makeJob, rng, tempDir } from "../native/helpers";
import { E4M3, E5M2, f32Bits, fp8Value, refF32BitsToFp8, refFp8ToF32Bits, type Fp8Format } from "./fp8-reference";

const FORMATS: [Fp8Format, (b: number) => number, (c: number) => number, number][] = [
  [E4M3, f32BitsToF8E4m3, f8E4m3ToF32Bits, 2],
  [E5M2, f32BitsToF8E5m2, f8E5m2ToF32Bits, 6],
];
const DT_F32 = 11;

/** The fp32 patterns every narrowing is checked on. */
function patterns(): Uint32Array {
  const out: number[] = [];
  for (let hi = 0; hi < 65536; hi++) for (const lo of [0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff]) out.push(((hi << 16) | lo) >>> 0);
  for (const f of [E4M3, E5M2]) {
    const values = [...Array(128).keys()].map((c) => fp8Value(f, c)).filter((v) => Number.isFinite(v)).sort((p, q) => p - q);
    values.push(f === E4M3 ? 480 : 65536); // the first value past the top, for the overflow ties
    for (let i = 0; i + 1 < values.length; i++) {
      const mid = f32Bits((values[i]! + values[i + 1]!) / 2); // exact: fp8 values are short
      for (const d of [-2, -1, 0, 1, 2]) for (const s of [0, 0x80000000]) out.push(((mid + d) | s) >>> 0);
      for (const s of [0, 0x80000000]) out.push((f32Bits(values[i]!) | s) >>> 0);
    }
  }
  const r = rng(77);
  for (let i = 0; i < 2_000_000; i++) out.push(Math.floor(r() * 4294967296) >>> 0);
  return Uint32Array.from(out);
}

describe("fp8 conversions (PyTorch's rules) against an independent reference", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-fp8-");
  after(() => dir.cleanup());
  let bits: Uint32Array;
  const expected = new Map<string, Uint8Array>();
  before(() => {
    bits = patterns();
    for (const [f] of FORMATS) expected.set(f.name, Uint8Array.from(bits, (b) => refF32BitsToFp8(f, b)));
  });

  it("the reference itself: PyTorch's published values (max, overflow, ties, subnormals)", () => {
    const e4 = (x: number) => refF32BitsToFp8(E4M3, f32Bits(x));
    const e5 = (x: number) => refF32BitsToFp8(E5M2, f32Bits(x));
    // torch.tensor([448, 464, 464.1, 480, 500, 1e9, inf, -inf, nan]).to(torch.float8_e4m3fn)
    assert.deepEqual([448, 464, 464.1, 480, 500, 1e9, Infinity, -Infinity, NaN].map(e4), [0x7e, 0x7e, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0xff, 0x7f]);
    assert.deepEqual([2 ** -9, 2 ** -10, 1.5 * 2 ** -10, 3 * 2 ** -10, -(2 ** -6)].map(e4), [0x01, 0x00, 0x01, 0x02, 0x88]);
    assert.deepEqual([57344, 61439, 61440, 65536, Infinity, -Infinity, NaN, 2 ** -16, 2 ** -17, 3 * 2 ** -17].map(e5), [0x7b, 0x7b, 0x7c, 0x7c, 0x7c, 0xfc, 0x7f, 0x01, 0x00, 0x02]);
  });

  for (const [f, narrow, widen, nanCount] of FORMATS) {
    it(`${f.name}: all 256 codes widen exactly (TS)`, () => {
      let nans = 0;
      for (let c = 0; c < 256; c++) {
        assert.equal(widen(c), refFp8ToF32Bits(f, c), `code 0x${c.toString(16)}`);
        if (f.isNaNCode(c)) nans++;
      }
      assert.equal(nans, nanCount);
    });

    it(`${f.name}: all 256 codes narrow back to themselves (NaN to S.1111111)`, () => {
      for (let c = 0; c < 256; c++) {
        const back = narrow(refFp8ToF32Bits(f, c));
        assert.equal(back, f.isNaNCode(c) ? (c & 0x80) | 0x7f : c, `code 0x${c.toString(16)}`);
      }
    });

    it(`${f.name}: 2.9M fp32 patterns narrow as the reference (TS)`, () => {
      const want = expected.get(f.name)!;
      let bad = 0, first = "";
      for (let i = 0; i < bits.length; i++) {
        const got = narrow(bits[i]!);
        if (got !== want[i]) {
          if (bad++ === 0) first = `0x${bits[i]!.toString(16)}: got 0x${got.toString(16)}, expected 0x${want[i]!.toString(16)}`;
        }
      }
      assert.equal(bad, 0, `${bad} mismatches, first ${first}`);
    });
  }

  for (const isa of ["scalar", "avx2", "avx512"] as const) {
    for (const threads of [1, 2]) {
      it(`native ${isa}, ${threads} thread(s): widening of all codes, narrowing and rounding of every pattern`, async function () {
        if (!capabilities().isas.includes(isa)) this.skip(); // the CPU lacks it
        const inPath = dir.file(`in-${isa}-${threads}.bin`);
        const codes = Uint8Array.from({ length: 256 * 3 + 5 }, (_, i) => (i * 7 + 3) & 0xff);
        // layout: [3 pad][fp32 patterns][codes]: odd offsets on purpose
        const image = Buffer.alloc(3 + bits.length * 4 + codes.length);
        Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength).copy(image, 3);
        image.set(codes, 3 + bits.length * 4);
        writeFileSync(inPath, image);
        const n = bits.length, nc = codes.length;
        const pieces = [];
        const outs: { name: string; offset: number; size: number }[] = [];
        let pos = 1;
        for (const [f] of FORMATS) {
          const dt = f === E4M3 ? 4 : 3;
          pieces.push({ name: `narrow-${f.name}`, n, ops: [], writes: [{ output: 0, offset: pos, dtype: dt, source: { kind: "input" as const, file: 0, offset: 3, dtype: DT_F32 } }] });
          outs.push({ name: `narrow-${f.name}`, offset: pos, size: n });
          pos += n + 1;
          pieces.push({ name: `widen-${f.name}`, n: nc, ops: [], writes: [{ output: 0, offset: pos, dtype: DT_F32, source: { kind: "input" as const, file: 0, offset: 3 + n * 4, dtype: dt } }] });
          outs.push({ name: `widen-${f.name}`, offset: pos, size: nc * 4 });
          pos += nc * 4 + 1;
          // copy rounded through fp8, stored as fp32: the round kernels
          pieces.push({ name: `round-${f.name}`, n, ops: [{ kernel: 0, args: [{ kind: "input" as const, file: 0, offset: 3, dtype: DT_F32 }], params: [], round: dt }], writes: [{ output: 0, offset: pos, dtype: DT_F32, source: { kind: "op" as const, index: 0 } }] });
          outs.push({ name: `round-${f.name}`, offset: pos, size: n * 4 });
          pos += n * 4 + 1;
        }
        const outPath = dir.file(`out-${isa}-${threads}.bin`);
        const result = await runNativeJob(makeJob({ inputs: [{ path: inPath, size: image.length }], outputs: [{ path: outPath, size: pos, literals: [] }], pieces, isa, threads }));
        assert.equal(result.isa, isa);
        const out = readFileSync(outPath);
        for (const [f] of FORMATS) {
          const want = expected.get(f.name)!;
          const narrowOut = outs.find((o) => o.name === `narrow-${f.name}`)!;
          const got = out.subarray(narrowOut.offset, narrowOut.offset + n);
          const at = got.findIndex((v, i) => v !== want[i]);
          assert.equal(at, -1, at < 0 ? "" : `${f.name} narrow of 0x${bits[at]!.toString(16)}: got 0x${got[at]!.toString(16)}, expected 0x${want[at]!.toString(16)}`);
          const widenOut = outs.find((o) => o.name === `widen-${f.name}`)!;
          for (let i = 0; i < nc; i++) assert.equal(out.readUInt32LE(widenOut.offset + 4 * i), refFp8ToF32Bits(f, codes[i]!), `${f.name} widen 0x${codes[i]!.toString(16)}`);
          const roundOut = outs.find((o) => o.name === `round-${f.name}`)!;
          for (let i = 0; i < n; i++) {
            const r = out.readUInt32LE(roundOut.offset + 4 * i);
            if (r !== refFp8ToF32Bits(f, want[i]!)) assert.fail(`${f.name} round of 0x${bits[i]!.toString(16)}: got 0x${r.toString(16)}`);
          }
        }
      });
    }
  }
});
