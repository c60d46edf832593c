import { defineMethod } from "./define";

/** A as it is: converts the format or dtype, or serves as the base for component replacement. */
export const noInterpolation = defineMethod({
  name: "no-interpolation",
  summary: "copy A (format or dtype conversion)",
  formula: "A",
  inputs: ["a"],
  params: [],
  kernelFor: () => ({ kernel: "copy", args: ["a"], params: [] }),
});
