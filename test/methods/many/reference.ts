/**
 * Independent reference computations for the many-model methods, written from the published
 * formulas (mergekit generalized_task_arithmetic.py / sparsify.py / model_stock.py / slerp.py,
 * sd-mecha slerp) with plain arrays: sorting for the k-th magnitude, BigInt for Philox, Math.*
 * for the angles. Nothing here imports the code under test.
 */
import { readModel, writeModel, type TestTensor } from "../../helpers/models";

const f = Math.fround;

/** Philox4x32-10 (Random123) with BigInt arithmetic. */
export function philoxRef(ctr: [number, number, number, number], key: [number, number]): number[] {
  const MASK = 0xffffffffn;
  let [c0, c1, c2, c3] = ctr.map(BigInt) as [bigint, bigint, bigint, bigint];
  let [k0, k1] = key.map(BigInt) as [bigint, bigint];
  for (let r = 0; r < 10; r++) {
    const p0 = 0xd2511f53n * c0, p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [((p1 >> 32n) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32n) ^ c3 ^ k1) & MASK, p0 & MASK];
    k0 = (k0 + 0x9e3779b9n) & MASK;
    k1 = (k1 + 0xbb67ae85n) & MASK;
  }
  return [c0, c1, c2, c3].map(Number);
}

/** FNV-1a 32-bit over UTF-8 bytes. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5n;
  for (const b of new TextEncoder().encode(text)) h = ((h ^ BigInt(b)) * 0x01000193n) & 0xffffffffn;
  return Number(h);
}

/** Whether element `index` of model `model` survives DARE's drop (README "Many models": mask words). */
export function keptRef(seed: number, model: number, name: string, index: number, dropRate: number): boolean {
  const g = Math.floor(index / 4);
  const word = philoxRef([g % 2 ** 32, Math.floor(g / 2 ** 32), model, fnv1a(name)], [seed % 2 ** 32, Math.floor(seed / 2 ** 32)])[index % 4]!;
  return word >= Math.min(2 ** 32 - 1, Math.round(dropRate * 2 ** 32));
}

export interface TaskMergeRef {
  weights: number[];
  lambda: number;
  /** TIES trim per model (1: none). */
  density?: number[];
  /** DARE per model, with its seed and the tensor name keying the masks. */
  drop?: { rates: number[]; seed: number; name: string; rescale: boolean };
  consensus?: "sum" | "count";
  normalize: boolean;
}

function sign(x: number): number {
  return x > 0 ? 1 : x < 0 ? -1 : 0;
}

/** mergekit's generalized task arithmetic on one tensor, element by element in fp32. */
export function taskMergeRef(base: number[], models: number[][], o: TaskMergeRef): number[] {
  const n = base.length;
  const w = o.weights.map(f);
  const deltas = models.map((m, j) => {
    let d = m.map((x, i) => f(x - base[i]!));
    const density = o.density?.[j] ?? 1;
    if (density < 1) {
      // magnitude(): the top k = int(density·n) magnitudes; ties with the k-th are kept.
      const k = Math.trunc(density * n);
      const sorted = d.map(Math.abs).sort((x, y) => y - x);
      d = k === 0 ? d.map((x) => f(x * 0)) : d.map((x) => (Math.abs(x) >= sorted[k - 1]! ? x : f(x * 0)));
    }
    if (o.drop) {
      const { rates, seed, name, rescale } = o.drop;
      d = d.map((x, i) => {
        const kept = f(x * (keptRef(seed, j, name, i, rates[j]!) ? 1 : 0));
        return rescale ? f(kept / f(1 - rates[j]!)) : kept;
      });
    }
    return d.map((x) => f(x * w[j]!));
  });
  return base.map((b, i) => {
    const wd = deltas.map((d) => d[i]!);
    let mixed: number, divisor: number;
    if (o.consensus) {
      const s = wd.slice(1).reduce((acc, x) => f(acc + (o.consensus === "count" ? sign(x) : x)), o.consensus === "count" ? sign(wd[0]!) : wd[0]!);
      const elected = s >= 0 ? 1 : -1;
      const mask = wd.map((x) => (sign(x) === elected ? 1 : 0));
      mixed = wd.slice(1).reduce((acc, x, j) => f(acc + f(x * mask[j + 1]!)), f(wd[0]! * mask[0]!));
      divisor = w.slice(1).reduce((acc, x, j) => f(acc + f(x * mask[j + 1]!)), f(w[0]! * mask[0]!));
      if (divisor === 0) divisor = 1;
    } else {
      mixed = wd.slice(1).reduce((acc, x) => f(acc + x), wd[0]!);
      divisor = w.slice(1).reduce((acc, x) => f(acc + x), w[0]!);
      if (Math.abs(divisor) < f(1e-8)) divisor = 1;
    }
    if (o.normalize) mixed = f(mixed / divisor);
    return f(b + f(mixed * f(o.lambda)));
  });
}

const dot = (x: number[], y: number[]) => x.reduce((s, v, i) => s + v * y[i]!, 0);

/** mergekit model_stock (filter_wise false), in double, then t as fp32. */
export function modelStockRef(base: number[], models: number[][]): number[] {
  const deltas = models.map((m) => m.map((x, i) => f(x - base[i]!)));
  const cos: number[] = [];
  for (let i = 0; i < deltas.length; i++) {
    for (let j = i + 1; j < deltas.length; j++) {
      const c = dot(deltas[i]!, deltas[j]!) / Math.max(Math.sqrt(dot(deltas[i]!, deltas[i]!)) * Math.sqrt(dot(deltas[j]!, deltas[j]!)), 1e-6);
      cos.push(Math.min(1, Math.max(-1, c)));
    }
  }
  const c = cos.reduce((s, x) => s + x, 0) / cos.length;
  const N = models.length;
  const t = f((N * c) / (1 + (N - 1) * c));
  return base.map((b, i) => {
    const avg = f(models.slice(1).reduce((s, m) => f(s + m[i]!), models[0]![i]!) / N);
    return f(f(t * avg) + f(f(1 - t) * b));
  });
}

/** mergekit slerp (numpy) or sd-mecha's, coefficients in double with Math.acos / Math.sin. */
export function slerpRef(a: number[], b: number[], t: number, variant: "mergekit" | "mecha"): number[] {
  const na = Math.sqrt(dot(a, a)), nb = Math.sqrt(dot(b, b));
  let ca = 1 - t, cb = t;
  if (variant === "mergekit") {
    const c = dot(a, b) / ((na > 1e-8 ? na : 1) * (nb > 1e-8 ? nb : 1));
    if (Math.abs(c) <= 0.9995) {
      const theta = Math.acos(c);
      ca = Math.sin(theta - theta * t) / Math.sin(theta);
      cb = Math.sin(theta * t) / Math.sin(theta);
    }
  } else {
    const omega = Math.acos(Math.min(1, Math.max(-1, dot(a, b) / (na * nb))));
    const scale = (1 - t) * na + t * nb;
    const xa = (Math.sin((1 - t) * omega) / Math.sin(omega)) * scale / na, xb = (Math.sin(t * omega) / Math.sin(omega)) * scale / nb;
    if (Number.isFinite(xa) && Number.isFinite(xb)) { ca = xa; cb = xb; }
  }
  return a.map((x, i) => f(f(x * f(ca)) + f(b[i]! * f(cb))));
}

/**
 * Max |x − y| relative to the tensor's largest |y|, for references whose per-tensor
 * coefficients are computed in another order (a coefficient's last fp32 bit moves every element
 * by about one ulp of the largest ones, whatever cancellation leaves of each).
 */
export function maxRelativeError(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let worst = 0, scale = 0;
  for (let i = 0; i < y.length; i++) {
    worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    scale = Math.max(scale, Math.abs(y[i]!));
  }
  return scale === 0 ? worst : worst / scale;
}

export function tensorOf(path: string, name: string): number[] {
  return readModel(path).tensors.get(name)!.values;
}

export { writeModel, type TestTensor };
