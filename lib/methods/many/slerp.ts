/**
 * Spherical interpolation between A and B per tensor (flattened), in two published variants:
 *   slerp        mergekit (mergekit/merge_methods/slerp.py): θ = acos(A·B / |A||B|) (norms ≤ 1e-8
 *                count as 1); when |cos θ| > 0.9995 the linear (1−t)·A + t·B; otherwise
 *                R = A·sin((1−t)θ)/sin θ + B·sin(tθ)/sin θ, on the tensors as they are;
 *   slerp-mecha  sd-mecha (ljleb/sd-mecha, merge_methods slerp): the same angle on the unit
 *                directions, then scaled by the interpolated norm (1−t)·|A| + t·|B|; where that
 *                is undefined (sin ω = 0, a zero tensor) the weighted sum, as sd-mecha falls back.
 * Coefficients are computed once per tensor in double (native/core/det_math.cc), rounded to fp32,
 * then R = A·ca + B·cb elementwise.
 */
import { SLERP_VARIANT } from "../../native/job";
import { alphaParam, defineMethod, type KernelCall } from "../define";

function slerpCall(t: number, variant: number): KernelCall {
  return {
    kernel: "slerp", args: ["a", "b"], params: [t], ints: [variant],
    stats: [{ kind: "dot", args: ["a", "b"] }, { kind: "sum-squares", args: ["a"] }, { kind: "sum-squares", args: ["b"] }],
  };
}

export const slerp = defineMethod({
  name: "slerp",
  summary: "spherical interpolation between A and B per tensor (mergekit)",
  formula: "θ = acos(A·B/|A||B|); R = A·sin((1−M)θ)/sin θ + B·sin(Mθ)/sin θ; (1−M)·A + M·B when |cos θ| > 0.9995",
  source: "mergekit merge_methods/slerp.py",
  inputs: ["a", "b"],
  params: [alphaParam("t, the position from A (0) to B (1)", [-1, 2])],
  kernelFor: ([t = 0.5]) => slerpCall(t, SLERP_VARIANT.mergekit),
});

export const slerpMecha = defineMethod({
  name: "slerp-mecha",
  summary: "spherical interpolation of the directions, norms interpolated linearly (sd-mecha)",
  formula: "ω = acos(Â·B̂); R = (Â·sin((1−M)ω) + B̂·sin(Mω))/sin ω · ((1−M)|A| + M|B|)",
  source: "sd-mecha merge_methods slerp",
  inputs: ["a", "b"],
  params: [alphaParam("t, the position from A (0) to B (1)", [-1, 2])],
  kernelFor: ([t = 0.5]) => slerpCall(t, SLERP_VARIANT.mecha),
});
