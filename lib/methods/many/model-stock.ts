/**
 * Model stock (Jang et al. 2024) as mergekit implements it (mergekit/merge_methods/
 * model_stock.py, filter_wise false): per tensor, δi = Mi − base, c = the mean over pairs i < j
 * of cos(δi, δj) (norm products below 1e-6 count as 1e-6, cosines clamped to [−1, 1]),
 * t = N·c / (1 + (N−1)·c), R = t·mean(Mi) + (1 − t)·base.
 */
import { defineMethod, type StatSpec } from "../define";

export const modelStock = defineMethod({
  name: "model-stock",
  summary: "move from the base toward the models' mean by how much their task vectors agree",
  formula: "c = mean cos(Mi − base, Mj − base); t = N·c/(1+(N−1)·c); R = t·mean(Mi) + (1−t)·base",
  source: "mergekit model_stock.py; Jang et al., Model Stock (2024)",
  inputs: [],
  many: { base: true, min: 2, max: 15 },
  params: [],
  kernelFor: (_values, tensor) => {
    const n = tensor?.models?.length ?? 2;
    const delta = (i: number) => ({ minus: [i, "base"] as const });
    const stats: StatSpec[] = [];
    for (let i = 0; i < n; i++) stats.push({ kind: "sum-squares", args: [delta(i)] });
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) stats.push({ kind: "dot", args: [delta(i), delta(j)] });
    return { kernel: "model-stock", args: ["base", ...Array.from({ length: n }, (_, i) => i)], params: [], stats };
  },
});
