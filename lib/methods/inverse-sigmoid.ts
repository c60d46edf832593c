import { alphaParam, defineMethod } from "./define";

/** The inverse of smoothstep: moves fast near 0 and 1, slowly around 0.5. */
export function inverseSigmoidWeight(m: number): number {
  return 0.5 - Math.sin(Math.asin(1 - 2 * m) / 3);
}

export const inverseSigmoid = defineMethod({
  name: "inverse-sigmoid",
  summary: "interpolate with an inverse-smoothstep weight",
  formula: "A + (B−A)·k, k = 0.5 − sin(asin(1−2M)/3)",
  inputs: ["a", "b"],
  params: [alphaParam("position between A and B", [0, 1])],
  kernelFor: ([m = 0]) => ({ kernel: "lerp", args: ["a", "b"], params: [inverseSigmoidWeight(m)] }),
});
