/**
 * The element-wise method kernels of the TS engine: native/core/method_kernels.cc statement for
 * statement. Every fp32 operation is wrapped in Math.fround (one rounding each, in the written
 * order); `powF32` does its work in doubles, as merge_powf does, and rounds once.
 */
const f = Math.fround;

const LN_TERMS = 12;
const EXP_TERMS = 17;
const LN2 = 0.6931471805599453;
const SQRT2 = 1.4142135623730951;
// Computed by the same divisions as the C++ table, so the same doubles.
const INV_ODD = Array.from({ length: LN_TERMS }, (_, k) => 1 / (2 * k + 1));
const INV_FACT: number[] = [1];
for (let j = 1; j < EXP_TERMS; j++) INV_FACT.push(INV_FACT[j - 1]! / j);
/** 2^k for k in [-160, 129], by exact doubling and halving (C++ uses ldexp: also exact). */
const POW2_MIN = -160;
const POW2: number[] = [];
{
  let v = 1;
  for (let k = 0; k > POW2_MIN; k--) v /= 2;
  for (let k = POW2_MIN; k <= 129; k++, v *= 2) POW2.push(v);
}
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** x^y for fp32 x >= 0 and y: the same bits as merge_powf (method_kernels.h). */
export function powF32(x: number, y: number): number {
  if (y === 0) return 1;
  if (Number.isNaN(x) || Number.isNaN(y) || x < 0) return NaN;
  if (x === 0) return y > 0 ? 0 : Infinity;
  if (x === Infinity) return y > 0 ? Infinity : 0;
  if (x === 1) return 1;
  F32[0] = x;
  let bits = U32[0]!;
  let eAdjust = 0;
  if (bits >>> 23 === 0) {
    F32[0] = x * 18446744073709551616; // 2^64, exact
    bits = U32[0]!;
    eAdjust = -64;
  }
  let e = (bits >>> 23) - 127 + eAdjust;
  U32[0] = (bits & 0x7fffff) | 0x3f800000;
  let m = F32[0]!;
  if (m > SQRT2) {
    m = m * 0.5;
    e = e + 1;
  }
  const s = (m - 1) / (m + 1);
  const z = s * s;
  let q = INV_ODD[LN_TERMS - 1]!;
  for (let k = LN_TERMS - 2; k >= 0; k--) {
    q = q * z;
    q = q + INV_ODD[k]!;
  }
  const twoS = 2 * s;
  const lnM = twoS * q;
  const log2M = lnM / LN2;
  const log2X = e + log2M;
  const t = y * log2X;
  if (t >= 129) return Infinity;
  if (t <= -160) return 0;
  const k = Math.floor(t + 0.5);
  const fr = t - k;
  const u = fr * LN2;
  let w = INV_FACT[EXP_TERMS - 1]!;
  for (let j = EXP_TERMS - 2; j >= 0; j--) {
    w = w * u;
    w = w + INV_FACT[j]!;
  }
  return f(w * POW2[k - POW2_MIN]!);
}

/** |x| leaving a NaN as it is (Math.abs may or may not clear its sign bit); ±0 give +0. */
const absf = (x: number): number => (x < 0 ? -x : x === 0 ? 0 : x);

const signbit = (x: number): boolean => x < 0 || (x === 0 && 1 / x < 0);
/** IEEE 754-2019 minimum/maximum as minf/maxf in C++: a NaN operand is the result, −0 < +0. */
function minf(x: number, y: number): number {
  if (x !== x) return x;
  if (y !== y) return y;
  if (x < y) return x;
  if (y < x) return y;
  return signbit(x) ? x : y;
}
function maxf(x: number, y: number): number {
  if (x !== x) return x;
  if (y !== y) return y;
  if (x > y) return x;
  if (y > x) return y;
  return signbit(x) ? y : x;
}

type Kernel = (out: Float32Array, x: Float32Array[], p: number[], n: number) => void;

export const METHOD_KERNELS: Record<string, Kernel> = {
  "train-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!);
    for (let i = 0; i < n; i++) {
      const t0 = f(b![i]! - c![i]!);
      const d0 = absf(t0);
      const d1 = absf(f(b![i]! - a![i]!));
      const s = f(d0 + d1);
      const q = s !== 0 ? f(d1 / s) : 0;
      const sc = t0 > 0 ? q : t0 < 0 ? (q === q ? -q : q) : f(0 * q);
      const nd = f(sc * d0);
      const v = f(nd * p0);
      r[i] = f(a![i]! + v);
    }
  },
  "triple-sum": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!);
    for (let i = 0; i < n; i++) {
      const u = f(a![i]! * p0);
      const v = f(b![i]! * p1);
      const w = f(c![i]! * p2);
      r[i] = f(f(u + v) + w);
    }
  },
  "sum-twice": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!), p3 = f(p[3]!);
    for (let i = 0; i < n; i++) {
      const ab = f(f(a![i]! * p0) + f(b![i]! * p1));
      r[i] = f(f(ab * p2) + f(c![i]! * p3));
    }
  },
  "multiply-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!), p3 = f(p[3]!);
    for (let i = 0; i < n; i++) {
      const ci = c![i]!;
      const da = absf(f(a![i]! - ci));
      const db = absf(f(b![i]! - ci));
      const m = f(powF32(da, p0) * powF32(db, p1));
      const w = f(f(a![i]! * p2) + f(b![i]! * p3));
      const sg = f(w - ci);
      r[i] = f(ci + (sg < 0 && m === m ? -m : m));
    }
  },
  "similarity-add-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!), p3 = f(p[3]!);
    for (let i = 0; i < n; i++) {
      const ai = a![i]!, bi = b![i]!;
      const prod = f(ai * bi);
      const aa = absf(ai), bb = absf(bi);
      const th = aa > bb ? aa : bb;
      const th2 = f(th * th);
      let q = f(prod / th2);
      q = f(q + 1);
      q = f(q / 2);
      let s = f(q * p1);
      if (Number.isNaN(s)) s = p1;
      const diff = f(ai + f(p0 * f(bi - c![i]!)));
      const sum = f(f(p2 * ai) + f(p3 * bi));
      r[i] = f(f(f(1 - s) * diff) + f(s * sum));
    }
  },
  clamp: (r, [v, a, b], _p, n) => {
    for (let i = 0; i < n; i++) r[i] = minf(maxf(v![i]!, minf(a![i]!, b![i]!)), maxf(a![i]!, b![i]!));
  },
};
