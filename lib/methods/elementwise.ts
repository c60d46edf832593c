/**
 * The element-wise method family of SuperMerger, sd-meh and sd-mecha. Each formula follows its
 * published implementation in operation order (README "Merge methods" cites them); the kernels
 * are native/core/method_kernels.cc and lib/engine/method-kernels.ts. Parameters derived from
 * α and β (1−α, α·1.8…) are computed here in double, then rounded once to fp32 by the planner,
 * as torch rounds a Python scalar.
 */
import { alphaParam, betaParam, defineMethod, type RowSpan } from "./define";

/** SuperMerger "TD" (hako-mikan/sd-webui-supermerger, scripts/mergers/mergers.py). */
export const trainDifference = defineMethod({
  name: "train-difference",
  summary: "add B−C to A, scaled per element by how far B is from A",
  formula: "A + (B−C)·α·1.8·|B−A| / (|B−C| + |B−A|), 0 where the denominator is 0",
  source: "SuperMerger mergers.py mode TD: A + sign(B−C)·(|B−A|/(|B−C|+|B−A|))·|B−C|·(α·1.8)",
  inputs: ["a", "b", "c"],
  params: [alphaParam("weight of the trained difference", [-2, 2], 1)],
  kernelFor: ([alpha = 0]) => ({ kernel: "train-difference", args: ["a", "b", "c"], params: [alpha * 1.8] }),
});

/** sd-meh merge_methods.triple_sum. */
export const tripleSum = defineMethod({
  name: "triple-sum",
  summary: "weighted sum of A, B and C",
  formula: "(1−α−β)·A + α·B + β·C",
  source: "sd-meh merge_methods.py triple_sum",
  inputs: ["a", "b", "c"],
  params: [alphaParam("weight of B", [-1, 2], 0.33), betaParam("weight of C", [-1, 2], 0.33)],
  kernelFor: ([alpha = 0, beta = 0]) => ({ kernel: "triple-sum", args: ["a", "b", "c"], params: [1 - alpha - beta, alpha, beta] }),
});

/** sd-meh merge_methods.sum_twice. */
export const sumTwice = defineMethod({
  name: "sum-twice",
  summary: "weighted sum of A and B, then with C",
  formula: "(1−β)·((1−α)·A + α·B) + β·C",
  source: "sd-meh merge_methods.py sum_twice",
  inputs: ["a", "b", "c"],
  params: [alphaParam("weight of B", [-1, 2]), betaParam("weight of C", [-1, 2], 0.25)],
  kernelFor: ([alpha = 0, beta = 0]) => ({ kernel: "sum-twice", args: ["a", "b", "c"], params: [1 - alpha, alpha, 1 - beta, beta] }),
});

/** sd-meh merge_methods.multiply_difference (SuperMerger has the same). */
export const multiplyDifference = defineMethod({
  name: "multiply-difference",
  summary: "geometric mix of A−C and B−C, signed by the weighted sum",
  formula: "C + copysign(|A−C|^(1−α)·|B−C|^α, (1−β)·A + β·B − C)",
  source: "sd-meh merge_methods.py multiply_difference",
  inputs: ["a", "b", "c"],
  params: [alphaParam("exponent of |B−C|", [0, 1]), betaParam("weight of B in the sign", [0, 1])],
  kernelFor: ([alpha = 0, beta = 0]) => ({ kernel: "multiply-difference", args: ["a", "b", "c"], params: [1 - alpha, alpha, 1 - beta, beta] }),
});

/** sd-meh merge_methods.similarity_add_difference. */
export const similarityAddDifference = defineMethod({
  name: "similarity-add-difference",
  summary: "add difference where A and B disagree, average where they agree",
  formula: "s = β·((A·B/max(|A|,|B|)² + 1)/2) (β where undefined); (1−s)·(A + α·(B−C)) + s·((1−α/2)·A + (α/2)·B)",
  source: "sd-meh merge_methods.py similarity_add_difference",
  inputs: ["a", "b", "c"],
  params: [alphaParam("weight of B−C", [-2, 2], 1), betaParam("similarity weight", [0, 1])],
  kernelFor: ([alpha = 0, beta = 0]) => ({ kernel: "similarity-add-difference", args: ["a", "b", "c"], params: [alpha, beta, 1 - alpha / 2, alpha / 2] }),
});

/**
 * SuperMerger mode TS (and sd-meh tensor_sum): rows [⌊nβ⌋, ⌊n(α+β)⌋) along dim 0 from B, the
 * rest from A; when α+β > 1 the span wraps: B everywhere except rows [⌊n(α+β−1)⌋, ⌊nβ⌋).
 * The products are Python doubles truncated by int(), as there.
 */
export function tensorSumSpans(alpha: number, beta: number, rows: number): { from: number; to: number }[] {
  const clip = (x: number) => Math.min(rows, Math.max(0, x));
  if (alpha + beta <= 1) {
    const from = clip(Math.trunc(rows * beta)), to = clip(Math.trunc(rows * (alpha + beta)));
    return to > from ? [{ from, to }] : [];
  }
  const s = clip(Math.trunc(rows * (alpha + beta - 1))), e = clip(Math.trunc(rows * beta));
  if (e <= s) return [{ from: 0, to: rows }];
  return [{ from: 0, to: s }, { from: e, to: rows }].filter((r) => r.to > r.from);
}

export const tensorSum = defineMethod({
  name: "tensor-sum",
  summary: "take a band of rows (dim 0) from B, the rest from A",
  formula: "rows [⌊nβ⌋, ⌊n(α+β)⌋) from B, the others from A (wrapping when α+β > 1)",
  source: "SuperMerger mergers.py mode TS; sd-meh merge_methods.py tensor_sum",
  inputs: ["a", "b"],
  params: [alphaParam("share of rows from B", [0, 1]), betaParam("where the band starts", [0, 1], 0)],
  kernelFor: () => ({ kernel: "copy", args: ["a"], params: [] }),
  rowSpans: ([alpha = 0, beta = 0], rows): RowSpan[] => tensorSumSpans(alpha, beta, rows).map((r) => ({ ...r, call: { kernel: "copy", args: ["b"], params: [] } })),
});
