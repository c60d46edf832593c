/**
 * The steps mergekit's linear and task-arithmetic merges of N models are built from, as board
 * rows: each is one existing kernel with per-tensor parameters, chained in fp32 (intermediate
 * rows round through F32, i.e. not at all), so N models cost N−1 kernel calls per element and
 * no intermediate file. Not in the registry: only lib/hf/mergekit.ts builds rows with them.
 *
 * - linear (mergekit `merge_methods/linear.py`): R = Σ wᵢ·xᵢ / D, D = Σ wᵢ when `normalize`
 *   (default true), else 1. Step k: R_k = R_{k−1}·(D_{k−1}/D_k) + x_k·(w_k/D_k), with
 *   R_1 = x_0·(w_0/D_1) + x_1·(w_1/D_1): the `weighted-sum` kernel a·p + b·q.
 * - task_arithmetic (`generalized_task_arithmetic.py`, no sparsification, no consensus):
 *   R = base + Σ wᵢ·(xᵢ − base) / D, D = Σ wᵢ when `normalize` (default false; |D| < 1e−8 → 1).
 *   Step k: R_k = R_{k−1} + (x_k − base)·(w_k/D): the `add-difference` kernel.
 */
import { alphaParam, betaParam, defineMethod } from "../methods/define";

const WIDE: readonly [number, number] = [-1e6, 1e6];

export const linearStep = defineMethod({
  name: "linear",
  summary: "one step of mergekit's linear merge: A·p + B·q",
  formula: "A·p + B·q",
  source: "mergekit merge_methods/linear.py",
  inputs: ["a", "b"],
  params: [alphaParam("weight of A", WIDE, 1), betaParam("weight of B", WIDE, 0)],
  kernelFor: ([p = 1, q = 0]) => ({ kernel: "weighted-sum", args: ["a", "b"], params: [p, q] }),
});

export const taskVectorStep = defineMethod({
  name: "task_arithmetic",
  summary: "one step of mergekit's task arithmetic: A + (B − C)·w",
  formula: "A + (B−C)·w",
  source: "mergekit merge_methods/generalized_task_arithmetic.py",
  inputs: ["a", "b", "c"],
  params: [alphaParam("weight of B−C", WIDE, 0)],
  kernelFor: ([w = 0]) => ({ kernel: "add-difference", args: ["a", "b", "c"], params: [w] }),
});
