/**
 * Tensor element types, with the safetensors spellings, and the exact scalar conversions
 * that both engines implement bit for bit (see native/core/convert.h).
 *
 * Rounding rules (shared with C++):
 * - f32 -> f16: round to nearest even, overflow to ±Inf, subnormals exact; NaN becomes a quiet
 *   NaN keeping the sign and the top 9 payload bits: `sign | 0x7e00 | (mantissa >> 13)`
 *   (what the F16C instruction vcvtps2ph produces).
 * - f32 -> bf16: round to nearest even on the upper 16 bits; NaN becomes `(bits >> 16) | 0x0040`.
 * - f16/bf16 -> f32 and f32 -> f64 are exact; f64 -> f32 rounds to nearest even.
 * - fp8 follows PyTorch (`tensor.to(torch.float8_e4m3fn)`, `.to(torch.float8_e5m2)`, `.float()`):
 *   - F8_E4M3 is e4m3fn (S.EEEE.MMM, bias 7, max 448, no infinity, NaN = S.1111.111). f32 -> e4m3fn
 *     rounds to nearest even as if the format went on past 448 (its next value would be 480): a
 *     result beyond 448 (|x| > 464; 464 ties to the even 448), ±Inf and NaN all become
 *     `sign | 0x7f`, the NaN (PyTorch does not saturate); below 2^-6 results are subnormal
 *     multiples of 2^-9, rounded to nearest even (|x| <= 2^-10 gives ±0).
 *   - F8_E5M2 (S.EEEEE.MM, bias 15, max 57344, with ±Inf): round to nearest even; |x| >= 61440 and
 *     ±Inf become ±Inf (0x7c), NaN becomes `sign | 0x7f`; subnormals are multiples of 2^-16.
 *   - widening is exact for numbers; NaN codes widen as PyTorch's scalar path does: e4m3fn
 *     S.1111.111 -> `sign | 0x7ff00000`; e5m2 through fp16, quieted: 0x7d/0x7f -> `sign | 0x7fe00000`,
 *     0x7e -> `sign | 0x7fc00000`.
 */

export const DTYPES = [
  "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
  "I32", "U32", "F32", "F64", "I64", "U64",
] as const;
export type Dtype = (typeof DTYPES)[number];

/** Numeric ids shared with C++ (`enum st_dtype` in native/core/dtype.h). Never reorder. */
export const DTYPE_ID: Record<Dtype, number> = Object.fromEntries(DTYPES.map((d, i) => [d, i])) as Record<Dtype, number>;

export const DTYPE_SIZE: Record<Dtype, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};

/** Float types the engines compute with (math is always in fp32). */
export const MATH_DTYPES: readonly Dtype[] = ["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"];
/** Types a merge may write float results as. */
export const OUTPUT_DTYPES = ["fp16", "bf16", "fp32", "fp8-e4m3", "fp8-e5m2"] as const;
export type OutputDtype = (typeof OUTPUT_DTYPES)[number];
export const OUTPUT_DTYPE_TO_DTYPE: Record<OutputDtype, Dtype> = {
  fp16: "F16", bf16: "BF16", fp32: "F32", "fp8-e4m3": "F8_E4M3", "fp8-e5m2": "F8_E5M2",
};

export function isDtype(value: unknown): value is Dtype {
  return typeof value === "string" && (DTYPES as readonly string[]).includes(value);
}
export function isMathDtype(d: Dtype): boolean {
  return MATH_DTYPES.includes(d);
}
/** Float types narrower than fp32: a result stored as one (or fed on as one) is rounded through it. */
export function isNarrowFloat(d: Dtype): boolean {
  return d === "F16" || d === "BF16" || d === "F8_E4M3" || d === "F8_E5M2";
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToBits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}
export function bitsToF32(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}

/** fp32 bits -> fp16 bits, round to nearest even. */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const man = bits & 0x7fffff;
  if (exp === 0xff) return man !== 0 ? sign | 0x7e00 | (man >>> 13) : sign | 0x7c00;
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const m = man | 0x800000;
    const shift = 14 - e; // 14..24
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // may carry into Inf: correct
  return sign | half;
}

/** fp16 bits -> fp32 bits (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man << 13)) >>> 0;
  if (exp === 0) {
    if (man === 0) return sign >>> 0;
    let e = 127 - 15 + 1;
    while ((man & 0x400) === 0) { man <<= 1; e--; }
    return (sign | (e << 23) | ((man & 0x3ff) << 13)) >>> 0;
  }
  return (sign | ((exp + 127 - 15) << 23) | (man << 13)) >>> 0;
}

/** fp32 bits -> bf16 bits, round to nearest even. */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

/** Lookup table of every fp16 widened to fp32, built once. */
let f16Table: Float32Array | undefined;
export function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    const bits = new Uint32Array(f16Table.buffer);
    for (let h = 0; h < 65536; h++) bits[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

/** fp32 bits -> F8_E4M3 (e4m3fn) code, PyTorch's rule (see the top of this file). */
export function f32BitsToF8E4m3(bits: number): number {
  const sign = (bits >>> 24) & 0x80;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x43f00000) return sign | 0x7f; // >= 480, Inf, NaN (464 < |x| < 480 rounds to 0x7f below)
  if (abs < 0x3c800000) { // below 2^-6: a multiple of 2^-9
    if (abs <= 0x3a800000) return sign; // <= 2^-10: ties to the even 0
    return sign | roundShiftRne((abs & 0x7fffff) | 0x800000, 141 - (abs >>> 23));
  }
  return sign | roundShiftRne(abs - ((127 - 7) << 23), 20); // a carry moves into the exponent
}

/** fp32 bits -> F8_E5M2 code, PyTorch's rule. */
export function f32BitsToF8E5m2(bits: number): number {
  const sign = (bits >>> 24) & 0x80;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7f; // NaN
  if (abs >= 0x47800000) return sign | 0x7c; // >= 65536, Inf
  if (abs < 0x38800000) { // below 2^-14: a multiple of 2^-16
    if (abs <= 0x37000000) return sign; // <= 2^-17
    return sign | roundShiftRne((abs & 0x7fffff) | 0x800000, 134 - (abs >>> 23));
  }
  return sign | roundShiftRne(abs - ((127 - 15) << 23), 21); // 61440 and up carry into Inf
}

/** m / 2^shift rounded to nearest even (m < 2^31, shift 1..30). */
function roundShiftRne(m: number, shift: number): number {
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const mid = 1 << (shift - 1);
  if (rem > mid || (rem === mid && (q & 1) === 1)) q++;
  return q;
}

export function f8E4m3ToF32Bits(c: number): number {
  const sign = (c & 0x80) << 24;
  const exp = (c >>> 3) & 0xf, man = c & 7;
  if (exp === 0xf && man === 7) return (sign | 0x7ff00000) >>> 0;
  if (exp !== 0) return (sign | ((exp + 127 - 7) << 23) | (man << 20)) >>> 0;
  if (man === 0) return sign >>> 0;
  let e = 127 - 7 + 1, m = man; // subnormal: normalise
  while ((m & 8) === 0) { m <<= 1; e--; }
  return (sign | (e << 23) | ((m & 7) << 20)) >>> 0;
}

export function f8E5m2ToF32Bits(c: number): number {
  const bits = f16BitsToF32Bits(c << 8);
  return ((bits & 0x7fffffff) > 0x7f800000 ? bits | 0x00400000 : bits) >>> 0; // quiet NaNs
}

/** Every fp8 code widened to fp32 bits (256 entries), built once. */
let f8Tables: { F8_E4M3: Uint32Array; F8_E5M2: Uint32Array } | undefined;
export function f8ToF32BitsTable(dtype: "F8_E4M3" | "F8_E5M2"): Uint32Array {
  if (!f8Tables) {
    f8Tables = { F8_E4M3: new Uint32Array(256), F8_E5M2: new Uint32Array(256) };
    for (let c = 0; c < 256; c++) {
      f8Tables.F8_E4M3[c] = f8E4m3ToF32Bits(c);
      f8Tables.F8_E5M2[c] = f8E5m2ToF32Bits(c);
    }
  }
  return f8Tables[dtype];
}
