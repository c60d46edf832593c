import { strict as assert } from "node:assert";
import { getFloat16, setFloat16 } from "@petamoriken/float16";
import { bf16BitsToF32Bits, bitsToF32, f16BitsToF32Bits, f32BitsToBf16, f32BitsToF16, f32ToBits } from "../../lib/dtypes";
import { bf16FromF32, f16BitsOfF32 } from "../helpers/models";

const dv = new DataView(new ArrayBuffer(8));
function referenceF16(x: number): number {
  setFloat16(dv, 0, x, true);
  return dv.getUint16(0, true);
}

describe("dtype conversions (lib/dtypes.ts) against independent implementations", () => {
  it("widens all 65,536 halves exactly as @petamoriken/float16 does", () => {
    for (let h = 0; h < 65536; h++) {
      dv.setUint16(0, h, true);
      const expected = getFloat16(dv, 0, true);
      const actual = bitsToF32(f16BitsToF32Bits(h));
      if (Number.isNaN(expected)) {
        assert.ok(Number.isNaN(actual), `half ${h.toString(16)}`);
        // payload kept: widening then narrowing gives the same half back
        assert.equal(f32BitsToF16(f16BitsToF32Bits(h)), h | 0x200, `NaN payload of ${h.toString(16)}`);
      } else {
        assert.ok(Object.is(actual, expected), `half 0x${h.toString(16)}: ${actual} vs ${expected}`);
      }
    }
  });

  it("rounds fp32 to fp16 like @petamoriken/float16 over edge and 2M random values", () => {
    const edges: number[] = [0, -0, Infinity, -Infinity, 65504, 65519.99, 65520, -65520, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, 1.00048828125, 1.000732421875, 2049, 2051];
    for (let e = -30; e <= 17; e++) for (const m of [1, 1.0004882, 1.00048828125, 1.000732421875, 1.5, 1.99951171875, 1.999755859375]) edges.push(m * 2 ** e, -m * 2 ** e);
    // every half's midpoint to its neighbour: the ties that decide round-to-nearest-even
    for (let h = 0; h < 0x7bff; h += 7) {
      dv.setUint16(0, h, true);
      const lo = getFloat16(dv, 0, true);
      dv.setUint16(0, h + 1, true);
      const hi = getFloat16(dv, 0, true);
      edges.push(Math.fround((lo + hi) / 2));
    }
    let s = 12345;
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    for (let i = 0; i < 2_000_000; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      bits[0] = (s & 0x8fffffff) | (((s >>> 8) & 0x3f) << 24) | ((s >>> 3) & 0x7fffff); // exponents near fp16's range
      edges.push(f[0]!);
    }
    for (const x of edges) {
      const fx = Math.fround(x);
      if (Number.isNaN(fx)) continue;
      const ours = f32BitsToF16(f32ToBits(fx));
      const ref = referenceF16(fx);
      if (ours !== ref) assert.fail(`fp32 ${fx} (0x${f32ToBits(fx).toString(16)}): ours 0x${ours.toString(16)} reference 0x${ref.toString(16)}`);
    }
  });

  it("turns fp32 NaN into a quiet fp16 NaN keeping sign and top payload bits", () => {
    assert.equal(f32BitsToF16(0x7fc00000), 0x7e00);
    assert.equal(f32BitsToF16(0xffc00000), 0xfe00);
    assert.equal(f32BitsToF16(0x7f800001), 0x7e00); // signalling NaN with a low payload stays NaN
    assert.equal(f32BitsToF16(0x7fa00000), 0x7e00 | (0x200000 >>> 13));
  });

  it("rounds fp32 to bf16 like an independent bit formula, NaN kept", () => {
    let s = 99;
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    for (let i = 0; i < 2_000_000; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      bits[0] = i < 1000 ? (0x3f800000 + (i << 15)) | 0x8000 : s; // first: exact ties
      const x = f[0]!;
      const ours = f32BitsToBf16(bits[0]!);
      const ref = bf16FromF32(x);
      if (ours !== ref) assert.fail(`0x${bits[0]!.toString(16)}: ours 0x${ours.toString(16)} ref 0x${ref.toString(16)}`);
    }
    assert.equal(f32BitsToBf16(0x7f800000), 0x7f80); // +Inf
    assert.equal(f32BitsToBf16(0x7f7fffff), 0x7f80); // max float rounds up to Inf
    assert.equal(bitsToF32(bf16BitsToF32Bits(0x3f80)), 1);
  });

  it("the fixtures' fast fp16 formula (test/helpers f16BitsOfF32) gives @petamoriken/float16's bits", function () {
    this.timeout(60000);
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    let checked = 0;
    const check = (): void => {
      const x = f[0]!;
      const ours = f16BitsOfF32(x);
      if (Number.isNaN(x)) return assert.equal(ours, -1, "a NaN is left to setFloat16");
      if (ours !== referenceF16(x)) assert.fail(`0x${bits[0]!.toString(16)} (${x}): ours 0x${ours.toString(16)} ref 0x${referenceF16(x).toString(16)}`);
      checked++;
    };
    // every exponent, both signs, mantissas around the 13 dropped bits' tie
    for (let e = 0; e < 256; e++)
      for (const sign of [0, 1])
        for (const m of [0, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x3001, 0x400000, 0x401000, 0x402000, 0x7fe000, 0x7fefff, 0x7ff000, 0x7fffff]) {
          bits[0] = ((sign << 31) | (e << 23) | m) >>> 0;
          check();
        }
    // the subnormal range and its edges (2^-25 and below round to 0), and the overflow edge at 65520
    for (let b = 0x33000000 - 4096; b < 0x38900000; b += 61) (bits[0] = b), check();
    for (let b = 0x477fe000; b < 0x47800010; b++) (bits[0] = b), check();
    let s = 4242;
    for (let i = 0; i < 500_000; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      bits[0] = s;
      check();
    }
    assert.equal(f16BitsOfF32(0.1), -1, "a double that is not an fp32 is left to setFloat16 (one rounding)");
    assert.ok(checked > 500_000);
  });
});
