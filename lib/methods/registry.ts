/** Every merge method, by name. Add a method by adding its module to this list. */
import { MergeError } from "../errors";
import { addDifference } from "./add-difference";
import type { MergeMethod } from "./define";
import { multiplyDifference, similarityAddDifference, sumTwice, tensorSum, trainDifference, tripleSum } from "./elementwise";
import { inverseSigmoid } from "./inverse-sigmoid";
import { addCosineA, addCosineB } from "./many/add-cosine";
import { modelStock } from "./many/model-stock";
import { slerp, slerpMecha } from "./many/slerp";
import { dare, dareTies, ties } from "./many/task-merge";
import { noInterpolation } from "./no-interpolation";
import { sigmoid } from "./sigmoid";
import { weightedSum } from "./weighted-sum";

export const METHODS: readonly MergeMethod[] = [
  weightedSum, addDifference, sigmoid, inverseSigmoid, noInterpolation,
  trainDifference, tripleSum, sumTwice, multiplyDifference, similarityAddDifference, tensorSum,
  slerp, slerpMecha, ties, dare, dareTies, modelStock, addCosineA, addCosineB,
];

const byName = new Map<string, MergeMethod>();
for (const m of METHODS) {
  if (byName.has(m.name)) throw new Error(`duplicate merge method ${m.name}`);
  byName.set(m.name, m);
}

export type MethodName =
  | "weighted-sum" | "add-difference" | "sigmoid" | "inverse-sigmoid" | "no-interpolation"
  | "train-difference" | "triple-sum" | "sum-twice" | "multiply-difference" | "similarity-add-difference" | "tensor-sum"
  | "slerp" | "slerp-mecha" | "ties" | "dare" | "dare-ties" | "model-stock" | "add-cosine-a" | "add-cosine-b";

function editDistance(x: string, y: string): number {
  const d = Array.from({ length: x.length + 1 }, (_, i) => [i, ...new Array<number>(y.length).fill(0)]);
  for (let j = 1; j <= y.length; j++) d[0]![j] = j;
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
  }
  return d[x.length]![y.length]!;
}

/** Finds a method by name; on a typo, the error suggests the nearest name. */
export function resolveMethod(name: string): MergeMethod {
  const method = byName.get(name);
  if (method) return method;
  const nearest = [...byName.keys()].sort((p, q) => editDistance(name, p) - editDistance(name, q))[0];
  throw new MergeError("METHOD_UNKNOWN", `unknown merge method "${name}" (did you mean "${nearest}"? methods: ${[...byName.keys()].join(", ")})`);
}
