/**
 * sin, cos and acos in double from + − × ÷ and sqrt only: the same algorithm, operation for
 * operation, as native/core/det_math.cc, so both engines derive the same per-tensor
 * coefficients (SLERP's angles). Accuracy: a few ulps (test/methods/many/det-math.test.ts).
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
