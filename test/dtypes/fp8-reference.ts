/**
 * An fp8 reference written from the formats' definitions, independent of lib/dtypes.ts and
 * native/core/convert.h (which work on bits): values are computed in double arithmetic, and
 * fp32 -> fp8 rounds by scaling to the format's quantum and rounding the quotient to nearest
 * even, then applies PyTorch's out-of-range rules:
 * - e4m3fn (`torch.float8_e4m3fn`): a result beyond 448 is NaN (S.1111.111), there is no Inf;
 * - e5m2 (`torch.float8_e5m2`): a result beyond 57344 is ±Inf; NaN is S.11111.11.
 * NaN codes widen to PyTorch's scalar-path bits (documented in lib/dtypes.ts).
 */
export interface Fp8Format {
  name: "F8_E4M3" | "F8_E5M2";
  manBits: number;
  bias: number;
  max: number;
  /** Bits of each NaN code (without sign) widened to fp32. */
  nanBits: (code: number) => number;
  isNaNCode: (code: number) => boolean;
  isInfCode: (code: number) => boolean;
  overflowCode: number;
}

export const E4M3: Fp8Format = {
  name: "F8_E4M3", manBits: 3, bias: 7, max: 448,
  nanBits: () => 0x7ff00000,
  isNaNCode: (c) => (c & 0x7f) === 0x7f,
  isInfCode: () => false,
  overflowCode: 0x7f,
};
export const E5M2: Fp8Format = {
  name: "F8_E5M2", manBits: 2, bias: 15, max: 57344,
  nanBits: (c) => ((c & 3) === 2 ? 0x7fc00000 : 0x7fe00000),
  isNaNCode: (c) => (c & 0x7f) > 0x7c,
  isInfCode: (c) => (c & 0x7f) === 0x7c,
  overflowCode: 0x7c,
};

/** The real value of a code (NaN for NaN codes, ±Infinity for e5m2's Inf). */
export function fp8Value(f: Fp8Format, code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  if (f.isNaNCode(code)) return NaN;
  if (f.isInfCode(code)) return sign * Infinity;
  const expBits = 7 - f.manBits;
  const e = (code >> f.manBits) & ((1 << expBits) - 1);
  const m = code & ((1 << f.manBits) - 1);
  const scale = 2 ** f.manBits;
  return e === 0 ? sign * (m / scale) * 2 ** (1 - f.bias) : sign * (1 + m / scale) * 2 ** (e - f.bias);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}
export function f32FromBits(b: number): number {
  u32[0] = b >>> 0;
  return f32[0]!;
}

/** A code widened to fp32 bits. */
export function refFp8ToF32Bits(f: Fp8Format, code: number): number {
  if (f.isNaNCode(code)) return ((code & 0x80 ? 0x80000000 : 0) | f.nanBits(code & 0x7f)) >>> 0;
  const v = fp8Value(f, code);
  return v === 0 ? (code & 0x80 ? 0x80000000 : 0) : f32Bits(v);
}

/** Positive finite codes by value, to encode a rounded value. */
const codeOf = new Map<string, Map<number, number>>();
function encodePositive(f: Fp8Format, v: number): number {
  let m = codeOf.get(f.name);
  if (!m) {
    m = new Map();
    for (let c = 0; c < 0x80; c++) if (!f.isNaNCode(c) && !f.isInfCode(c)) m.set(fp8Value(f, c), c);
    codeOf.set(f.name, m);
  }
  const c = m.get(v);
  if (c === undefined) throw new Error(`${f.name}: ${v} is not a value of the format`);
  return c;
}

/** fp32 bits -> fp8 code. */
export function refF32BitsToFp8(f: Fp8Format, bits: number): number {
  const x = f32FromBits(bits);
  const sign = bits & 0x80000000 ? 0x80 : 0;
  if (Number.isNaN(x)) return sign | 0x7f;
  const a = Math.abs(x);
  if (a === Infinity) return sign | f.overflowCode;
  if (a === 0) return sign;
  // exponent of a, exactly
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  const quantum = 2 ** (Math.max(e, 1 - f.bias) - f.manBits);
  const r = a / quantum; // exact: a power-of-two scaling
  let q = Math.floor(r);
  const frac = r - q;
  if (frac > 0.5 || (frac === 0.5 && q % 2 === 1)) q++;
  const v = q * quantum;
  if (v > f.max) return sign | f.overflowCode;
  return sign | encodePositive(f, v);
}
