/**
 * The TS engine's table-driven conversions (lib/engine/conversions.ts) against an independent
 * formula written here: round to nearest even in doubles (exact for these ranges), overflow and
 * NaN rules as documented in lib/dtypes.ts, then the code assembled from sign, exponent and
 * mantissa. Coverage: every fp16/fp8 code widened; fp32 -> fp8 for every top-16-bit pattern
 * with several low halves (zero, one, the top bit, all ones, random), which is every case the
 * table distinguishes; fp32 -> fp16 for every sign+exponent with all 2^13 low mantissa bits under
 * a set of high patterns, every subnormal-result tie and its neighbours, and 4M random words.
 * The scalar conversions of lib/dtypes.ts must agree on the same inputs (the engines' contract).
 */
import { strict as assert } from "node:assert";
import { HEAP_RESERVED, asmHeap } from "../../lib/engine/asm-kernels";
import { f32BitsToF16, f32BitsToF8E4m3, f32BitsToF8E5m2 } from "../../lib/dtypes";
import {
  f16WidenTable, f32BitsToF16ByTable, f32BitsToF8ByTable, narrowF16, narrowF8, widenBf16, widenF16, widenF8,
} from "../../lib/engine/conversions";

interface Format { manBits: number; expBits: number; bias: number; maxFinite: number; overflow: number; inf: number; nan: (man: number) => number }
const F16: Format = { manBits: 10, expBits: 5, bias: 15, maxFinite: 65504, overflow: 0x7c00, inf: 0x7c00, nan: (man) => 0x7e00 | (man >>> 13) };
const E4M3: Format = { manBits: 3, expBits: 4, bias: 7, maxFinite: 448, overflow: 0x7f, inf: 0x7f, nan: () => 0x7f };
const E5M2: Format = { manBits: 2, expBits: 5, bias: 15, maxFinite: 57344, overflow: 0x7c, inf: 0x7c, nan: () => 0x7f };

/** fp32 bits -> code of `fmt`, by arithmetic on the value (no bit tricks on the input word). */
function reference(bits: number, fmt: Format): number {
  const signCode = bits >>> 31 ? 1 << (fmt.manBits + fmt.expBits) : 0;
  const exp = (bits >>> 23) & 0xff, man = bits & 0x7fffff;
  if (exp === 0xff) return signCode | (man !== 0 ? fmt.nan(man) : fmt.inf);
  const a = exp === 0 ? man * 2 ** -149 : (1 + man / 2 ** 23) * 2 ** (exp - 127);
  const emin = 1 - fmt.bias;
  const e = exp === 0 ? -127 : exp - 127;
  const quantum = 2 ** (Math.max(e, emin) - fmt.manBits);
  const r = a / quantum, fl = Math.floor(r), d = r - fl;
  const n = d > 0.5 ? fl + 1 : d < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
  const v = n * quantum;
  if (v > fmt.maxFinite) return signCode | fmt.overflow;
  if (v < 2 ** emin) return signCode | (v / 2 ** (emin - fmt.manBits)); // subnormal (or the first normal)
  let E = Math.max(e, emin);
  if (v >= 2 ** (E + 1)) E++;
  return signCode | ((E + fmt.bias) << fmt.manBits) | (v / 2 ** (E - fmt.manBits) - 2 ** fmt.manBits);
}

/** Widened value of a code by its definition, as fp32 bits (NaN rules as documented). */
function widenReference(code: number, fmt: Format, nanBits: (code: number) => number): number {
  const total = fmt.manBits + fmt.expBits;
  const sign = code >>> total ? -1 : 1;
  const exp = (code >>> fmt.manBits) & ((1 << fmt.expBits) - 1), man = code & ((1 << fmt.manBits) - 1);
  const isE4m3 = fmt === E4M3;
  if (isE4m3 ? exp === 15 && man === 7 : exp === (1 << fmt.expBits) - 1) {
    if (man === 0) return sign < 0 ? 0xff800000 : 0x7f800000;
    return nanBits(code) >>> 0;
  }
  const v = exp === 0 ? man * 2 ** (1 - fmt.bias - fmt.manBits) : (1 + man / 2 ** fmt.manBits) * 2 ** (exp - fmt.bias);
  const f = new Float32Array([sign * v]);
  return new Uint32Array(f.buffer)[0]!;
}

let seed = 12345;
const random32 = (): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);

function checkNarrow(words: Uint32Array, fmt: Format, name: string, byTable: (b: number) => number, scalar: (b: number) => number, array: (src: Uint32Array, dst: Uint8Array | Uint16Array) => void): void {
  const out = fmt === F16 ? new Uint16Array(words.length) : new Uint8Array(words.length);
  array(words, out);
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    const expected = reference(w, fmt);
    const got = [byTable(w), out[i]!, scalar(w)];
    if (got[0] !== expected || got[1] !== expected || got[2] !== expected) {
      assert.fail(`${name}: 0x${w.toString(16)} -> expected 0x${expected.toString(16)}, table 0x${got[0]!.toString(16)}, array 0x${got[1]!.toString(16)}, scalar 0x${got[2]!.toString(16)}`);
    }
  }
}

describe("engine conversion tables against an independent formula", function () {
  this.timeout(300_000);

  it("widens every fp16 and bf16 code", () => {
    const f16Nan = (h: number): number => ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
    const codes = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const f16 = new Uint32Array(65536), bf16 = new Uint32Array(65536);
    widenF16(codes, f16, 65536);
    widenBf16(codes, bf16, 65536);
    // the asm kernel also where the chunk loop runs it: codes and results in one asm heap
    const heap = asmHeap(HEAP_RESERVED + 6 * 65536);
    const heapCodes = new Uint16Array(heap, HEAP_RESERVED, 65536), heapF16 = new Uint32Array(heap, HEAP_RESERVED + 2 * 65536, 65536);
    heapCodes.set(codes);
    widenF16(heapCodes, heapF16, 65536);
    for (let h = 0; h < 65536; h++) {
      assert.equal(f16[h], widenReference(h, F16, f16Nan), `fp16 0x${h.toString(16)}`);
      assert.equal(heapF16[h], f16[h], `fp16 0x${h.toString(16)} in an asm heap`);
      assert.equal(f16WidenTable()[h], f16[h]);
      assert.equal(bf16[h], h * 65536, `bf16 0x${h.toString(16)}`);
    }
  });

  it("widens every fp8 code (NaNs as PyTorch's scalar path)", () => {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (const [dtype, fmt, nan] of [
      ["F8_E4M3", E4M3, (c: number) => ((c & 0x80) << 24) | 0x7ff00000],
      ["F8_E5M2", E5M2, (c: number) => ((c & 0x80) << 24) | ((c & 0x7f) === 0x7e ? 0x7fc00000 : 0x7fe00000)],
    ] as const) {
      const out = new Uint32Array(256);
      widenF8(codes, out, 256, dtype);
      for (let c = 0; c < 256; c++) assert.equal(out[c], widenReference(c, fmt, nan), `${dtype} 0x${c.toString(16)}`);
    }
  });

  for (const [dtype, fmt, scalar] of [["F8_E4M3", E4M3, f32BitsToF8E4m3], ["F8_E5M2", E5M2, f32BitsToF8E5m2]] as const) {
    it(`narrows fp32 -> ${dtype}: every top half with zero, one, 0x8000, 0xffff and a random low half`, () => {
      const words = new Uint32Array(65536 * 5);
      for (let hi = 0; hi < 65536; hi++) {
        const lows = [0, 1, 0x8000, 0xffff, (random32() & 0xffff) | 1];
        for (let k = 0; k < 5; k++) words[hi * 5 + k] = ((hi << 16) | lows[k]!) >>> 0;
      }
      checkNarrow(words, fmt, dtype, (b) => f32BitsToF8ByTable(b, dtype), scalar, (s, d) => narrowF8(s, d as Uint8Array, s.length, dtype));
    });
  }

  it("narrows fp32 -> fp16: every exponent × all low 13 bits × high patterns, every subnormal tie, 4M random", () => {
    const highs = [0, 1, 2, 0x155, 0x2aa, 0x3fe, 0x3ff];
    const words = new Uint32Array(512 * 8192 * highs.length);
    let k = 0;
    for (let se = 0; se < 512; se++) for (const h of highs) for (let lo = 0; lo < 8192; lo++) words[k++] = ((se << 23) | (h << 13) | lo) >>> 0;
    checkNarrow(words, F16, "fp16", f32BitsToF16ByTable, f32BitsToF16, (s, d) => narrowF16(s, d as Uint16Array, s.length));

    // results below 2^-14 round at bit 14..24: each tie (and ±1) for 1024 mantissa quotients
    const ties: number[] = [];
    for (let exp = 101; exp <= 113; exp++) {
      const shift = Math.min(25, 14 - (exp - 127 + 15));
      for (let q = 0; q < 1024; q++) {
        const mid = 2 ** (shift - 1);
        const m = q * 2 ** shift + mid; // the full significand with its implicit bit
        if (m < 0x800000 || m >= 0x1000000) continue;
        for (const d of [-1, 0, 1]) for (const sign of [0, 0x80000000]) ties.push((sign | (exp << 23) | ((m + d) & 0x7fffff)) >>> 0);
      }
    }
    checkNarrow(Uint32Array.from(ties), F16, "fp16 ties", f32BitsToF16ByTable, f32BitsToF16, (s, d) => narrowF16(s, d as Uint16Array, s.length));

    const randomWords = Uint32Array.from({ length: 4_000_000 }, random32);
    checkNarrow(randomWords, F16, "fp16 random", f32BitsToF16ByTable, f32BitsToF16, (s, d) => narrowF16(s, d as Uint16Array, s.length));
  });
});
