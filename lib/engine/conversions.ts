/**
 * Table-driven array conversions for the TS engine: the same bits as the scalar conversions in
 * lib/dtypes.ts (the definitions, kept as they are), several times faster per element.
 *
 * - Widening: fp16 by an asm.js rebias (asm-kernels.ts; f16WidenTable holds the same bits), bf16
 *   by a shift, fp8 by 256-entry tables.
 *   Values move as bits (Uint32Array), never through a JS number, so NaN payloads survive.
 * - fp32 -> fp16: for results in the normal range an integer rebias-and-round (narrowF16); else
 *   the classic exponent-indexed table method. The sign and exponent (the top 9
 *   bits) select a base and a shift; the result is `base + rne(mantissa | implicit bit, shift)`,
 *   the rounding done as `(m + half - 1 + lsb) >> shift`. A carry out of the mantissa moves into
 *   the exponent (and from the largest finite value into Inf), exactly as the scalar code.
 *   Only Inf/NaN (exponent 255) take a branch.
 * - fp32 -> fp8: for both formats the rounding (guard) bit lies in the top 16 bits of the fp32
 *   word, so the result depends only on those 16 bits and on whether the low 16 are all zero
 *   (the sticky part of a tie). One 131072-entry table indexed by `hi16 << 1 | (lo16 != 0)`,
 *   filled from the scalar conversion, is therefore exact for every fp32 value.
 */
import { runAsm } from "./asm-kernels";
import {
  f16BitsToF32Bits, f32BitsToBf16, f32BitsToF8E4m3, f32BitsToF8E5m2, f8ToF32BitsTable,
} from "../dtypes";

let f16Widen: Uint32Array | undefined;
/** fp16 bits -> fp32 bits for every fp16 code. */
export function f16WidenTable(): Uint32Array {
  if (!f16Widen) {
    f16Widen = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Widen[h] = f16BitsToF32Bits(h);
  }
  return f16Widen;
}

interface HalfTables { base: Int32Array; shift: Uint8Array; bias: Int32Array }
let halfTables: HalfTables | undefined;
/** Per sign+exponent (512 entries): the fp16 base bits, the mantissa shift and its rounding bias. */
export function f16NarrowTables(): HalfTables {
  if (halfTables) return halfTables;
  const base = new Int32Array(512), shift = new Uint8Array(512), bias = new Int32Array(512);
  for (let se = 0; se < 512; se++) {
    const sign = (se & 0x100) << 7;
    const e = (se & 0xff) - 127 + 15; // the fp16 exponent the value would have
    let b: number, s: number;
    if (e >= 0x1f) { b = sign | 0x7c00; s = 25; } // overflow (and Inf; NaN is branched on)
    else if (e >= 1) { b = sign | ((e - 1) << 10); s = 13; } // normal: the implicit bit adds the 1
    else if (e >= -10) { b = sign; s = 14 - e; } // subnormal result, 14..24
    else { b = sign; s = 25; } // m < 2^24 = the half point: rounds to ±0
    base[se] = b;
    shift[se] = s;
    bias[se] = (1 << (s - 1)) - 1;
  }
  halfTables = { base, shift, bias };
  return halfTables;
}

/** fp32 bits -> fp16 bits by the tables: equal to dtypes.f32BitsToF16 for every input. */
export function f32BitsToF16ByTable(bits: number): number {
  const { base, shift, bias } = f16NarrowTables();
  const se = bits >>> 23;
  if ((se & 0xff) === 0xff) {
    const man = bits & 0x7fffff;
    return ((bits >>> 16) & 0x8000) | (man !== 0 ? 0x7e00 | (man >>> 13) : 0x7c00);
  }
  const m = (bits & 0x7fffff) | 0x800000;
  const s = shift[se]!;
  return base[se]! + ((m + bias[se]! + ((m >>> s) & 1)) >>> s);
}

const f8Narrow: { F8_E4M3?: Uint8Array; F8_E5M2?: Uint8Array } = {};
/** fp32 -> fp8 code indexed by `(bits >>> 16) << 1 | (bits & 0xffff ? 1 : 0)` (see the top). */
export function f8NarrowTable(dtype: "F8_E4M3" | "F8_E5M2"): Uint8Array {
  let t = f8Narrow[dtype];
  if (!t) {
    const convert = dtype === "F8_E4M3" ? f32BitsToF8E4m3 : f32BitsToF8E5m2;
    t = new Uint8Array(131072);
    for (let hi = 0; hi < 65536; hi++) {
      t[hi << 1] = convert((hi << 16) >>> 0);
      t[(hi << 1) | 1] = convert(((hi << 16) | 1) >>> 0);
    }
    f8Narrow[dtype] = t;
  }
  return t;
}

export function f32BitsToF8ByTable(bits: number, dtype: "F8_E4M3" | "F8_E5M2"): number {
  return f8NarrowTable(dtype)[((bits >>> 16) << 1) | (((bits & 0xffff) + 0xffff) >>> 16)]!;
}

/** fp16 bits -> fp32 bits: asm-kernels.ts widenF16 (the same bits as f16WidenTable's entries). */
export function widenF16(src: Uint16Array, dst: Uint32Array, n: number): void {
  runAsm(({ k }, [from, to], len) => {
    k.widenF16(from!, to!, len);
    return 0;
  }, dst, [src], n);
}

export function widenBf16(src: Uint16Array, dst: Uint32Array, n: number): void {
  for (let i = 0; i < n; i++) dst[i] = src[i]! << 16;
}

export function widenF8(src: Uint8Array, dst: Uint32Array, n: number, dtype: "F8_E4M3" | "F8_E5M2"): void {
  const table = f8ToF32BitsTable(dtype);
  for (let i = 0; i < n; i++) dst[i] = table[src[i]!]!;
}

/**
 * fp32 bits -> fp16 bits. With `count`, also adds the NaNs and infinities among the results to
 * it (what countNonFinite would find in `dst`), at no cost to the common element: the integer
 * path takes only |x| < 65520, whose results are finite, and the other path counts.
 */
export function narrowF16(src: Uint32Array, dst: Uint16Array, n: number, count?: { nan: number; inf: number }): void {
  // asm-kernels.ts narrowF16: the loop below as asm.js (no per-element checks), where it runs
  let nan = 0, inf = 0;
  runAsm(({ k, counts, wasmNarrowF16 }, [from, to], len) => {
    if (wasmNarrowF16) wasmNarrowF16(from!, to!, len); // the same bits and counts in SIMD128
    else k.narrowF16(from!, to!, len);
    nan += counts[0]!;
    inf += counts[1]!;
    return 0;
  }, dst, [src], n);
  if (count) {
    count.nan += nan;
    count.inf += inf;
  }
}

export function narrowBf16(src: Uint32Array, dst: Uint16Array, n: number): void {
  for (let i = 0; i < n; i++) dst[i] = f32BitsToBf16(src[i]!);
}

export function narrowF8(src: Uint32Array, dst: Uint8Array, n: number, dtype: "F8_E4M3" | "F8_E5M2"): void {
  const table = f8NarrowTable(dtype);
  for (let i = 0; i < n; i++) {
    const bits = src[i]!;
    dst[i] = table[((bits >>> 16) << 1) | (((bits & 0xffff) + 0xffff) >>> 16)]!;
  }
}
