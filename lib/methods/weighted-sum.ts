import { alphaParam, defineMethod } from "./define";

/** The classic tool computes `(1 − M)·A + M·B`, with both weights rounded to fp32 as torch does. */
export const weightedSum = defineMethod({
  name: "weighted-sum",
  summary: "interpolate between A and B",
  formula: "A·(1−M) + B·M",
  inputs: ["a", "b"],
  params: [alphaParam("weight of B", [-1, 2])],
  kernelFor: ([m = 0]) => ({ kernel: "weighted-sum", args: ["a", "b"], params: [1 - m, m] }),
});
