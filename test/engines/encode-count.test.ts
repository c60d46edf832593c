/**
 * The TS engine counts the NaNs and infinities of an op's fp16 bytes while narrowing them
 * (conversions.ts narrowF16 with a count; js-codec.ts encode), instead of a second pass over
 * the bytes. Checked against an independent rule, written out here (fp16 holds Inf from |x| >=
 * 65520, half-way above 65504, and NaN from NaN), against countNonFinite over the same bytes,
 * and the bytes against the scalar definition (lib/dtypes f32BitsToF16), over every fp32 word
 * near the overflow threshold, every exponent and random words; then for the other dtypes,
 * encode's count against countNonFinite.
 */
import { strict as assert } from "node:assert";
import { f32BitsToF16 } from "../../lib/dtypes";
import { narrowF16 } from "../../lib/engine/conversions";
import { countNonFinite, encode } from "../../lib/engine/js-codec";
import { rng } from "../native/helpers";

function words(): Uint32Array {
  const list: number[] = [];
  // every fp32 word from 65408 (0x477f8000) to 65536 (0x47800000), both signs: the threshold
  for (let w = 0x477f8000; w <= 0x47800000; w++) list.push(w, (w | 0x80000000) >>> 0);
  // each exponent with a few mantissas, Inf and NaNs with payloads
  for (let e = 0; e < 256; e++) for (const m of [0, 1, 0x1000, 0x400000, 0x7fffff]) list.push((e << 23) | m, ((e << 23) | m | 0x80000000) >>> 0);
  const next = rng(99);
  for (let i = 0; i < 1 << 20; i++) list.push(Math.floor(next() * 2 ** 32) >>> 0);
  return Uint32Array.from(list);
}

describe("fp16 narrowing counts its non-finite results", () => {
  const src = words();
  const n = src.length;

  it("counts what the independent rule and countNonFinite count, with the scalar definition's bytes", () => {
    const dst = new Uint16Array(n), count = { nan: 0, inf: 0 };
    narrowF16(src, dst, n, count);
    const values = new Float32Array(src.buffer);
    const rule = { nan: 0, inf: 0 };
    for (let i = 0; i < n; i++) {
      const x = values[i]!;
      if (Number.isNaN(x)) rule.nan++;
      else if (Math.abs(x) >= 65520) rule.inf++;
      if (dst[i] !== f32BitsToF16(src[i]!)) assert.fail(`0x${src[i]!.toString(16)}: 0x${dst[i]!.toString(16)} vs 0x${f32BitsToF16(src[i]!).toString(16)}`);
    }
    assert.deepEqual(count, rule);
    const again = { nan: 0, inf: 0 };
    countNonFinite(new Uint8Array(dst.buffer), n, "F16", again);
    assert.deepEqual(again, rule);
    assert.ok(rule.inf > 30000 && rule.nan > 1000, `${rule.inf} infinities, ${rule.nan} NaNs`);
  });

  it("encode adds the same counts as countNonFinite for every output dtype", () => {
    const values = new Float32Array(src.buffer);
    for (const dtype of ["F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"] as const) {
      const size = { F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1 }[dtype];
      const out = new Uint8Array(n * size), counted = { nan: 2, inf: 3 }, want = { nan: 2, inf: 3 };
      encode(values, n, dtype, out, counted);
      countNonFinite(out, n, dtype, want);
      assert.deepEqual(counted, want, dtype);
    }
  });
});
