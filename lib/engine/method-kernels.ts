/**
 * The element-wise method kernels of the TS engine: native/core/method_kernels.cc statement for
 * statement. Every fp32 operation is wrapped in Math.fround (one rounding each, in the written
 * order); `powF32` does its work in doubles, as merge_powf does, and rounds once.
 */
const f = Math.fround;

// The pow tables of native/core/method_kernels.h (merge_pow_tables), built by the same double
// operations in the same order, so the same doubles (see there for the algorithm and its error).
const LN2 = 0.6931471805599453;
const LOG_BITS = 4;
const LOG_N = 1 << LOG_BITS;
const EXP_N = 16;
const LOG_TERMS = 9;
const EXP_TERMS = 7;
const INVC: number[] = [];
const LOG2C: number[] = [];
for (let i = 0; i < LOG_N; i++) {
  const mid = 1 + (i + 0.5) / LOG_N;
  const v = Math.floor(1048576 / mid + 0.5) / 1048576;
  INVC.push(v);
  const s = (v - 1) / (v + 1);
  const z = s * s;
  let q = 1 / 61;
  for (let k = 29; k >= 0; k--) q = q * z + 1 / (2 * k + 1);
  LOG2C.push(-((2 * s * q) / LN2));
}
const INV_FACT: number[] = [1];
for (let n = 1; n <= 28; n++) INV_FACT.push(INV_FACT[n - 1]! / n);
const EXP2J: number[] = [];
for (let j = 0; j < EXP_N; j++) {
  const u = (j / EXP_N) * LN2;
  let w = INV_FACT[28]!;
  for (let n = 27; n >= 0; n--) w = w * u + INV_FACT[n]!;
  EXP2J.push(w);
}
const LOGP = Array.from({ length: LOG_TERMS }, (_, k) => ((k + 1) % 2 ? 1 : -1) / ((k + 1) * LN2));
const EXPP = INV_FACT.slice(0, EXP_TERMS);
/** 2^k for k in [-160, 129], by exact doubling and halving (C++ uses ldexp: also exact). */
const POW2_MIN = -160;
const POW2: number[] = [];
{
  let v = 1;
  for (let k = 0; k > POW2_MIN; k--) v /= 2;
  for (let k = POW2_MIN; k <= 129; k++, v *= 2) POW2.push(v);
}
const F64 = new Float64Array(1);
const U32 = new Uint32Array(F64.buffer); // [low word, high word] (little-endian, as every target)

/** x^y for fp32 x >= 0 and y: the same bits as merge_powf (method_kernels.h). */
export function powF32(x: number, y: number): number {
  if (y === 0) return 1;
  if (Number.isNaN(x) || Number.isNaN(y) || x < 0) return NaN;
  if (x === 0) return y > 0 ? 0 : Infinity;
  if (x === Infinity) return y > 0 ? Infinity : 0;
  if (x === 1) return 1;
  F64[0] = x;
  const hi = U32[1]!;
  const e = ((hi >>> 20) & 0x7ff) - 1023;
  const i = (hi >>> (20 - LOG_BITS)) & (LOG_N - 1);
  U32[1] = (hi & 0xfffff) | 0x3ff00000;
  const m = F64[0]!;
  const r = m * INVC[i]! - 1;
  let p = LOGP[LOG_TERMS - 1]!;
  for (let n = LOG_TERMS - 2; n >= 0; n--) {
    p = p * r;
    p = p + LOGP[n]!;
  }
  const lp = p * r;
  const log2X = e + LOG2C[i]! + lp;
  const t = y * log2X;
  if (t >= 129) return Infinity;
  if (t <= -160) return 0;
  const k = Math.floor(t * 16 + 0.5);
  const j = k & (EXP_N - 1);
  const kInt = (k - j) / EXP_N;
  const fr = t - k * 0.0625;
  const u = fr * LN2;
  let w = EXPP[EXP_TERMS - 1]!;
  for (let n = EXP_TERMS - 2; n >= 0; n--) {
    w = w * u;
    w = w + EXPP[n]!;
  }
  return f(w * EXP2J[j]! * POW2[kInt - POW2_MIN]!);
}

// The same tables as typed arrays, for the loop of powF32Array.
const INVC64 = Float64Array.from(INVC), LOG2C64 = Float64Array.from(LOG2C), EXP2J64 = Float64Array.from(EXP2J);
/** UNSCALE[e + 149] = 2^−e for the exponents of positive fp32 values, e in [−149, 127] (exact). */
const UNSCALE = new Float64Array(277);
for (let k = 0, v = 2 ** 149; k < 277; k++, v /= 2) UNSCALE[k] = v;
const LOGP64 = Float64Array.from(LOGP), EXPP64 = Float64Array.from(EXPP), POW2_64 = Float64Array.from(POW2);

/**
 * out[i] = powF32(x[i], y) for i < n: powF32's operations in the same order, in one loop (no
 * call and no boxed double per element; the polynomials unrolled, Horner as written there).
 * `out` may be `x`.
 */
export function powF32Array(x: Float32Array, y: number, out: Float32Array, n: number): void {
  if (y === 0 || Number.isNaN(y)) {
    out.fill(y === 0 ? 1 : NaN, 0, n);
    return;
  }
  const l0 = LOGP64[0]!, l1 = LOGP64[1]!, l2 = LOGP64[2]!, l3 = LOGP64[3]!, l4 = LOGP64[4]!, l5 = LOGP64[5]!, l6 = LOGP64[6]!, l7 = LOGP64[7]!, l8 = LOGP64[8]!;
  const e0 = EXPP64[0]!, e1 = EXPP64[1]!, e2 = EXPP64[2]!, e3 = EXPP64[3]!, e4 = EXPP64[4]!, e5 = EXPP64[5]!, e6 = EXPP64[6]!;
  const d = F64, w32 = U32;
  // x's fp32 bits give the exponent and the table index of a normal x without a store to a
  // double and a reload of its halves (a load spanning two stores stalls); m = x·2^−e is exact.
  const xb = new Uint32Array(x.buffer, x.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const xi = x[i]!;
    if (!(xi > 0) || xi === Infinity || xi === 1) {
      // NaN, negative, zero, infinity, one: powF32's early returns
      out[i] = Number.isNaN(xi) || xi < 0 ? NaN : xi === 0 ? (y > 0 ? 0 : Infinity) : xi === Infinity ? (y > 0 ? Infinity : 0) : 1;
      continue;
    }
    const bits = xb[i]!;
    let e: number, j0: number, m: number;
    if (bits >>> 23 !== 0) {
      e = (bits >>> 23) - 127;
      j0 = (bits >>> 19) & (LOG_N - 1);
      m = xi * UNSCALE[e + 149]!;
    } else {
      // an fp32 subnormal (a normal double): powF32's own way
      d[0] = xi;
      const hi = w32[1]!;
      e = ((hi >>> 20) & 0x7ff) - 1023;
      j0 = (hi >>> (20 - LOG_BITS)) & (LOG_N - 1);
      w32[1] = (hi & 0xfffff) | 0x3ff00000;
      m = d[0]!;
    }
    const r = m * INVC64[j0]! - 1;
    let p = l8;
    p = p * r; p = p + l7;
    p = p * r; p = p + l6;
    p = p * r; p = p + l5;
    p = p * r; p = p + l4;
    p = p * r; p = p + l3;
    p = p * r; p = p + l2;
    p = p * r; p = p + l1;
    p = p * r; p = p + l0;
    const lp = p * r;
    const log2X = e + LOG2C64[j0]! + lp;
    const t = y * log2X;
    if (t >= 129) { out[i] = Infinity; continue; }
    if (t <= -160) { out[i] = 0; continue; }
    const k = Math.floor(t * 16 + 0.5);
    const j = k & (EXP_N - 1);
    const kInt = (k - j) / EXP_N;
    const fr = t - k * 0.0625;
    const u = fr * LN2;
    let w = e6;
    w = w * u; w = w + e5;
    w = w * u; w = w + e4;
    w = w * u; w = w + e3;
    w = w * u; w = w + e2;
    w = w * u; w = w + e1;
    w = w * u; w = w + e0;
    out[i] = w * EXP2J64[j]! * POW2_64[kInt - POW2_MIN]!; // the Float32Array store is powF32's one rounding
  }
}

/**
 * out[i] = powF32(x[i], y) and outU[i] = powF32(u[i], v) for i < n: powF32Array's operations,
 * the two powers' statements interleaved. Each power is one long chain of dependent operations
 * (the two polynomials), so one at a time the CPU waits on each result; two chains side by side
 * give it independent work (the same operations on the same values: the same bits). Elements
 * off the common path (a special or subnormal base, an over- or underflowing power) take
 * powF32 itself. `out` may be `x` and `outU` may be `u`.
 */
export function powF32Pair(x: Float32Array, y: number, u: Float32Array, v: number, out: Float32Array, outU: Float32Array, n: number): void {
  if (y === 0 || Number.isNaN(y) || v === 0 || Number.isNaN(v)) {
    powF32Array(x, y, out, n);
    powF32Array(u, v, outU, n);
    return;
  }
  const l0 = LOGP64[0]!, l1 = LOGP64[1]!, l2 = LOGP64[2]!, l3 = LOGP64[3]!, l4 = LOGP64[4]!, l5 = LOGP64[5]!, l6 = LOGP64[6]!, l7 = LOGP64[7]!, l8 = LOGP64[8]!;
  const e0 = EXPP64[0]!, e1 = EXPP64[1]!, e2 = EXPP64[2]!, e3 = EXPP64[3]!, e4 = EXPP64[4]!, e5 = EXPP64[5]!, e6 = EXPP64[6]!;
  const xb = new Int32Array(x.buffer, x.byteOffset, n), ub = new Int32Array(u.buffer, u.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const xi = x[i]!, ui = u[i]!;
    const bx = xb[i]!, bu = ub[i]!;
    // common path: both bases positive, normal, finite and not 1 (exponent field 1..254)
    if (bx < 0x00800000 || bx >= 0x7f800000 || bu < 0x00800000 || bu >= 0x7f800000 || bx === 0x3f800000 || bu === 0x3f800000) {
      out[i] = powF32(xi, y);
      outU[i] = powF32(ui, v);
      continue;
    }
    const ex = (bx >> 23) - 127, eu = (bu >> 23) - 127;
    const jx = (bx >> 19) & (LOG_N - 1), ju = (bu >> 19) & (LOG_N - 1);
    const mx = xi * UNSCALE[ex + 149]!, mu = ui * UNSCALE[eu + 149]!;
    const rx = mx * INVC64[jx]! - 1, ru = mu * INVC64[ju]! - 1;
    let px = l8, pu = l8;
    px = px * rx; pu = pu * ru; px = px + l7; pu = pu + l7;
    px = px * rx; pu = pu * ru; px = px + l6; pu = pu + l6;
    px = px * rx; pu = pu * ru; px = px + l5; pu = pu + l5;
    px = px * rx; pu = pu * ru; px = px + l4; pu = pu + l4;
    px = px * rx; pu = pu * ru; px = px + l3; pu = pu + l3;
    px = px * rx; pu = pu * ru; px = px + l2; pu = pu + l2;
    px = px * rx; pu = pu * ru; px = px + l1; pu = pu + l1;
    px = px * rx; pu = pu * ru; px = px + l0; pu = pu + l0;
    const lpx = px * rx, lpu = pu * ru;
    const tx = y * (ex + LOG2C64[jx]! + lpx), tu = v * (eu + LOG2C64[ju]! + lpu);
    if (!(tx < 129 && tx > -160 && tu < 129 && tu > -160)) {
      out[i] = powF32(xi, y);
      outU[i] = powF32(ui, v);
      continue;
    }
    const kx = Math.floor(tx * 16 + 0.5), ku = Math.floor(tu * 16 + 0.5);
    const jjx = kx & (EXP_N - 1), jju = ku & (EXP_N - 1);
    const wx0 = (tx - kx * 0.0625) * LN2, wu0 = (tu - ku * 0.0625) * LN2;
    let wx = e6, wu = e6;
    wx = wx * wx0; wu = wu * wu0; wx = wx + e5; wu = wu + e5;
    wx = wx * wx0; wu = wu * wu0; wx = wx + e4; wu = wu + e4;
    wx = wx * wx0; wu = wu * wu0; wx = wx + e3; wu = wu + e3;
    wx = wx * wx0; wu = wu * wu0; wx = wx + e2; wu = wu + e2;
    wx = wx * wx0; wu = wu * wu0; wx = wx + e1; wu = wu + e1;
    wx = wx * wx0; wu = wu * wu0; wx = wx + e0; wu = wu + e0;
    out[i] = wx * EXP2J64[jjx]! * POW2_64[(kx - jjx) * 0.0625 - POW2_MIN]!;
    outU[i] = wu * EXP2J64[jju]! * POW2_64[(ku - jju) * 0.0625 - POW2_MIN]!;
  }
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

/** One fp32 value and its bits, for multiply difference's sign (per thread: module state). */
const signScratch = new Float32Array(1);
const signScratchBits = new Int32Array(signScratch.buffer);

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
    // the two powers over the whole chunk first (powF32Pair), then the combination
    const pa = scratch(0, n), pb = scratch(1, n);
    for (let i = 0; i < n; i++) {
      // Math.abs, not absf: powF32Array turns any NaN into its own NaN, so a NaN's sign bit is
      // lost either way, and a branch on a random sign mispredicts half the time
      pa[i] = Math.abs(f(xa[i]! - xc[i]!));
      pb[i] = Math.abs(f(xb[i]! - xc[i]!));
    }
    powF32Pair(pa, p0, pb, p1, pa, pb, n);
    // copysign(m, lerp − C) on m's bits, without a branch on the sign (random: half of them
    // mispredicted): m is a product of two powers, so +0 … +Inf or a NaN; where sg < 0 its
    // sign bit is set, unless it is a NaN (kept as it is, as native keeps it).
    const mf = signScratch, mi = signScratchBits;
    for (let i = 0; i < n; i++) {
      const ci = xc[i]!;
      mf[0] = pa[i]! * pb[i]!; // the Float32Array store rounds: f(pa · pb)
      const mb = mi[0]!;
      const w = f(f(xa[i]! * p2) + f(xb[i]! * p3));
      const sg = f(w - ci);
      mi[0] = mb | ((+(sg < 0) & +(mb <= 0x7f800000)) << 31);
      r[i] = f(ci + mf[0]!);
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
