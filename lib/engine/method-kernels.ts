/**
 * The element-wise method kernels of the TS engine: native/core/method_kernels.cc statement for
 * statement. Every fp32 operation is wrapped in Math.fround (one rounding each, in the written
 * order); the product of powers of multiply-difference is det-math.ts's powProductF32Array
 * (merge_pow_product's algorithm: doubles inside, one rounding).
 */
import { powProductF32Array } from "./det-math";

const f = Math.fround;

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

/** Per-thread scratch arrays of the kernels, grown on demand and reused. */
const scratchArrays: Float32Array[] = [];
function scratch(i: number, n: number): Float32Array {
  const have = scratchArrays[i];
  if (have && have.length >= n) return have;
  return (scratchArrays[i] = new Float32Array(Math.max(n, 1 << 20)));
}

/** One train-difference element, statement for statement as native/core/method_kernels.cc. */
export function trainDifferenceExact(ai: number, bi: number, ci: number, p0: number): number {
  const t0 = f(bi - ci);
  const d0 = absf(t0);
  const d1 = absf(f(bi - ai));
  const s = f(d0 + d1);
  const q = s !== 0 ? f(d1 / s) : 0;
  const sc = t0 > 0 ? q : t0 < 0 ? (q === q ? -q : q) : f(0 * q);
  const nd = f(sc * d0);
  const v = f(nd * p0);
  return f(ai + v);
}

type Kernel = (out: Float32Array, x: Float32Array[], p: number[], n: number) => void;

export const METHOD_KERNELS: Record<string, Kernel> = {
  "train-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), xa = a!, xb = b!, xc = c!;
    // Branch-free for the common element (the signs of B−C and B−A are random, so absf's and
    // the sign choice's branches mispredict half the time). Math.abs equals absf but on a NaN,
    // and sign(B−C)·q·|B−C| is the product q·(B−C) but for its zero's sign when B−C = −0;
    // that zero only reaches the result through A + v with v = ±0, where it changes nothing
    // unless A = ±0, and then B − A is ±0 too, so s = 0. Every element where the two ways can
    // differ (a NaN anywhere, s = 0 where q = 0/0 here) is therefore NaN here, and is
    // recomputed as native computes it.
    for (let i = 0; i < n; i++) {
      const ai = xa[i]!, bi = xb[i]!;
      const t0 = f(bi - xc[i]!);
      const d1 = Math.abs(f(bi - ai));
      const s = f(Math.abs(t0) + d1);
      const q = f(d1 / s);
      const v = f(f(q * t0) * p0);
      const ri = f(ai + v);
      r[i] = ri;
      if (ri !== ri) r[i] = trainDifferenceExact(ai, bi, xc[i]!, p0);
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
    const xa = a!, xb = b!, xc = c!;
    // the product of powers over the whole chunk first (powProductF32Array), then the combination
    const pa = scratch(0, n), pb = scratch(1, n);
    for (let i = 0; i < n; i++) {
      pa[i] = absf(f(xa[i]! - xc[i]!));
      pb[i] = absf(f(xb[i]! - xc[i]!));
    }
    powProductF32Array(pa, p0, pb, p1, pa, n);
    // negf(m) where sg < 0, on m's bits, without a branch on the sign (random: half of them
    // mispredicted): the sign bit flips unless m is a NaN (kept as it is, as native keeps it).
    const mb = new Int32Array(pa.buffer, pa.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const ci = xc[i]!;
      const bits = mb[i]!;
      const w = f(f(xa[i]! * p2) + f(xb[i]! * p3));
      const sg = f(w - ci);
      mb[i] = bits ^ ((+(sg < 0) & +((bits & 0x7fffffff) <= 0x7f800000)) << 31);
      r[i] = f(ci + pa[i]!);
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
