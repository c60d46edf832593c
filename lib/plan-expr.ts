/**
 * The planner's expressions (lib/plan.ts): a virtual model's tensor is a list of segments, each
 * an expression over input-file tensors, and a row's result is such a model for each of its
 * multipliers. Building, shifting, converting and scaling them is here; evaluating a row is
 * lib/plan-row.ts (A/B/C methods) and lib/plan-many.ts (base + models); turning them into job
 * pieces is lib/plan-pieces.ts.
 */
import { isMathDtype, isNarrowFloat, type Dtype } from "./dtypes";
import { MergeError } from "./errors";
import { readableTensor } from "./formats/ckpt/strided";
import { isCopiedAsIs, sameShape } from "./keys";
import type { Fp8Scale } from "./scaled-fp8";
import type { ArgRef, KernelCall, StatOperand } from "./methods/define";
import { numelOf, shapeToString, type ModelFile, type TensorInfo } from "./model";
import type { KernelName, ReductionName } from "./native/job";
import type { PlanStats } from "./plan";

/** A value expression for a run of consecutive elements of one tensor. */
export type Expr =
  | { kind: "file"; model: ModelFile; tensor: TensorInfo; base: number }
  | {
    kind: "op"; kernel: KernelName; args: Expr[]; params: number[]; round: Dtype;
    /** Statistics over the whole tensor (piece reductions): such an expression is never cut. */
    stats?: StatExpr[];
    ints?: number[];
    /** Mask kernels: the element index, in the keyed tensor, of this expression's element 0. */
    elementStart?: number;
  };

/** A per-tensor statistic of expressions (a JobReduction once built). */
export interface StatExpr {
  kind: ReductionName;
  args: Expr[];
  k?: number;
  columns?: number;
}

const statsCache = new WeakMap<Expr, boolean>();
/** Whether an expression reads per-tensor statistics (then its tensor is one piece). */
export function exprHasStats(expr: Expr): boolean {
  if (expr.kind === "file") return false;
  let known = statsCache.get(expr);
  if (known === undefined) statsCache.set(expr, (known = (expr.stats?.length ?? 0) > 0 || expr.args.some(exprHasStats)));
  return known;
}

export interface Segment {
  start: number;
  count: number;
  expr: Expr;
}

export interface VirtualTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  segments: Segment[];
  /**
   * A scaled fp8 weight (lib/scaled-fp8.ts): the segments hold fp8 codes whose real values are
   * `code × scale.scale`, or (no `scale.scale`) a scale that cannot be merged through.
   */
  scale?: Fp8Scale;
}

/** A model as later rows see it: a file's tensors, or an earlier row's result. */
export interface VirtualModel {
  label: string;
  tensors: VirtualTensor[];
  byName: Map<string, VirtualTensor>;
}

export function fileModel(model: ModelFile): VirtualModel {
  // A non-contiguous .ckpt tensor is read from its contiguous copy (lib/formats/ckpt/strided.ts);
  // a logical model's tensor (a shard's, a renamed layer's) from the file that holds it.
  const fileOf = (t: TensorInfo) => model.parts?.fileOf.get(t.name) ?? model;
  const tensors = model.tensors.map((t) => {
    const scale = model.fp8Scales?.get(t.name);
    return { name: t.name, dtype: t.dtype, shape: t.shape, segments: [{ start: 0, count: numelOf(t.shape), expr: { kind: "file" as const, ...readableTensor(fileOf(t), t), base: 0 } }], ...(scale ? { scale } : {}) };
  });
  return { label: model.path, tensors, byName: new Map(tensors.map((t) => [t.name, t])) };
}

function shiftExpr(expr: Expr, delta: number): Expr {
  if (delta === 0) return expr;
  if (expr.kind === "file") return { ...expr, base: expr.base + delta };
  if (exprHasStats(expr)) throw new MergeError("RECIPE_INVALID", "a tensor computed with per-tensor statistics (ties, dare-ties, slerp, model-stock…) cannot be split by a later row (tensor-sum bands, inpainting channels): use it whole");
  return { ...expr, args: expr.args.map((a) => shiftExpr(a, delta)), ...(expr.elementStart !== undefined ? { elementStart: expr.elementStart + delta } : {}) };
}

/** The expression covering [start, start + count) of a tensor, which must lie in one segment. */
export function exprAt(segments: Segment[], start: number, count: number): Expr {
  const s = segments.find((g) => g.start <= start && start + count <= g.start + g.count);
  if (!s) throw new MergeError("INTERNAL", `planner: no segment covers [${start}, ${start + count})`);
  return shiftExpr(s.expr, start - s.start);
}

/** Values as a file of type `dtype` would hold them: rounding needed only into F16/BF16/fp8. */
function exprDtype(expr: Expr): Dtype {
  return expr.kind === "file" ? (expr.tensor.dtype === "F64" ? "F32" : expr.tensor.dtype) : expr.round;
}
export function convertedTo(expr: Expr, dtype: Dtype): Expr {
  if (!isNarrowFloat(dtype) || exprDtype(expr) === dtype) return expr;
  return { kind: "op", kernel: "copy", args: [expr], params: [], round: dtype };
}
export function withDtype(t: VirtualTensor, dtype: Dtype): VirtualTensor {
  return { ...t, dtype, segments: t.segments.map((g) => ({ ...g, expr: convertedTo(g.expr, dtype) })) };
}

/**
 * `expr` times `factor`, rounded once to fp32 then to `round`: the weighted sum x·(f/2) + x·(f/2)
 * (halving is exact and equal halves add exactly, so this is x·f rounded once for the factors
 * lib/scaled-fp8.ts accepts and their inverses).
 */
export function scaledBy(expr: Expr, factor: number, round: Dtype): Expr {
  const half = Math.fround(factor) / 2;
  return { kind: "op", kernel: "weighted-sum", args: [expr, expr], params: [half, half], round };
}

/** A scaled fp8 weight's real values (codes × scale); other tensors as they are. */
export function realValues(t: VirtualTensor, expr: Expr): Expr {
  return t.scale?.scale === undefined ? expr : scaledBy(expr, t.scale.scale, "F32");
}
export function realTensor(t: VirtualTensor): VirtualTensor {
  if (t.scale?.scale === undefined) return t;
  const { scale: _scale, ...rest } = t;
  return { ...rest, dtype: "F32", segments: t.segments.map((g) => ({ ...g, expr: realValues(t, g.expr) })) };
}

/**
 * One key of a row's result. Keys that are the same for every multiplier (copied, kept from A,
 * replaced) have `fixed` segments; a merged key builds its segments for multiplier k on demand,
 * so a sweep does not hold one copy of the key table per value.
 */
export interface RowTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  fixed?: Segment[];
  at?: (k: number) => Segment[];
  /** Still a scaled fp8 weight (A's scale, kept with it). */
  scale?: Fp8Scale;
}

export interface RowResult {
  label: string;
  /** How many results (multipliers). */
  count: number;
  tensors: RowTensor[];
}

export function segmentsOf(t: RowTensor, k: number): Segment[] {
  return t.fixed ?? t.at!(k);
}
/**
 * A row's tensor that is not merged, if it is one: a replacement from another file (a baked-in
 * VAE), under the first model's key name and in the row's float type, or a tensor copied as is
 * (integer buffers, position ids). Counts it in `stats`; undefined for a tensor to merge.
 */
export function keptTensor(
  t: VirtualTensor,
  replacement: { model: ModelFile; tensor: TensorInfo } | undefined,
  outFloat: Dtype | undefined,
  firstModel: string,
  stats: PlanStats,
): RowTensor | undefined {
  if (replacement) {
    const r = replacement.tensor;
    if (!sameShape(r.shape, t.shape)) {
      throw new MergeError("SHAPE_MISMATCH", `${t.name}: replacement from ${replacement.model.path} has shape ${shapeToString(r.shape)}, ${firstModel} has ${shapeToString(t.shape)}`, { tensor: t.name, path: replacement.model.path });
    }
    // The replacement's values under the row's key name (a standalone VAE's keys lack the prefix).
    const source = { ...fileModel(replacement.model).byName.get(r.name)!, name: t.name };
    stats.replaced++;
    return fixedTensor(isMathDtype(r.dtype) ? withDtype(source, outFloat ?? t.dtype) : source);
  }
  if (isCopiedAsIs(t.name, t.dtype)) {
    stats.copiedAsIs++;
    return fixedTensor(t);
  }
  return undefined;
}

export function fixedTensor(t: VirtualTensor): RowTensor {
  return { name: t.name, dtype: t.dtype, shape: t.shape, fixed: t.segments, ...(t.scale ? { scale: t.scale } : {}) };
}
/** A single-valued row's result as later rows read it. */
export function materialize(result: RowResult): VirtualModel {
  const tensors = result.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, segments: segmentsOf(t, 0), ...(t.scale ? { scale: t.scale } : {}) }));
  return { label: result.label, tensors, byName: new Map(tensors.map((t) => [t.name, t])) };
}

/** weighted-sum with (1, −1): x·1 + y·(−1) is x − y rounded once, the task vector. */
const MINUS_PARAMS: number[] = [1, -1];

/** A kernel call as an expression: its models through `ref`, its statistics as piece reductions. */
export function callExpr(c: KernelCall, ref: (a: ArgRef) => Expr, round: Dtype, elementStart: number): Expr {
  const statOperand = (s: StatOperand): Expr => (typeof s === "object"
    ? { kind: "op", kernel: "weighted-sum", args: [ref(s.minus[0]), ref(s.minus[1])], params: MINUS_PARAMS, round: "F32" }
    : ref(s));
  return {
    kind: "op", kernel: c.kernel, args: c.args.map(ref), params: c.params, round,
    ...(c.stats?.length ? { stats: c.stats.map((st) => ({ kind: st.kind, args: st.args.map(statOperand), ...(st.k !== undefined ? { k: st.k } : {}), ...(st.columns ? { columns: st.columns } : {}) })) } : {}),
    ...(c.ints?.length ? { ints: c.ints } : {}),
    ...(c.keyed ? { elementStart } : {}),
  };
}
