/**
 * The planner's rows over a base and a list of models (TIES, DARE, DARE-TIES, model stock):
 * for each of the base's keys, one expression reading the base and every model, with the
 * method's per-tensor statistics as piece reductions (lib/native/job.ts). Key rules are the
 * classic rows' (lib/plan.ts) with the base in A's place: the result has the base's keys, order
 * and dtypes; non-float keys are copied from the base; a float key a model lacks keeps the
 * base's values (counted per model); a key whose shape differs in a model is an error (no
 * inpainting exception: task vectors need the same shape).
 */
import { OUTPUT_DTYPE_TO_DTYPE, isMathDtype, isNarrowFloat, type Dtype } from "./dtypes";
import { nameHash } from "./engine/philox";
import { MergeError } from "./errors";
import { sameShape } from "./keys";
import type { ArgRef } from "./methods/define";
import { paramResolver, type RowParams } from "./methods/params";
import { numelOf, shapeToString } from "./model";
import type { BoardRow, PlanStats } from "./plan";
import { callExpr, fixedTensor, keptTensor, withDtype, type Expr, type RowResult, type RowTensor, type VirtualModel } from "./plan-expr";
import { refuseScaledFp8, type Fp8Scale } from "./scaled-fp8";

/** A model's parameters over the row's: its values, patterns (first) and block values win. */
export function modelRowParams(row: RowParams | undefined, model: RowParams | undefined): RowParams | undefined {
  if (!model) return row;
  if (!row) return model;
  const names = new Set([...Object.keys(row.weights ?? {}), ...Object.keys(model.weights ?? {})]);
  return {
    values: { ...row.values, ...model.values },
    weights: Object.fromEntries([...names].map((n) => [n, [...(model.weights?.[n] ?? []), ...(row.weights?.[n] ?? [])]])),
    blockValue: { ...row.blockValue, ...model.blockValue },
  };
}

/** Evaluates a base + models row symbolically (see planRow in plan.ts for the classic one). */
export function planManyRow(row: BoardRow, base: VirtualModel, models: VirtualModel[], stats: PlanStats): RowResult {
  const { method } = row;
  const outFloat = row.dtype ? OUTPUT_DTYPE_TO_DTYPE[row.dtype] : undefined;
  const resolveRow = paramResolver(method, row.params);
  const resolveModel = models.map((_, i) => paramResolver(method, modelRowParams(row.params, row.models?.[i]?.params)));
  stats.missingByModel = models.map(() => 0);
  for (const m of models) stats.extraKeys += m.tensors.filter((t) => !base.byName.has(t.name)).length;
  const result: RowTensor[] = [];
  for (const t of base.tensors) {
    if (row.discard?.(t.name)) {
      stats.discarded++;
      continue;
    }
    const kept = keptTensor(t, row.replace?.get(t.name), outFloat, "the base", stats);
    if (kept) {
      result.push(kept);
      continue;
    }
    const dtype: Dtype = outFloat ?? t.dtype;
    const others = models.map((m) => m.byName.get(t.name));
    let lacking = false;
    others.forEach((other, i) => {
      const m = models[i]!;
      if (!other) {
        lacking = true;
        stats.missingByModel![i]!++;
        return;
      }
      if (!isMathDtype(other.dtype)) {
        throw new MergeError("DTYPE_UNSUPPORTED", `${t.name}: ${other.dtype} in model ${i + 1} (${m.label}) cannot be merged with ${t.dtype} in the base`, { tensor: t.name, path: m.label });
      }
      if (!sameShape(other.shape, t.shape)) {
        throw new MergeError("SHAPE_MISMATCH", `${t.name}: shape ${shapeToString(t.shape)} in the base (${base.label}) but ${shapeToString(other.shape)} in model ${i + 1} (${m.label})`, { tensor: t.name, path: m.label });
      }
    });
    const outside = resolveRow(t.name, row.multipliers[0]!) === null || resolveModel.some((r) => r(t.name, row.multipliers[0]!) === null);
    if (lacking || outside) {
      if (lacking && stats.missingExamples.length < 5) stats.missingExamples.push(t.name);
      result.push(fixedTensor(withDtype(t, dtype)));
      continue;
    }
    const hasIn = (m: VirtualModel) => (key: string) => m.byName.has(key);
    // Base + models methods read fp8 codes as they are: a scaled fp8 weight stays refused here.
    const unscaled = (s: Fp8Scale | undefined): Fp8Scale | undefined => (s ? { tensor: s.tensor, problem: `${method.name} does not merge through fp8 scales` } : undefined);
    refuseScaledFp8(t.name, t.dtype, hasIn(base), base.label, "merging", unscaled(t.scale));
    others.forEach((o, i) => refuseScaledFp8(t.name, o!.dtype, hasIn(models[i]!), models[i]!.label, "merging", unscaled(o!.scale)));
    const whole = (segments: { start: number; count: number; expr: Expr }[], label: string): Expr => {
      if (segments.length !== 1) {
        throw new MergeError("RECIPE_INVALID", `${t.name}: ${method.name} needs the whole tensor, but ${label} computes it in parts (an earlier tensor-sum row)`, { tensor: t.name });
      }
      return segments[0]!.expr;
    };
    const baseExpr = whole(t.segments, `the base (${base.label})`);
    const modelExprs = others.map((o, i) => whole(o!.segments, `model ${i + 1} (${models[i]!.label})`));
    stats.merged++;
    const n = numelOf(t.shape);
    const hash = nameHash(t.name);
    const round: Dtype = isNarrowFloat(dtype) ? dtype : "F32";
    const ref = (a: ArgRef): Expr => {
      if (a === "base") return baseExpr;
      if (typeof a === "number" && modelExprs[a]) return modelExprs[a]!;
      throw new MergeError("INTERNAL", `${method.name}: kernel argument ${String(a)} is not the base or a model`);
    };
    const at = (k: number) => {
      const alpha = row.multipliers[k]!;
      const values = resolveRow(t.name, alpha)!;
      const perModel = resolveModel.map((r) => r(t.name, alpha)!);
      const call = method.kernelFor(values, { name: t.name, nameHash: hash, n, shape: t.shape, models: perModel });
      return [{ start: 0, count: n, expr: callExpr({ ...call, params: call.params.map(Math.fround) }, ref, round, 0) }];
    };
    result.push({ name: t.name, dtype, shape: t.shape, at });
  }
  stats.tensors = result.length;
  return { label: row.outputs?.[0]?.path ?? row.name, count: row.multipliers.length, tensors: result };
}
