/**
 * sin, cos and acos in double from + − × ÷ and sqrt only: the same algorithm, operation for
 * operation, as native/core/det_math.cc, so both engines derive the same per-tensor
 * coefficients (SLERP's angles). Accuracy: a few ulps (test/methods/many/det-math.test.ts).
 * Below them, the table-driven pow product of multiply-difference (native/core/method_kernels.h).
 */
const PIO2_HI = 1.57079632673412561417e+00;
const PIO2_LO = 6.07710050650619224932e-11;
const PI_HI = 3.14159265358979311600e+00;
const PI_LO = 1.22464679914735317723e-16;
const SIN_TERMS = 12, ASIN_TERMS = 40;

const SIN_C = new Float64Array(SIN_TERMS), COS_C = new Float64Array(SIN_TERMS), ASIN_C = new Float64Array(ASIN_TERMS);
SIN_C[0] = 1;
COS_C[0] = 1;
for (let n = 1; n < SIN_TERMS; n++) {
  SIN_C[n] = -SIN_C[n - 1]! / ((2 * n) * (2 * n + 1));
  COS_C[n] = -COS_C[n - 1]! / ((2 * n - 1) * (2 * n));
}
ASIN_C[0] = 1;
{
  let a = 1;
  for (let n = 1; n < ASIN_TERMS; n++) {
    a = a * (2 * n - 1) / (2 * n);
    ASIN_C[n] = a / (2 * n + 1);
  }
}

function sinPoly(r: number): number {
  const r2 = r * r;
  let s = SIN_C[SIN_TERMS - 1]!;
  for (let n = SIN_TERMS - 2; n >= 0; n--) s = SIN_C[n]! + s * r2;
  return r * s;
}
function cosPoly(r: number): number {
  const r2 = r * r;
  let s = COS_C[SIN_TERMS - 1]!;
  for (let n = SIN_TERMS - 2; n >= 0; n--) s = COS_C[n]! + s * r2;
  return s;
}
function asinSmall(y: number): number {
  const y2 = y * y;
  let s = ASIN_C[ASIN_TERMS - 1]!;
  for (let n = ASIN_TERMS - 2; n >= 0; n--) s = ASIN_C[n]! + s * y2;
  return y * s;
}

function sinCos(x: number, shift: number): number {
  if (!Number.isFinite(x)) return NaN;
  const k = Math.floor(x / PIO2_HI + 0.5);
  const r = (x - k * PIO2_HI) - k * PIO2_LO;
  switch ((Math.trunc(k % 4) + 4 + shift) % 4) {
    case 0: return sinPoly(r);
    case 1: return cosPoly(r);
    case 2: return -sinPoly(r);
    default: return -cosPoly(r);
  }
}

export function detSin(x: number): number {
  return sinCos(x, 0);
}
export function detCos(x: number): number {
  return sinCos(x, 1);
}
export function detAcos(x: number): number {
  if (!(x >= -1 && x <= 1)) return NaN;
  if (x > 0.5) return 2 * asinSmall(Math.sqrt((1 - x) / 2));
  if (x < -0.5) return (PI_HI - 2 * asinSmall(Math.sqrt((1 + x) / 2))) + PI_LO;
  return (PIO2_HI - asinSmall(x)) + PIO2_LO;
}

// ---------------------------------------------------------------------------------------------
// The product of two powers, x1^y1 · x2^y2 in fp32 (multiply-difference's |A−C|^(1−α)·|B−C|^α):
// native/core/method_kernels.h merge_pow_product, operation for operation. The tables are built
// by the same double operations in the same order as merge_pow_tables_make, so the same doubles
// (see there for the algorithm and its error: within 0.505 fp32 ulp of the exact value;
// test/native/pow-product.test.ts).

const f32 = Math.fround;
const LN2 = 0.6931471805599453;
const LOG_BITS = 4;
const LOG_N = 1 << LOG_BITS;
const EXP_N = 16;
const LOG_TERMS = 5;
const EXP_TERMS = 5;
const INVC = new Float64Array(LOG_N), LOG2C = new Float64Array(LOG_N), EXP2J = new Float64Array(EXP_N);
for (let i = 0; i < LOG_N; i++) {
  const mid = 1 + (i + 0.5) / LOG_N;
  const v = Math.floor(1048576 / mid + 0.5) / 1048576;
  INVC[i] = v;
  const s = (v - 1) / (v + 1);
  const z = s * s;
  let q = 1 / 61;
  for (let k = 29; k >= 0; k--) q = q * z + 1 / (2 * k + 1);
  LOG2C[i] = -((2 * s * q) / LN2);
}
{
  const invFact: number[] = [1];
  for (let n = 1; n <= 28; n++) invFact.push(invFact[n - 1]! / n);
  for (let j = 0; j < EXP_N; j++) {
    const u = (j / EXP_N) * LN2;
    let w = invFact[28]!;
    for (let n = 27; n >= 0; n--) w = w * u + invFact[n]!;
    EXP2J[j] = w;
  }
}
const LOGP = Float64Array.from({ length: LOG_TERMS }, (_, k) => ((k + 1) % 2 ? 1 : -1) / ((k + 1) * LN2));
/** EXPP[n] = ln2^n/n!: 2^f = Σ EXPP[n]·f^n. */
const EXPP = new Float64Array(EXP_TERMS);
EXPP[0] = 1;
for (let n = 1; n < EXP_TERMS; n++) EXPP[n] = EXPP[n - 1]! * LN2 / n;
/** POW2[k − POW2_MIN] = 2^k for k in [−160, 129], by exact doubling and halving (C++ uses ldexp: also exact). */
const POW2_MIN = -160;
const POW2 = new Float64Array(129 - POW2_MIN + 1);
{
  let v = 1;
  for (let k = 0; k > POW2_MIN; k--) v /= 2;
  for (let k = POW2_MIN; k <= 129; k++, v *= 2) POW2[k - POW2_MIN] = v;
}
/** UNSCALE[e + 149] = 2^−e for the exponents of positive fp32 values, e in [−149, 127] (exact). */
const UNSCALE = new Float64Array(277);
for (let k = 0, v = 2 ** 149; k < 277; k++, v /= 2) UNSCALE[k] = v;
const F64 = new Float64Array(1);
const U32 = new Uint32Array(F64.buffer); // [low word, high word] (little-endian, as every target)

/** Whether operand (x, y) enters the log sum: y ≠ 0 and x > 0 finite, not 1 (pow_general). */
const powGeneral = (x: number, y: number): boolean => y !== 0 && x > 0 && x < Infinity && x !== 1;

/** IEEE pow's value for the other operands (pow_special). */
function powSpecial(x: number, y: number): number {
  if (y === 0) return 1; // pow(x, ±0) = 1 for every x, NaN included
  if (Number.isNaN(x) || Number.isNaN(y) || x < 0) return NaN;
  if (x === 0) return y > 0 ? 0 : Infinity;
  if (x === Infinity) return y > 0 ? Infinity : 0;
  return 1; // x = 1
}

/** log2 x for x > 0 finite (pow_log2): x = m·2^e from the bits of the double. */
function powLog2(x: number): number {
  F64[0] = x;
  const hi = U32[1]!;
  const e = ((hi >>> 20) & 0x7ff) - 1023;
  const i = (hi >>> (20 - LOG_BITS)) & (LOG_N - 1);
  U32[1] = (hi & 0xfffff) | 0x3ff00000;
  return log2Reduced(e, i, F64[0]!);
}

/** e + log2c[i] + log2(1 + r), r = m·invc[i] − 1, for x = m·2^e, i the top bits of m. */
function log2Reduced(e: number, i: number, m: number): number {
  const r = m * INVC[i]! - 1;
  let p = LOGP[4]!;
  p = p * r; p = p + LOGP[3]!;
  p = p * r; p = p + LOGP[2]!;
  p = p * r; p = p + LOGP[1]!;
  p = p * r; p = p + LOGP[0]!;
  const lp = p * r;
  return e + LOG2C[i]! + lp;
}

/** 2^t rounded once to fp32 (pow_exp2): +∞ from t >= 129, +0 from t <= −160, NaN from NaN. */
function powExp2(t: number): number {
  if (Number.isNaN(t)) return NaN;
  if (t >= 129) return Infinity;
  if (t <= -160) return 0;
  const k = Math.floor(t * 16 + 0.5);
  const j = k & (EXP_N - 1);
  const kInt = (k - j) / EXP_N;
  const fr = t - k * 0.0625;
  let w = EXPP[4]!;
  w = w * fr; w = w + EXPP[3]!;
  w = w * fr; w = w + EXPP[2]!;
  w = w * fr; w = w + EXPP[1]!;
  w = w * fr; w = w + EXPP[0]!;
  return f32(w * EXP2J[j]! * POW2[kInt - POW2_MIN]!);
}

/** x1^y1 · x2^y2 for fp32 x1, x2 >= 0 and fp32 y1, y2: the same bits as merge_pow_product. */
export function powProductF32(x1: number, y1: number, x2: number, y2: number): number {
  const g1 = powGeneral(x1, y1), g2 = powGeneral(x2, y2);
  const t1 = g1 ? y1 * powLog2(x1) : 0;
  const t2 = g2 ? y2 * powLog2(x2) : 0;
  let m = powExp2(t1 + t2);
  if (!g1) m = f32(m * powSpecial(x1, y1));
  if (!g2) m = f32(m * powSpecial(x2, y2));
  return m;
}

/** x^y for fp32 x >= 0 and y: powProductF32(x, y, 1, 1). */
export function powF32(x: number, y: number): number {
  return powProductF32(x, y, 1, 1);
}

// Tables of the batched pow product below, each entry one of the algorithm's own steps done
// once here instead of per element, with the same double result (so the same bits):
// - LOG_SCALE[u >>> 19] = 2^−e·invc[i] and LOG_HI[u >>> 19] = e + log2c[i], for the fp32 bits u
//   of a normal positive x = m·2^e (i: the top 4 mantissa bits). (x·2^−e)·invc rounds the same
//   real number as x·(2^−e·invc): both scalings by 2^−e are exact (the products stay normal
//   doubles, within [0.5, 2]), and the sum e + log2c[i] is the same operation on the same operands.
// - EXP_SCALE[k − EXP_K_MIN] = exp2j[k & 15]·2^⌊k/16⌋ for k = ⌊16t + ½⌋ over pow_exp2's range
//   (t in (−160, 129)): (w·exp2j[j])·2^⌊k/16⌋ rounds once, then scales exactly, as the one
//   rounding of w·(exp2j[j]·2^⌊k/16⌋) does (the products lie in [2^−161, 2^130], normal doubles).
const LOG_SCALE = new Float64Array(4096), LOG_HI = new Float64Array(4096);
for (let idx = 1 << 4; idx < 255 << 4; idx++) {
  const e = (idx >>> 4) - 127, i = idx & (LOG_N - 1);
  LOG_SCALE[idx] = UNSCALE[e + 149]! * INVC[i]!;
  LOG_HI[idx] = e + LOG2C[i]!;
}
const EXP_K_MIN = -160 * EXP_N, EXP_K_MAX = 129 * EXP_N;
const EXP_SCALE = new Float64Array(EXP_K_MAX - EXP_K_MIN + 1);
for (let k = EXP_K_MIN; k <= EXP_K_MAX; k++) EXP_SCALE[k - EXP_K_MIN] = EXP2J[k & (EXP_N - 1)]! * POW2[(k >> 4) - POW2_MIN]!;

/** The tables above, for asm-kernels.ts mdPow (which copies them into each asm heap). */
export function powHeapTables(): { logp: Float64Array; expp: Float64Array; logScale: Float64Array; logHi: Float64Array; expScale: Float64Array } {
  return { logp: LOGP, expp: EXPP, logScale: LOG_SCALE, logHi: LOG_HI, expScale: EXP_SCALE };
}

/** Whether powProductF32Array (and mdPow) may take their fast path: pow_in_range (method_kernels_simd.h). */
export function powFastExponents(y1: number, y2: number): boolean {
  return y1 !== 0 && y2 !== 0 && Number.isFinite(y1) && Number.isFinite(y2) && y1 >= 0 && y2 >= 0 && y1 + y2 <= 1 + 2 ** -20;
}
/** zero_kills(y1, y2): x1 = 0 makes the product +0 whatever the finite x2 (method_kernels_simd.h). */
export const powZeroKills = (y1: number, y2: number): boolean => y1 > 0 && y2 >= 0 && y2 <= 1;

/**
 * out[i] = powProductF32(x1[i], y1, x2[i], y2) for i < n: powProductF32's operations, inlined,
 * for the common element (both operands general and normal fp32: their fp32 bits give e and
 * i, and the tables above replace the per-element scaling; exponents with pow_in_range, so no
 * clamp); x1 = 0 gives +0 where zero_kills says so (as the native kernel skips A = C); every
 * other element, and every element of exponents outside pow_in_range, calls powProductF32.
 * `out` may be x1 or x2. multiply-difference calls it on blocks of a few thousand elements.
 */
export function powProductF32Array(x1: Float32Array, y1: number, x2: Float32Array, y2: number, out: Float32Array, n: number): void {
  // int32 views: a Uint32Array element above 2^31 is no small integer to the JIT (a slower path)
  const b1 = new Int32Array(x1.buffer, x1.byteOffset, n), b2 = new Int32Array(x2.buffer, x2.byteOffset, n);
  // method_kernels_simd.h pow_in_range and zero_kills
  const fast = powFastExponents(y1, y2);
  const zero1 = powZeroKills(y1, y2), zero2 = powZeroKills(y2, y1);
  const lp0 = LOGP[0]!, lp1 = LOGP[1]!, lp2 = LOGP[2]!, lp3 = LOGP[3]!, lp4 = LOGP[4]!;
  const ep0 = EXPP[0]!, ep1 = EXPP[1]!, ep2 = EXPP[2]!, ep3 = EXPP[3]!, ep4 = EXPP[4]!;
  const scale = LOG_SCALE, hi = LOG_HI, exps = EXP_SCALE;
  /** Element i the slow way: the A = C / B = C shortcut, else powProductF32. */
  const one = (i: number): void => {
    const u = b1[i]!, v = b2[i]!;
    if ((zero1 && u === 0 && v >>> 0 < 0x7f800000) || (zero2 && v === 0 && u >>> 0 < 0x7f800000)) out[i] = 0;
    else out[i] = powProductF32(x1[i]!, y1, x2[i]!, y2);
  };
  let i = 0;
  // Two elements per step: their four logs and two exps are independent Horner chains, which
  // the CPU overlaps (each chain is latency-bound), and one test covers both elements.
  if (fast) for (; i + 1 < n; i += 2) {
    const u1 = b1[i]!, v1 = b2[i]!, u2 = b1[i + 1]!, v2 = b2[i + 1]!;
    // each operand normal positive finite (bits in [2^23, 0x7f800000)), not 1: `|` not `||`,
    // so one well-predicted branch instead of eight
    if ((+((u1 - 0x00800000) >>> 0 >= 0x7f000000) | +(u1 === 0x3f800000) | +((v1 - 0x00800000) >>> 0 >= 0x7f000000) | +(v1 === 0x3f800000)
      | +((u2 - 0x00800000) >>> 0 >= 0x7f000000) | +(u2 === 0x3f800000) | +((v2 - 0x00800000) >>> 0 >= 0x7f000000) | +(v2 === 0x3f800000)) !== 0) {
      one(i);
      one(i + 1);
      continue;
    }
    const s1 = u1 >> 19, s2 = v1 >> 19, s3 = u2 >> 19, s4 = v2 >> 19;
    const r1 = x1[i]! * scale[s1]! - 1, r2 = x2[i]! * scale[s2]! - 1;
    const r3 = x1[i + 1]! * scale[s3]! - 1, r4 = x2[i + 1]! * scale[s4]! - 1;
    let p1 = lp4, p2 = lp4, p3 = lp4, p4 = lp4;
    p1 = p1 * r1; p2 = p2 * r2; p3 = p3 * r3; p4 = p4 * r4;
    p1 = p1 + lp3; p2 = p2 + lp3; p3 = p3 + lp3; p4 = p4 + lp3;
    p1 = p1 * r1; p2 = p2 * r2; p3 = p3 * r3; p4 = p4 * r4;
    p1 = p1 + lp2; p2 = p2 + lp2; p3 = p3 + lp2; p4 = p4 + lp2;
    p1 = p1 * r1; p2 = p2 * r2; p3 = p3 * r3; p4 = p4 * r4;
    p1 = p1 + lp1; p2 = p2 + lp1; p3 = p3 + lp1; p4 = p4 + lp1;
    p1 = p1 * r1; p2 = p2 * r2; p3 = p3 * r3; p4 = p4 * r4;
    p1 = p1 + lp0; p2 = p2 + lp0; p3 = p3 + lp0; p4 = p4 + lp0;
    const t1 = y1 * (hi[s1]! + p1 * r1) + y2 * (hi[s2]! + p2 * r2);
    const t2 = y1 * (hi[s3]! + p3 * r3) + y2 * (hi[s4]! + p4 * r4);
    const k1 = Math.floor(t1 * 16 + 0.5), k2 = Math.floor(t2 * 16 + 0.5);
    const f1 = t1 - k1 * 0.0625, f2 = t2 - k2 * 0.0625;
    let w1 = ep4, w2 = ep4;
    w1 = w1 * f1; w2 = w2 * f2; w1 = w1 + ep3; w2 = w2 + ep3;
    w1 = w1 * f1; w2 = w2 * f2; w1 = w1 + ep2; w2 = w2 + ep2;
    w1 = w1 * f1; w2 = w2 * f2; w1 = w1 + ep1; w2 = w2 + ep1;
    w1 = w1 * f1; w2 = w2 * f2; w1 = w1 + ep0; w2 = w2 + ep0;
    // the Float32Array stores: the one rounding of each
    out[i] = w1 * exps[(k1 | 0) - EXP_K_MIN]!;
    out[i + 1] = w2 * exps[(k2 | 0) - EXP_K_MIN]!;
  }
  for (; i < n; i++) one(i);
}
