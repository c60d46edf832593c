import { alphaParam, defineMethod } from "./define";

/** Smoothstep on M: changes little near 0 and 1, most around 0.5. */
export function sigmoidWeight(m: number): number {
  return m * m * (3 - 2 * m);
}

export const sigmoid = defineMethod({
  name: "sigmoid",
  summary: "interpolate with a smoothstep-shaped weight",
  formula: "A + (B−A)·k, k = M²·(3−2M)",
  inputs: ["a", "b"],
  params: [alphaParam("position between A and B", [0, 1])],
  kernelFor: ([m = 0]) => ({ kernel: "lerp", args: ["a", "b"], params: [sigmoidWeight(m)] }),
});
