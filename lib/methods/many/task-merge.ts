/**
 * TIES, DARE and DARE-TIES: mergekit's generalized task arithmetic
 * (arcee-ai/mergekit, mergekit/merge_methods/generalized_task_arithmetic.py, sparsify.py,
 * registry.py) over a base and 1–15 models, as one `task-merge` kernel (native/core/
 * many_kernels.cc) whose flags pick the steps. Per tensor, with δi = Mi − base:
 *   ties:      keep the top `density` of |δi| (k = ⌊density·n⌋, exact, ties at the k-th kept),
 *              elect a sign per element (weighted sum, or count), average the agreeing wi·δi
 *              (divided by the sum of their weights), r = base + λ·that;
 *   dare:      drop each δi element with probability `drop-rate` p, keep the rest ×1/(1−p),
 *              r = base + λ·Σ wi·δi (mergekit dare_linear);
 *   dare-ties: dare's drop, then ties's sign election (normalize off by default, as mergekit).
 * Deliberate differences from mergekit: DARE rescales by 1/(1−p) as the DARE paper does
 * (mergekit ≥ 0.1 rescales to the L1 norm of the unmasked δ); masks come from Philox keyed by
 * (seed, model index, tensor name, element index), not torch.bernoulli; mergekit refuses
 * density·n < 1, here such a tensor keeps none of that model's δ.
 */
import { TASK_MERGE_FLAGS as F } from "../../native/job";
import { dropThreshold, seedWords } from "../../engine/philox";
import { alphaParam, defineMethod, type KernelCall, type MethodParam, type StatSpec, type TensorContext } from "../define";

const MAX_MODELS = 15;
const MAX_SEED = Number.MAX_SAFE_INTEGER;

const weight: MethodParam = { name: "weight", summary: "weight of each model's task vector (per model: --weights)", default: 1, range: [-10, 10], perModel: true };
const density: MethodParam = { name: "density", summary: "share of each task vector's largest magnitudes kept, per tensor", default: 1, range: [0, 1], perModel: true };
const dropRate: MethodParam = { name: "drop-rate", summary: "probability of dropping each task-vector element", default: 0.9, range: [0, 0.999999], perModel: true };
const seed: MethodParam = { name: "seed", summary: "seed of the drop masks", default: 0, range: [0, MAX_SEED], integer: true };
const byCount: MethodParam = { name: "sign-by-count", summary: "1: elect each element's sign by the count of signs instead of the weighted sum", default: 0, range: [0, 1], integer: true };
const rescale: MethodParam = { name: "rescale", summary: "1: divide kept elements by 1 − drop-rate", default: 1, range: [0, 1], integer: true };
const normalize = (def: number): MethodParam => ({ name: "normalize", summary: "1: divide by the sum of the weights that count", default: def, range: [0, 1], integer: true });
const lambda = alphaParam("λ, the scale of the merged task vector (--multiplier, --lambda)", [-10, 10], 1);

type Values = Record<string, number>;
function valuesOf(params: readonly MethodParam[], list: readonly number[]): Values {
  return Object.fromEntries(params.map((p, i) => [p.name, list[i]!]));
}

/** One tensor's task-merge call from the row's values and each model's. */
function taskMergeCall(params: readonly MethodParam[], steps: { trim: boolean; drop: boolean; consensus: boolean }, list: readonly number[], tensor?: TensorContext): KernelCall {
  const row = valuesOf(params, list);
  const models = (tensor?.models ?? [list]).map((m) => valuesOf(params, m));
  const n = tensor?.n ?? 0;
  const trim = steps.trim && models.some((m) => m.density! < 1);
  const rescaled = steps.drop && row.rescale === 1;
  let flags = 0;
  if (trim) flags |= F.TRIM;
  if (steps.drop) flags |= F.DROP;
  if (rescaled) flags |= F.RESCALE;
  if (steps.consensus) flags |= F.CONSENSUS;
  if (steps.consensus && row["sign-by-count"] === 1) flags |= F.BY_COUNT;
  if (row.normalize === 1) flags |= F.NORMALIZE;
  const [seedLo, seedHi] = seedWords(steps.drop ? row.seed! : 0);
  const stats: StatSpec[] = trim ? models.map((m, i) => ({ kind: "kth-magnitude", args: [{ minus: [i, "base"] }], k: Math.min(n, Math.trunc(m.density! * n)) })) : [];
  return {
    kernel: "task-merge",
    args: ["base", ...models.map((_, i) => i)],
    params: [...models.map((m) => m.weight!), row.alpha!, ...models.map((m) => (steps.drop ? 1 - m["drop-rate"]! : 1))],
    ints: [flags, seedLo, seedHi, tensor?.nameHash ?? 0, ...models.map((m) => (steps.drop ? dropThreshold(m["drop-rate"]!) : 0))],
    ...(stats.length ? { stats } : {}),
    ...(steps.drop ? { keyed: true } : {}),
  };
}

const tiesParams = [lambda, weight, density, byCount, normalize(1)];
export const ties = defineMethod({
  name: "ties",
  summary: "TIES: trim each task vector to its largest magnitudes, elect signs, average the agreeing ones",
  formula: "δi = Mi − base, top ⌊density·n⌋ |δi| kept; s = sign(Σ wi·δi); R = base + λ·Σ[sign(wi·δi)=s]·wi·δi / Σ[sign(wi·δi)=s]·wi",
  source: "mergekit generalized_task_arithmetic.py (ties: magnitude sparsification, sum consensus, normalize); Yadav et al. 2023",
  inputs: [],
  many: { base: true, min: 1, max: MAX_MODELS },
  params: tiesParams,
  kernelFor: (values, tensor) => taskMergeCall(tiesParams, { trim: true, drop: false, consensus: true }, values, tensor),
});

const dareParams = [lambda, weight, dropRate, seed, rescale, normalize(0)];
export const dare = defineMethod({
  name: "dare",
  summary: "DARE: drop task-vector elements at random (reproducible from a seed), rescale, add",
  formula: "δi = Mi − base, each element kept with probability 1−p and divided by 1−p; R = base + λ·Σ wi·δi",
  source: "mergekit dare_linear (generalized_task_arithmetic.py, random sparsification); Yu et al. 2023",
  inputs: [],
  many: { base: true, min: 1, max: MAX_MODELS },
  params: dareParams,
  kernelFor: (values, tensor) => taskMergeCall(dareParams, { trim: false, drop: true, consensus: false }, values, tensor),
});

const dareTiesParams = [lambda, weight, dropRate, seed, rescale, byCount, normalize(0)];
export const dareTies = defineMethod({
  name: "dare-ties",
  summary: "DARE-TIES: DARE's random drop, then TIES's sign election",
  formula: "δi dropped and rescaled as dare; s = sign(Σ wi·δi); R = base + λ·Σ[sign(wi·δi)=s]·wi·δi",
  source: "mergekit dare_ties (generalized_task_arithmetic.py: random sparsification, sum consensus)",
  inputs: [],
  many: { base: true, min: 1, max: MAX_MODELS },
  params: dareTiesParams,
  kernelFor: (values, tensor) => taskMergeCall(dareTiesParams, { trim: false, drop: true, consensus: true }, values, tensor),
});
