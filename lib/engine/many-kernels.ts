/**
 * The many-model and statistics kernels (task-merge, slerp, model-stock): native/core/
 * many_kernels.cc in TypeScript, statement for statement (fp32 via Math.fround, one rounding per
 * operation in the written order; per-tensor coefficients in double with det-math.ts). The
 * formulas and their sources are in that file's comments and README "Many models".
 */
import { TASK_MERGE_FLAGS as F } from "../native/job";
import { detAcos, detSin } from "./det-math";
import { MaskStream } from "./philox";

const f = Math.fround;
const keyBits = new Uint32Array(1);
const keyFloat = new Float32Array(keyBits.buffer);
function magnitudeKey(x: number): number {
  keyFloat[0] = x;
  return (keyBits[0]! & 0x7fffffff) >>> 0;
}
/** The positive quiet NaN for every NaN result (many_kernels.cc `canonical` says why). */
function canonical(v: number): number {
  return Number.isNaN(v) ? NaN : v;
}
function signOf(x: number): number {
  return x > 0 ? 1 : x < 0 ? -1 : 0;
}

export interface ManyArgs {
  x: Float32Array[];
  params: number[];
  stats: number[];
  ints: number[];
  /** Element index (in the keyed tensor) of element 0 of this call. */
  index: number;
  /** Per stat: a per-column reduction's values. */
  columns?: (Float64Array | undefined)[];
}

function taskMerge(r: Float32Array, a: ManyArgs, n: number): void {
  const models = a.x.length - 1;
  const w = a.params.map(f);
  const lambda = f(a.params[models]!);
  const keep = a.params.slice(models + 1).map(f);
  const flags = a.ints[0]!, threshold = a.ints.slice(4);
  const trim = (flags & F.TRIM) !== 0, drop = (flags & F.DROP) !== 0, rescale = (flags & F.RESCALE) !== 0;
  const consensus = (flags & F.CONSENSUS) !== 0, byCount = (flags & F.BY_COUNT) !== 0, normalize = (flags & F.NORMALIZE) !== 0;
  const trimKey = trim ? a.stats.slice(0, models) : [];
  let divisorAll = 0;
  for (let j = 0; j < models; j++) divisorAll = j === 0 ? w[0]! : f(divisorAll + w[j]!);
  if (Math.abs(divisorAll) < f(1e-8)) divisorAll = 1;
  const masks = drop ? Array.from({ length: models }, (_, j) => new MaskStream(a.ints[1]!, a.ints[2]!, j, a.ints[3]!)) : [];
  // fp32 values keep their NaN bits in a Float32Array (a JS array of doubles may not).
  const wd = new Float32Array(models);
  for (let i = 0; i < n; i++) {
    const base = a.x[0]![i]!;
    for (let j = 0; j < models; j++) {
      let d = f(a.x[j + 1]![i]! - base);
      if (trim) d = f(d * (magnitudeKey(d) >= trimKey[j]! ? 1 : 0));
      if (drop) {
        d = f(d * (masks[j]!.word(a.index + i) >= threshold[j]! ? 1 : 0));
        if (rescale) d = f(d / keep[j]!);
      }
      wd[j] = f(d * w[j]!);
    }
    let mixed: number, divisor: number;
    if (consensus) {
      let s = byCount ? signOf(wd[0]!) : wd[0]!;
      for (let j = 1; j < models; j++) s = f(s + (byCount ? signOf(wd[j]!) : wd[j]!));
      const elected = s >= 0 ? 1 : -1;
      mixed = 0;
      divisor = 0;
      for (let j = 0; j < models; j++) {
        const c = signOf(wd[j]!) === elected ? 1 : 0;
        mixed = j === 0 ? f(wd[0]! * c) : f(mixed + f(wd[j]! * c));
        divisor = j === 0 ? f(w[0]! * c) : f(divisor + f(w[j]! * c));
      }
      if (divisor === 0) divisor = 1;
    } else {
      mixed = wd[0]!;
      for (let j = 1; j < models; j++) mixed = f(mixed + wd[j]!);
      divisor = divisorAll;
    }
    if (normalize) mixed = f(mixed / divisor);
    r[i] = canonical(f(base + f(mixed * lambda)));
  }
}

function combine(r: Float32Array, x: Float32Array, y: Float32Array, ca: number, cb: number, n: number): void {
  for (let i = 0; i < n; i++) r[i] = canonical(f(f(x[i]! * ca) + f(y[i]! * cb)));
}

/** The fp32 coefficients of a and b for one tensor (see many_kernels.cc slerp). */
export function slerpCoefficients(t: number, ab: number, aa: number, bb: number, variant: number): [number, number] {
  const na = Math.sqrt(aa), nb = Math.sqrt(bb);
  let ca = 1 - t, cb = t;
  if (variant === 0) {
    const da = na > 1e-8 ? na : 1, db = nb > 1e-8 ? nb : 1;
    const dot = ab / (da * db);
    if (!(Math.abs(dot) > 0.9995)) {
      const theta = detAcos(dot < -1 ? -1 : dot > 1 ? 1 : dot), s = detSin(theta);
      const tt = theta * t;
      ca = detSin(theta - tt) / s;
      cb = detSin(tt) / s;
      if (!Number.isFinite(ca) || !Number.isFinite(cb)) { ca = 1 - t; cb = t; }
    }
  } else {
    let dot = ab / (na * nb);
    dot = dot < -1 ? -1 : dot > 1 ? 1 : dot;
    const omega = detAcos(dot), s = detSin(omega);
    const scale = (1 - t) * na + t * nb;
    const xa = detSin((1 - t) * omega) / s * scale / na, xb = detSin(t * omega) / s * scale / nb;
    if (Number.isFinite(xa) && Number.isFinite(xb)) { ca = xa; cb = xb; }
  }
  return [f(ca), f(cb)];
}

function slerp(r: Float32Array, a: ManyArgs, n: number): void {
  const [ca, cb] = slerpCoefficients(f(a.params[0]!), a.stats[0]!, a.stats[1]!, a.stats[2]!, a.ints[0]!);
  combine(r, a.x[0]!, a.x[1]!, ca, cb, n);
}

/** t of model stock for one tensor, from |δi|² then δi·δj (i < j), as fp32 (many_kernels.cc). */
export function modelStockT(stats: readonly number[], models: number): number {
  let cosSum = 0, pairs = 0, s = models;
  for (let i = 0; i < models; i++) {
    for (let j = i + 1; j < models; j++) {
      const norm = Math.sqrt(stats[i]!) * Math.sqrt(stats[j]!);
      let c = stats[s++]! / (norm > 1e-6 ? norm : 1e-6);
      c = c < -1 ? -1 : c > 1 ? 1 : c;
      cosSum += c;
      pairs++;
    }
  }
  const c = cosSum / pairs;
  const t = f(models * c / (1 + (models - 1) * c));
  return Number.isNaN(t) ? NaN : t; // the positive quiet NaN, as many_kernels.cc
}

function modelStock(r: Float32Array, a: ManyArgs, n: number): void {
  const models = a.x.length - 1;
  const t = modelStockT(a.stats, models);
  const u = f(1 - t);
  for (let i = 0; i < n; i++) {
    let sum = a.x[1]![i]!;
    for (let j = 1; j < models; j++) sum = f(sum + a.x[j + 1]![i]!);
    r[i] = canonical(f(f(t * f(sum / models)) + f(u * a.x[0]![i]!)));
  }
}

/** sd-mecha add_cosine_a / add_cosine_b (many_kernels.cc add_cosine). */
function addCosine(r: Float32Array, a: ManyArgs, n: number): void {
  const alpha = f(a.params[0]!);
  const variant = a.ints[0]!, columns = a.ints[1]!;
  const dot = a.columns![0]!, aa = a.columns![1]!, bb = a.columns![2]!;
  const whole = variant === 1 ? a.stats[3]! / (Math.sqrt(a.stats[4]!) * Math.sqrt(a.stats[5]!)) : 0;
  let c = a.index % columns;
  for (let i = 0; i < n; i++) {
    let sim: number;
    if (variant === 0) {
      const ma = Math.max(Math.sqrt(aa[c]!), 1e-12), mb = Math.max(Math.sqrt(bb[c]!), 1e-12);
      const w12 = dot[c]! / (ma * mb), w1 = aa[c]! / (ma * ma), w2 = bb[c]! / (mb * mb);
      sim = w12 / Math.sqrt(Math.max(w1 * w2, 1e-16));
    } else {
      sim = (dot[c]! / Math.sqrt(Math.max(aa[c]! * bb[c]!, 1e-16)) + whole) / 2;
    }
    const d = sim - alpha;
    const k = f(1 - (d < 0 ? 0 : d > 1 ? 1 : d));
    r[i] = canonical(f(f(f(1 - k) * a.x[0]![i]!) + f(k * a.x[1]![i]!)));
    if (++c === columns) c = 0;
  }
}

export const MANY_KERNELS: Record<string, (r: Float32Array, a: ManyArgs, n: number) => void> = {
  "task-merge": taskMerge,
  slerp,
  "model-stock": modelStock,
  "add-cosine": addCosine,
};
