/**
 * The planner: from opened models and a board of merge rows, decide for every output tensor
 * where its bytes come from and which kernels compute them, as `Job`s both engines execute.
 *
 * A row's result is a *virtual model*: for each key, an expression over input-file tensors.
 * A later row that takes an earlier row's output (`O1`…) composes those expressions, so a whole
 * board runs as one streaming pass: each input is read once, unsaved rows never touch the disk,
 * and every saved output (and every multiplier of a sweep) is written in the same pass. A row's
 * float results are rounded through its output type (fp16/bf16) before a later row uses them,
 * so the result is bit-identical to running the rows one by one and re-reading each file.
 *
 * Key rules (README "Key rules"):
 * - the output has A's tensors in A's order (minus discarded keys);
 * - non-float tensors and buffers (position_ids, scheduler buffers, EMA counters) are copied
 *   from A as they are, never interpolated;
 * - a float key that B (or C) lacks keeps A's values, in the output dtype, and is counted;
 * - a float key whose shape differs is an error, except the inpainting / instruct-pix2pix input
 *   convolution (A has 9 or 8 input channels, the other 4): shared channels merged, rest from A.
 *
 * Memory stays proportional to the keys plus the outputs, not to their product: a sweep's
 * merged keys are built per multiplier only while a pass's job is built, header bytes are built
 * when their pass runs (lib/plan-layouts.ts), and a pass holds at most `maxWritesPerPass`
 * writes (outputs × pieces), so a 10,001-value sweep is planned and refused (or run, in several
 * passes over the inputs) without holding 10,001 copies of the model's key table.
 */
import { DTYPE_ID, DTYPE_SIZE, OUTPUT_DTYPE_TO_DTYPE, isMathDtype, isNarrowFloat, type Dtype, type OutputDtype } from "./dtypes";
import { MergeError } from "./errors";
import type { OutputFormat, OutputLayout } from "./formats/output";
import { readableTensor, sideModelOf } from "./formats/ckpt/strided";
import { isCopiedAsIs, isInputChannelExtension, sameShape } from "./keys";
import { SCALED_FP8_MARKER, refuseScaledFp8, type Fp8Scale } from "./scaled-fp8";
import type { ArgRef, KernelCall, MergeMethod, ModelSlot, StatOperand } from "./methods/define";
import { paramResolver, type RowParams } from "./methods/params";
import { numelOf, shapeToString, type ModelFile, type TensorInfo } from "./model";
import { KERNEL_ID, REDUCTION_ID, type JobOp, type JobPiece, type JobReduction, type KernelName, type Operand, type ReductionName } from "./native/job";
import { nameHash } from "./engine/philox";
import { planManyRow } from "./plan-many";
import { layoutRowOutputs } from "./plan-layouts";

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

export type RowInput = { model: ModelFile } | { row: number };

/** One model of a base + models row, with its own parameter values (per-model weight, density…). */
export interface RowModel {
  input: RowInput;
  /**
   * This model's values of the method's per-model parameters (`MethodParam.perModel`), resolved
   * as the row's (lib/methods/params.ts) and taking precedence over them.
   */
  params?: RowParams;
}

export interface BoardRow {
  /** Output name, for messages and references. */
  name: string;
  method: MergeMethod;
  /** The classic A/B/C inputs (empty for a base + models method). */
  inputs: Partial<Record<ModelSlot, RowInput>>;
  /** A base + models method (`method.many`): the base, whose keys, order and dtypes the result has. */
  base?: RowInput;
  /** A base + models method: the models, in order (their index keys DARE masks). */
  models?: RowModel[];
  /** One result per multiplier (a sweep); a row that feeds later rows must have exactly one. */
  multipliers: number[];
  /**
   * The method's other parameters and per-key / per-block values (lib/methods/params.ts),
   * resolved for each tensor; a sweep varies α's row value, overrides apply on top.
   */
  params?: RowParams;
  /** Clamp each merged value to [min(A,B), max(A,B)] (methods with A and B). */
  clamp?: boolean;
  /** Float output type; default: the same as A's tensor. */
  dtype?: OutputDtype;
  /** Saved outputs: one per multiplier, or none when the row only feeds later rows. */
  outputs?: { path: string; format: OutputFormat; metadata: Record<string, string> }[];
  /** Keys left out of the result. */
  discard?: (name: string) => boolean;
  /** Result keys whose values come from another file as they are (for example a baked-in VAE). */
  replace?: Map<string, { model: ModelFile; tensor: TensorInfo }>;
}

export interface PlanStats {
  tensors: number;
  merged: number;
  /** Float keys kept from A because a model lacks them, per model slot. */
  missing: Partial<Record<ModelSlot, number>>;
  /** Examples of missing keys, for the report. */
  missingExamples: string[];
  copiedAsIs: number;
  replaced: number;
  discarded: number;
  /** Keys merged on their shared channels only (inpainting / instruct-pix2pix input conv). */
  partial: string[];
  /** Keys only present in B or C (ignored). */
  extraKeys: number;
  /** Base + models rows: float keys kept from the base because that model lacks them, per model. */
  missingByModel?: number[];
}

export interface PlannedOutput {
  row: number;
  multiplier: number;
  path: string;
  layout: OutputLayout;
}

/** One streaming pass: outputs whose tensors come in the same order. */
export interface PlannedPass {
  outputs: PlannedOutput[];
  /** The job's pieces, built on each access (a pass's job is held only while it runs). */
  readonly pieces: JobPiece[];
}

export interface BoardPlan {
  /** Every input file, once. */
  inputs: ModelFile[];
  /**
   * Contiguous copies of inputs' non-contiguous .ckpt tensors (lib/formats/ckpt/strided.ts):
   * job inputs after `inputs`, written by executePlan before the first pass.
   */
  sideInputs: ModelFile[];
  passes: PlannedPass[];
  stats: PlanStats[];
  bytesToRead: number;
  bytesToWrite: number;
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
function exprAt(segments: Segment[], start: number, count: number): Expr {
  const s = segments.find((g) => g.start <= start && start + count <= g.start + g.count);
  if (!s) throw new MergeError("INTERNAL", `planner: no segment covers [${start}, ${start + count})`);
  return shiftExpr(s.expr, start - s.start);
}

/** Values as a file of type `dtype` would hold them: rounding needed only into F16/BF16/fp8. */
function exprDtype(expr: Expr): Dtype {
  return expr.kind === "file" ? (expr.tensor.dtype === "F64" ? "F32" : expr.tensor.dtype) : expr.round;
}
function convertedTo(expr: Expr, dtype: Dtype): Expr {
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
function scaledBy(expr: Expr, factor: number, round: Dtype): Expr {
  const half = Math.fround(factor) / 2;
  return { kind: "op", kernel: "weighted-sum", args: [expr, expr], params: [half, half], round };
}

/** A scaled fp8 weight's real values (codes × scale); other tensors as they are. */
function realValues(t: VirtualTensor, expr: Expr): Expr {
  return t.scale?.scale === undefined ? expr : scaledBy(expr, t.scale.scale, "F32");
}
function realTensor(t: VirtualTensor): VirtualTensor {
  if (t.scale?.scale === undefined) return t;
  const { scale: _scale, ...rest } = t;
  return { ...rest, dtype: "F32", segments: t.segments.map((g) => ({ ...g, expr: realValues(t, g.expr) })) };
}

function emptyStats(): PlanStats {
  return { tensors: 0, merged: 0, missing: {}, missingExamples: [], copiedAsIs: 0, replaced: 0, discarded: 0, partial: [], extraKeys: 0 };
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

function segmentsOf(t: RowTensor, k: number): Segment[] {
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
function materialize(result: RowResult): VirtualModel {
  const tensors = result.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, segments: segmentsOf(t, 0), ...(t.scale ? { scale: t.scale } : {}) }));
  return { label: result.label, tensors, byName: new Map(tensors.map((t) => [t.name, t])) };
}

/** Evaluates one row symbolically: its keys, each for any of its multipliers. */
function planRow(row: BoardRow, models: Partial<Record<ModelSlot, VirtualModel>>, stats: PlanStats): RowResult {
  const { method } = row;
  const a = models.a!;
  const slots = method.inputs;
  const others = slots.filter((s) => s !== "a");
  for (const s of others) stats.extraKeys += models[s]!.tensors.filter((t) => !a.byName.has(t.name)).length;
  const outFloat = row.dtype ? OUTPUT_DTYPE_TO_DTYPE[row.dtype] : undefined;
  // Each tensor's parameter values (per-key patterns, blocks, the row's value), and one kernel
  // call per distinct set of values, parameters rounded once and shared by every key using it.
  const resolve = paramResolver(method, row.params);
  const clamp = row.clamp === true && method.clampable === true;
  const callCache = new Map<string, KernelCall>();
  const shared = (c: KernelCall): KernelCall => {
    const key = `${c.kernel}(${c.args.join(",")};${c.params.join(",")}${c.stats ? `;${JSON.stringify(c.stats)}` : ""}${c.ints ? `;${c.ints.join(",")}` : ""})`;
    let known = callCache.get(key);
    if (!known) callCache.set(key, (known = { ...c, params: c.params.map(Math.fround) }));
    return known;
  };
  const result: RowTensor[] = [];
  // Scaled fp8 weights of A stay scaled, with A's scale tensors and marker, unless the row sets
  // an output type: then they become plain weights and those tensors are left out.
  const keepScaled = outFloat === undefined;
  const scaleTensors = new Set(a.tensors.flatMap((t) => (t.scale?.scale !== undefined ? [t.scale.tensor] : [])));

  for (const t of a.tensors) {
    if (row.discard?.(t.name)) {
      stats.discarded++;
      continue;
    }
    if (scaleTensors.has(t.name) || (t.name === SCALED_FP8_MARKER && scaleTensors.size > 0)) {
      if (keepScaled) {
        result.push(fixedTensor(t));
        stats.copiedAsIs++;
      } else stats.discarded++;
      continue;
    }
    const kept = keptTensor(t, row.replace?.get(t.name), outFloat, "A", stats);
    if (kept) {
      result.push(kept);
      continue;
    }
    const dtype = outFloat ?? t.dtype;
    const tensors: Partial<Record<ModelSlot, VirtualTensor>> = { a: t };
    let lacking = false;
    const partialFrom: ModelSlot[] = [];
    for (const s of others) {
      const other = models[s]!.byName.get(t.name);
      if (!other) {
        lacking = true;
        stats.missing[s] = (stats.missing[s] ?? 0) + 1;
        continue;
      }
      if (!isMathDtype(other.dtype)) {
        throw new MergeError("DTYPE_UNSUPPORTED", `${t.name}: ${other.dtype} in ${s.toUpperCase()} (${models[s]!.label}) cannot be merged with ${t.dtype} in A`, { tensor: t.name, path: models[s]!.label });
      }
      if (!sameShape(other.shape, t.shape)) {
        if (!isInputChannelExtension(t.name, t.shape, other.shape)) {
          throw new MergeError(
            "SHAPE_MISMATCH",
            `${t.name}: shape ${shapeToString(t.shape)} in A (${a.label}) but ${shapeToString(other.shape)} in ${s.toUpperCase()} (${models[s]!.label})`,
            { tensor: t.name, path: models[s]!.label },
          );
        }
        partialFrom.push(s);
      }
      tensors[s] = other;
    }
    // The input-conv exception merges the first 4 channels of every other input: all of them
    // must have those 4 (an A=9, B=9, C=4 add difference would subtract mismatched tensors).
    const fullFrom = others.filter((s) => tensors[s] && !partialFrom.includes(s));
    if (partialFrom.length > 0 && fullFrom.length > 0) {
      const [p, f] = [partialFrom[0]!, fullFrom[0]!];
      throw new MergeError(
        "SHAPE_MISMATCH",
        `${t.name}: ${shapeToString(tensors[f]!.shape)} in ${f.toUpperCase()} (${models[f]!.label}) but ${shapeToString(tensors[p]!.shape)} in ${p.toUpperCase()} (${models[p]!.label}); with an inpainting or instruct-pix2pix A, the other models must all be normal ones (4 input channels)`,
        { tensor: t.name, path: models[p]!.label },
      );
    }
    const hasIn = (m: VirtualModel) => (key: string) => m.byName.has(key);
    const merging = !lacking && others.length > 0;
    if (merging || dtype !== t.dtype) refuseScaledFp8(t.name, t.dtype, hasIn(a), a.label, merging ? "merging" : `converting to ${dtype}`, t.scale);
    if (merging) for (const s of others) refuseScaledFp8(t.name, tensors[s]!.dtype, hasIn(models[s]!), models[s]!.label, "merging", tensors[s]!.scale);
    // A's scaled weight written scaled again: its codes where it is not merged, r × (1/scale) where it is.
    const rescale = keepScaled && t.scale?.scale !== undefined ? t.scale.scale : undefined;
    // A key in no block, when the row has block values and no pattern names it, stays A (as
    // SuperMerger leaves such keys alone). Whether it does, does not depend on the multiplier.
    const outsideBlocks = resolve(t.name, row.multipliers[0]!) === null;
    if (lacking || others.length === 0 || outsideBlocks) {
      if (lacking && stats.missingExamples.length < 5) stats.missingExamples.push(t.name);
      result.push(fixedTensor(rescale !== undefined ? t : withDtype(realTensor(t), dtype)));
      continue;
    }
    if (partialFrom.length > 0) stats.partial.push(t.name);
    stats.merged++;

    // Ranges of A's elements to merge, each with the element offset of every other model;
    // for the input-conv exception, per output channel: the first Cb channels merge, the rest stay A.
    const n = numelOf(t.shape);
    const ranges: { start: number; count: number; merged: boolean; other: number }[] = [];
    if (partialFrom.length === 0) ranges.push({ start: 0, count: n, merged: true, other: 0 });
    else {
      const inner = t.shape[2]! * t.shape[3]!;
      const rowA = t.shape[1]! * inner;
      const rowB = tensors[partialFrom[0]!]!.shape[1]! * inner;
      for (let o = 0; o < t.shape[0]!; o++) {
        ranges.push({ start: o * rowA, count: rowB, merged: true, other: o * rowB });
        ranges.push({ start: o * rowA + rowB, count: rowA - rowB, merged: false, other: 0 });
      }
    }
    const offsetIn = (s: ModelSlot, r: { start: number; other: number }, x: number) => (partialFrom.includes(s) ? r.other + (x - r.start) : x);
    // Where the segments start does not depend on the multiplier: cut once, where any input's
    // own segments change, so each piece reads one expression per input.
    const cutsOf: { start: number; count: number; range: (typeof ranges)[number] }[] = [];
    for (const r of ranges) {
      const cuts = new Set([r.start, r.start + r.count]);
      for (const s of r.merged ? slots : (["a"] as ModelSlot[])) {
        for (const g of tensors[s]!.segments) {
          const x = partialFrom.includes(s) ? g.start - r.other + r.start : g.start;
          if (x > r.start && x < r.start + r.count) cuts.add(x);
        }
      }
      const points = [...cuts].sort((p, q) => p - q);
      for (let i = 0; i + 1 < points.length; i++) cutsOf.push({ start: points[i]!, count: points[i + 1]! - points[i]!, range: r });
    }
    const round: Dtype = isNarrowFloat(dtype) ? dtype : "F32";
    const rows = t.shape.length > 0 ? t.shape[0]! : 0;
    const rowSize = rows > 0 ? n / rows : 0;
    const at = (k: number): Segment[] => {
      // This tensor's values for output k, its kernel call, and any rows another call computes.
      const values = resolve(t.name, row.multipliers[k]!)!;
      const call = shared(method.kernelFor(values, { name: t.name, nameHash: nameHash(t.name), n, shape: t.shape }));
      const spans = method.rowSpans && rows > 0 ? method.rowSpans(values, rows).map((sp) => ({ start: sp.from * rowSize, end: sp.to * rowSize, call: shared(sp.call) })) : [];
      const segments: Segment[] = [];
      for (const { start: s0, count: c0, range } of cutsOf) {
        const points = [s0, s0 + c0];
        if (range.merged) for (const sp of spans) for (const x of [sp.start, sp.end]) if (x > s0 && x < s0 + c0) points.push(x);
        points.sort((p, q) => p - q);
        for (let i = 0; i + 1 < points.length; i++) {
          const start = points[i]!, count = points[i + 1]! - start;
          if (count === 0) continue;
          const input = (s: ModelSlot) => realValues(tensors[s]!, exprAt(tensors[s]!.segments, offsetIn(s, range, start), count));
          let expr: Expr;
          if (!range.merged) {
            const own = exprAt(t.segments, start, count);
            expr = rescale !== undefined ? own : convertedTo(realValues(t, own), dtype);
          } else {
            const c = spans.find((sp) => sp.start <= start && start < sp.end)?.call ?? call;
            if (c.stats && (cutsOf.length !== 1 || start !== 0 || count !== n)) {
              throw new MergeError("RECIPE_INVALID", `${t.name}: ${method.name} needs the whole tensor from every model, but an input computes it in parts (an earlier tensor-sum row, an inpainting model's extra channels)`, { tensor: t.name });
            }
            // A rescaled (scaled fp8) result is rounded once, after the scaling; a clamped one after the clamp.
            const last = rescale !== undefined ? "F32" : round;
            const value = callExpr(c, (s) => input(s as ModelSlot), clamp ? "F32" : last, 0);
            // The clamp bounds are A's and B's values as read; the result is rounded once, after it.
            expr = clamp ? { kind: "op", kernel: "clamp", args: [value, input("a"), input("b")], params: NO_PARAMS, round: last } : value;
            if (rescale !== undefined) expr = scaledBy(expr, 1 / rescale, round);
          }
          segments.push({ start, count, expr });
        }
      }
      return segments;
    };
    result.push({ name: t.name, dtype, shape: t.shape, at, ...(rescale !== undefined ? { scale: t.scale! } : {}) });
  }
  stats.tensors = result.length;
  return { label: row.outputs?.[0]?.path ?? row.name, count: row.multipliers.length, tensors: result };
}

const NO_PARAMS: number[] = [];
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

/** Short keys for parameter lists (a sweep shares one list per multiplier across every key). */
const paramKeys = new WeakMap<number[], string>();
function paramsKey(params: number[]): string {
  let key = paramKeys.get(params);
  if (key === undefined) paramKeys.set(params, (key = params.join(",")));
  return key;
}

/** Flattens the expressions of one piece into job ops, sharing common subexpressions and operands. */
class PieceBuilder {
  readonly ops: JobOp[] = [];
  readonly reductions: JobReduction[] = [];
  private readonly reductionKeys = new Map<string, number>();
  private readonly keys = new Map<string, Operand>();
  /** The same expression object (a file read, an earlier row's result) seen again in this piece. */
  private readonly seen = new Map<Expr, { operand: Operand; key: string }>();
  constructor(private readonly fileIndex: (m: ModelFile) => number) {}

  /** The operand reading `expr` from element 0 of the piece. */
  operand(expr: Expr): { operand: Operand; key: string } {
    let found = this.seen.get(expr);
    if (!found) {
      found = this.build(expr);
      this.seen.set(expr, found);
    }
    return found;
  }

  private build(expr: Expr): { operand: Operand; key: string } {
    if (expr.kind === "file") {
      const file = this.fileIndex(expr.model);
      const offset = expr.tensor.offset + expr.base * DTYPE_SIZE[expr.tensor.dtype];
      const key = `f${file}@${offset}`;
      let operand = this.keys.get(key);
      if (!operand) this.keys.set(key, (operand = { kind: "input", file, offset, dtype: DTYPE_ID[expr.tensor.dtype] }));
      return { operand, key };
    }
    const args = expr.args.map((a) => this.operand(a));
    const stats = expr.stats?.map((st) => this.reduction(st));
    const extra = `${stats ? `;s${stats.join(",")}` : ""}${expr.ints ? `;i${expr.ints.join(",")}` : ""}${expr.elementStart !== undefined ? `;e${expr.elementStart}` : ""}`;
    const key = `${expr.kernel}(${args.map((a) => a.key).join(",")};${paramsKey(expr.params)};${expr.round}${extra})`;
    let operand = this.keys.get(key);
    if (!operand) {
      this.ops.push({
        kernel: KERNEL_ID[expr.kernel], args: args.map((a) => a.operand), params: expr.params, round: DTYPE_ID[expr.round],
        ...(stats ? { stats } : {}), ...(expr.ints ? { ints: expr.ints } : {}), ...(expr.elementStart ? { elementStart: expr.elementStart } : {}),
      });
      operand = { kind: "op", index: this.ops.length - 1 };
      this.keys.set(key, operand);
    }
    return { operand, key };
  }

  /** The index of a reduction of the piece, shared when two ops ask for the same one. */
  private reduction(st: StatExpr): number {
    const args = st.args.map((a) => this.operand(a));
    const key = `${st.kind}(${args.map((a) => a.key).join(",")};${st.k ?? ""};${st.columns ?? ""})`;
    let index = this.reductionKeys.get(key);
    if (index === undefined) {
      this.reductions.push({ kind: REDUCTION_ID[st.kind], args: args.map((a) => a.operand), ...(st.k !== undefined ? { k: st.k } : {}), ...(st.columns ? { columns: st.columns } : {}) });
      this.reductionKeys.set(key, (index = this.reductions.length - 1));
    }
    return index;
  }
}

export interface BoardRequest {
  rows: BoardRow[];
  /**
   * Most writes (outputs × pieces) one pass's job may hold; a group of outputs that would need
   * more is split into several passes, each reading the inputs again. Default MAX_WRITES_PER_PASS.
   */
  maxWritesPerPass?: number;
}

/**
 * About 150 MiB of job for the engines to hold (each write is an op, an operand and a write in
 * JS, then in C++): 228 SD 1.5 outputs per pass, so everyday sweeps stay one pass.
 */
export const MAX_WRITES_PER_PASS = 1 << 18;

/** A saved output of the plan, with the row result it is written from. */
interface SavedOutput {
  output: PlannedOutput;
  result: RowResult;
  k: number;
}

/** Builds the job pieces of a pass: for each key, one write per output of the pass. */
function buildPieces(saved: SavedOutput[], fileIndex: (m: ModelFile) => number): JobPiece[] {
  const pieces: JobPiece[] = [];
  saved[0]!.result.tensors.forEach((first, j) => {
    const all = saved.map((s, o) => ({ o, tensor: s.result.tensors[j]!, segments: segmentsOf(s.result.tensors[j]!, s.k) }));
    // Outputs whose tensor needs per-tensor statistics share one piece over the whole tensor
    // (its reductions see every element); the others are cut as usual.
    const whole = all.filter((t) => t.segments.some((g) => exprHasStats(g.expr)));
    if (whole.length > 0) {
      const n = numelOf(first.shape);
      const builder = new PieceBuilder(fileIndex);
      const writes = whole.map((t) => ({ output: t.o, offset: saved[t.o]!.output.layout.offsets[j]!, dtype: DTYPE_ID[t.tensor.dtype], source: builder.operand(exprAt(t.segments, 0, n)).operand }));
      pieces.push({ name: first.name, n, ops: builder.ops, writes, ...(builder.reductions.length ? { reductions: builder.reductions } : {}) });
    }
    const perOutput = whole.length > 0 ? all.filter((t) => !whole.includes(t)) : all;
    if (perOutput.length === 0) return;
    const cuts = new Set<number>([0, numelOf(first.shape)]);
    for (const t of perOutput) for (const g of t.segments) cuts.add(g.start);
    const points = [...cuts].sort((p, q) => p - q);
    for (let i = 0; i + 1 < points.length; i++) {
      const start = points[i]!, count = points[i + 1]! - start;
      const builder = new PieceBuilder(fileIndex);
      const writes = perOutput.map((t) => {
        const size = DTYPE_SIZE[t.tensor.dtype];
        const { operand } = builder.operand(exprAt(t.segments, start, count));
        return { output: t.o, offset: saved[t.o]!.output.layout.offsets[j]! + start * size, dtype: DTYPE_ID[t.tensor.dtype], source: operand };
      });
      pieces.push({ name: first.name, n: count, ops: builder.ops, writes });
    }
  });
  return pieces;
}

/** Plans a whole board: validates references, evaluates rows, lays out outputs, emits passes. */
export function planBoard(request: BoardRequest): BoardPlan {
  const { rows } = request;
  const maxWrites = request.maxWritesPerPass ?? MAX_WRITES_PER_PASS;
  const results: RowResult[] = [];
  const materialized = new Map<number, VirtualModel>();
  const stats: PlanStats[] = [];
  const fileModels = new Map<string, VirtualModel>();
  const inputs: ModelFile[] = [];
  const inputPaths = new Set<string>();
  const sideInputs: ModelFile[] = [];
  const virtual = (input: RowInput, rowIndex: number, slot: ModelSlot | string): VirtualModel => {
    const what = slot.length === 1 ? `input ${slot.toUpperCase()}` : slot;
    if ("row" in input) {
      if (!(input.row >= 0 && input.row < rowIndex)) {
        throw new MergeError("RECIPE_INVALID", `row ${rowIndex + 1} (${rows[rowIndex]!.name}): ${what} refers to row ${input.row + 1}, which does not come before it`);
      }
      const r = results[input.row]!;
      if (r.count !== 1) throw new MergeError("RECIPE_INVALID", `row ${rowIndex + 1} (${rows[rowIndex]!.name}): ${what} is row ${rows[input.row]!.name}, a sweep of ${r.count} values; only a single-valued row can feed another`);
      let m = materialized.get(input.row);
      if (!m) {
        m = materialize(r);
        materialized.set(input.row, m);
      }
      return m;
    }
    let m = fileModels.get(input.model.path);
    if (!m) {
      m = fileModel(input.model);
      fileModels.set(input.model.path, m);
      // Each file once, whichever logical models (shards, slices of layers) read from it.
      for (const file of input.model.parts?.files ?? [input.model]) {
        if (inputPaths.has(file.path)) continue;
        inputPaths.add(file.path);
        inputs.push(file);
        const side = sideModelOf(file);
        if (side) sideInputs.push(side);
      }
    }
    return m;
  };
  rows.forEach((row, i) => {
    if (row.method.many) {
      const where = rows.length > 1 ? `row ${i + 1} (${row.name}): ` : "";
      const { min, max } = row.method.many;
      if (!row.base) throw new MergeError("INVALID_ARGUMENT", `${where}${row.method.name} needs a base model (the models' common ancestor)`);
      const list = row.models ?? [];
      if (list.length < min || list.length > max) {
        throw new MergeError("INVALID_ARGUMENT", `${where}${row.method.name} takes ${min === max ? min : `${min} to ${max}`} models besides the base, got ${list.length}`);
      }
      const key = (r: RowInput) => ("row" in r ? `row:${r.row}` : `file:${r.model.path}`);
      const seen = new Map<string, string>([[key(row.base), "the base"]]);
      list.forEach((m, j) => {
        const before = seen.get(key(m.input));
        const name = "row" in m.input ? `row ${m.input.row + 1}` : m.input.model.path;
        if (before) throw new MergeError("INVALID_ARGUMENT", `${where}model ${j + 1} (${name}) is the same as ${before}: give each model once`);
        seen.set(key(m.input), `model ${j + 1}`);
      });
      for (const r of row.replace?.values() ?? []) virtual({ model: r.model }, i, "a");
      if (row.outputs && row.outputs.length !== row.multipliers.length) throw new MergeError("INTERNAL", `row ${row.name}: one output per multiplier expected`);
      const s = emptyStats();
      results.push(planManyRow(row, virtual(row.base, i, "the base"), list.map((m, j) => virtual(m.input, i, `model ${j + 1}`)), s));
      stats.push(s);
      return;
    }
    const models: Partial<Record<ModelSlot, VirtualModel>> = {};
    for (const slot of row.method.inputs) {
      const input = row.inputs[slot];
      if (!input) throw new MergeError("INVALID_ARGUMENT", `${rows.length > 1 ? `row ${i + 1} (${row.name}): ` : ""}${row.method.name} needs model ${slot.toUpperCase()}`);
      models[slot] = virtual(input, i, slot);
    }
    for (const r of row.replace?.values() ?? []) virtual({ model: r.model }, i, "a");
    if (row.outputs && row.outputs.length !== row.multipliers.length) throw new MergeError("INTERNAL", `row ${row.name}: one output per multiplier expected`);
    const s = emptyStats();
    results.push(planRow(row, models, s));
    stats.push(s);
  });

  // Every saved result, laid out; grouped into passes by key order (usually one pass). Every
  // output of a row has the same keys: the order and the tensor table are computed per row.
  const groups = new Map<string, { saved: SavedOutput[]; piecesPerOutput: number; rows: Set<number> }>();
  rows.forEach((row, i) => {
    if (!row.outputs?.length) return;
    const result = results[i]!;
    const entries = result.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape }));
    const layouts = layoutRowOutputs(entries, row.outputs);
    const order = result.tensors.map((t) => `${t.name}${shapeToString(t.shape)}`).join("\n");
    let group = groups.get(order);
    if (!group) groups.set(order, (group = { saved: [], piecesPerOutput: 0, rows: new Set() }));
    // Pieces per output: each row's own cuts; rows sharing a pass may add cuts to each other.
    group.rows.add(i);
    group.piecesPerOutput += result.tensors.reduce((n, t) => n + segmentsOf(t, 0).length, 0);
    row.outputs.forEach((o, k) => group!.saved.push({ output: { row: i, multiplier: row.multipliers[k]!, path: o.path, layout: layouts[k]! }, result, k }));
  });
  const indexByPath = new Map([...inputs, ...sideInputs].map((m, i) => [m.path, i]));
  const fileIndex = (m: ModelFile) => indexByPath.get(m.path)!;
  const passes: PlannedPass[] = [];
  for (const group of groups.values()) {
    const perPass = Math.max(1, Math.floor(maxWrites / Math.max(1, group.piecesPerOutput)));
    for (let first = 0; first < group.saved.length; first += perPass) {
      const chunk = group.saved.slice(first, first + perPass);
      // Built when the pass runs (and again on each access): never all passes' jobs at once.
      passes.push({ outputs: chunk.map((s) => s.output), get pieces() { return buildPieces(chunk, fileIndex); } });
    }
  }
  const bytesToRead = inputs.reduce((sum, m) => sum + m.size, 0);
  const bytesToWrite = passes.reduce((sum, p) => sum + p.outputs.reduce((s, o) => s + o.layout.size, 0), 0);
  return { inputs, sideInputs, passes, stats, bytesToRead, bytesToWrite };
}
