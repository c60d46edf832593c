import { alphaParam, defineMethod } from "./define";

/** Adds what B learned over its base C to A. */
export const addDifference = defineMethod({
  name: "add-difference",
  summary: "add B's difference from C to A",
  formula: "A + (B−C)·M",
  inputs: ["a", "b", "c"],
  params: [alphaParam("weight of B−C", [-2, 2])],
  kernelFor: ([m = 0]) => ({ kernel: "add-difference", args: ["a", "b", "c"], params: [m] }),
});
