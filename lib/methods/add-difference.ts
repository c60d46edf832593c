import { defineMethod } from "./define";

/** Adds what B learned over its base C to A. */
export const addDifference = defineMethod({
  name: "add-difference",
  summary: "add B's difference from C to A",
  formula: "A + (B−C)·M",
  inputs: ["a", "b", "c"],
  usesMultiplier: true,
  multiplierRange: [-2, 2],
  kernelFor: (m) => ({ kernel: "add-difference", args: ["a", "b", "c"], params: [m] }),
});
