/**
 * sd-mecha's cosine forms (ljleb/sd-mecha, merge_methods add_cosine_a / add_cosine_b): a weighted
 * sum of A and B whose weight k = 1 − clamp(similarity − α, 0, 1) comes from the cosine of A's and
 * B's columns along dim 0 (torch cosine_similarity(·, ·, dim=0), one value per column of a
 * [rows, …] tensor, one per tensor for a 1-D one):
 *   add-cosine-a  the columns' cosine, after normalising each column (F.normalize, eps 1e-12);
 *   add-cosine-b  the mean of the columns' cosine and the whole tensors' A·B / (‖A‖‖B‖).
 * R = (1 − k)·A + k·B elementwise. The column sums are per-column piece reductions.
 */
import { alphaParam, defineMethod, type KernelCall, type StatSpec, type TensorContext } from "../define";

function addCosineCall(alpha: number, variant: number, tensor?: TensorContext): KernelCall {
  const n = tensor?.n ?? 0;
  const rows = tensor?.shape?.[0];
  const columns = rows && rows > 0 && tensor!.shape!.length > 1 ? n / rows : 1;
  const stats: StatSpec[] = [
    { kind: "dot", args: ["a", "b"], columns },
    { kind: "sum-squares", args: ["a"], columns },
    { kind: "sum-squares", args: ["b"], columns },
  ];
  if (variant === 1) stats.push({ kind: "dot", args: ["a", "b"] }, { kind: "sum-squares", args: ["a"] }, { kind: "sum-squares", args: ["b"] });
  return { kernel: "add-cosine", args: ["a", "b"], params: [alpha], ints: [variant, columns], stats, keyed: true };
}

const alpha = alphaParam("the similarity below which B's weight falls from 1", [-1, 2], 1);

export const addCosineA = defineMethod({
  name: "add-cosine-a",
  summary: "weighted sum of A and B, B's weight from each column's cosine similarity (sd-mecha)",
  formula: "s = cos(Â_col, B̂_col) along dim 0; k = 1 − clamp(s − α, 0, 1); R = (1−k)·A + k·B",
  source: "sd-mecha merge_methods add_cosine_a",
  inputs: ["a", "b"],
  params: [alpha],
  kernelFor: ([a = 1], tensor) => addCosineCall(a, 0, tensor),
});

export const addCosineB = defineMethod({
  name: "add-cosine-b",
  summary: "as add-cosine-a, the similarity averaged with the whole tensors' cosine (sd-mecha)",
  formula: "s = (cos(A_col, B_col) + A·B/(‖A‖‖B‖))/2; k = 1 − clamp(s − α, 0, 1); R = (1−k)·A + k·B",
  source: "sd-mecha merge_methods add_cosine_b",
  inputs: ["a", "b"],
  params: [alpha],
  kernelFor: ([a = 1], tensor) => addCosineCall(a, 1, tensor),
});
