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
 */
import { DTYPE_ID, DTYPE_SIZE, OUTPUT_DTYPE_TO_DTYPE, isMathDtype, type Dtype, type OutputDtype } from "./dtypes";
import { MergeError } from "./errors";
import { layoutOutput, type OutputFormat, type OutputLayout } from "./formats/output";
import { readableTensor, sideModelOf } from "./formats/ckpt/strided";
import { isCopiedAsIs, isInputChannelExtension, sameShape } from "./keys";
import type { KernelCall, MergeMethod, ModelSlot } from "./methods/define";
import { paramResolver, type RowParams } from "./methods/params";
import { numelOf, shapeToString, type ModelFile, type TensorInfo } from "./model";
import { KERNEL_ID, type JobOp, type JobPiece, type KernelName, type Operand } from "./native/job";

/** A value expression for a run of consecutive elements of one tensor. */
type Expr =
  | { kind: "file"; model: ModelFile; tensor: TensorInfo; base: number }
  | { kind: "op"; kernel: KernelName; args: Expr[]; params: number[]; round: Dtype };

interface Segment {
  start: number;
  count: number;
  expr: Expr;
}

interface VirtualTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  segments: Segment[];
}

/** A model as later rows see it: a file's tensors, or an earlier row's result. */
export interface VirtualModel {
  label: string;
  tensors: VirtualTensor[];
  byName: Map<string, VirtualTensor>;
}

export type RowInput = { model: ModelFile } | { row: number };

export interface BoardRow {
  /** Output name, for messages and references. */
  name: string;
  method: MergeMethod;
  inputs: Partial<Record<ModelSlot, RowInput>>;
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
  pieces: JobPiece[];
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

function fileModel(model: ModelFile): VirtualModel {
  // A non-contiguous .ckpt tensor is read from its contiguous copy (lib/formats/ckpt/strided.ts).
  const tensors = model.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, segments: [{ start: 0, count: numelOf(t.shape), expr: { kind: "file" as const, ...readableTensor(model, t), base: 0 } }] }));
  return { label: model.path, tensors, byName: new Map(tensors.map((t) => [t.name, t])) };
}

function shiftExpr(expr: Expr, delta: number): Expr {
  if (delta === 0) return expr;
  if (expr.kind === "file") return { ...expr, base: expr.base + delta };
  return { ...expr, args: expr.args.map((a) => shiftExpr(a, delta)) };
}

/** The expression covering [start, start + count) of a tensor, which must lie in one segment. */
function exprAt(segments: Segment[], start: number, count: number): Expr {
  const s = segments.find((g) => g.start <= start && start + count <= g.start + g.count);
  if (!s) throw new MergeError("INTERNAL", `planner: no segment covers [${start}, ${start + count})`);
  return shiftExpr(s.expr, start - s.start);
}

/** Values as a file of type `dtype` would hold them: rounding needed only into F16/BF16. */
function exprDtype(expr: Expr): Dtype {
  return expr.kind === "file" ? (expr.tensor.dtype === "F64" ? "F32" : expr.tensor.dtype) : expr.round;
}
function convertedTo(expr: Expr, dtype: Dtype): Expr {
  if ((dtype !== "F16" && dtype !== "BF16") || exprDtype(expr) === dtype || !isMathDtype(dtype)) return expr;
  return { kind: "op", kernel: "copy", args: [expr], params: [], round: dtype };
}
function withDtype(t: VirtualTensor, dtype: Dtype): VirtualTensor {
  return { ...t, dtype, segments: t.segments.map((g) => ({ ...g, expr: convertedTo(g.expr, dtype) })) };
}

function emptyStats(): PlanStats {
  return { tensors: 0, merged: 0, missing: {}, missingExamples: [], copiedAsIs: 0, replaced: 0, discarded: 0, partial: [], extraKeys: 0 };
}

/** Evaluates one row symbolically: one virtual model per multiplier. */
function planRow(row: BoardRow, models: Partial<Record<ModelSlot, VirtualModel>>, stats: PlanStats): VirtualModel[] {
  const { method } = row;
  const a = models.a!;
  const slots = method.inputs;
  const others = slots.filter((s) => s !== "a");
  for (const s of others) stats.extraKeys += models[s]!.tensors.filter((t) => !a.byName.has(t.name)).length;
  const outFloat = row.dtype ? OUTPUT_DTYPE_TO_DTYPE[row.dtype] : undefined;
  const resolve = paramResolver(method, row.params);
  const clamp = row.clamp === true && method.clampable === true;
  const results: VirtualTensor[][] = row.multipliers.map(() => []);
  const pushAll = (t: VirtualTensor) => results.forEach((r) => r.push(t));

  for (const t of a.tensors) {
    if (row.discard?.(t.name)) {
      stats.discarded++;
      continue;
    }
    const replacement = row.replace?.get(t.name);
    if (replacement) {
      const r = replacement.tensor;
      if (!sameShape(r.shape, t.shape)) {
        throw new MergeError("SHAPE_MISMATCH", `${t.name}: replacement from ${replacement.model.path} has shape ${shapeToString(r.shape)}, A has ${shapeToString(t.shape)}`, { tensor: t.name, path: replacement.model.path });
      }
      // The replacement's values under A's key name (a standalone VAE's keys lack the prefix).
      const source = { ...fileModel(replacement.model).byName.get(r.name)!, name: t.name };
      pushAll(isMathDtype(r.dtype) ? withDtype(source, outFloat ?? t.dtype) : source);
      stats.replaced++;
      continue;
    }
    if (isCopiedAsIs(t.name, t.dtype)) {
      pushAll(t);
      stats.copiedAsIs++;
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
    if (lacking || others.length === 0) {
      if (lacking && stats.missingExamples.length < 5) stats.missingExamples.push(t.name);
      pushAll(withDtype(t, dtype));
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
    const round: Dtype = dtype === "F16" || dtype === "BF16" ? dtype : "F32";
    results.forEach((result, k) => {
      // This tensor's parameter values, its kernel call, and any rows another call computes.
      const values = resolve(t.name, row.multipliers[k]!);
      const call = method.kernelFor(values);
      const rows = t.shape.length > 0 ? t.shape[0]! : 0;
      const rowSize = rows > 0 ? n / rows : 0;
      const spans = method.rowSpans && rows > 0 ? method.rowSpans(values, rows).map((sp) => ({ start: sp.from * rowSize, end: sp.to * rowSize, call: sp.call })) : [];
      const callAt = (x: number): KernelCall => spans.find((sp) => sp.start <= x && x < sp.end)?.call ?? call;
      const segments: Segment[] = [];
      for (const r of ranges) {
        // Cut where any input's own segments change, so each piece reads one expression per input.
        const cuts = new Set([r.start, r.start + r.count]);
        for (const s of r.merged ? slots : (["a"] as ModelSlot[])) {
          for (const g of tensors[s]!.segments) {
            const x = partialFrom.includes(s) ? g.start - r.other + r.start : g.start;
            if (x > r.start && x < r.start + r.count) cuts.add(x);
          }
        }
        if (r.merged) for (const sp of spans) for (const x of [sp.start, sp.end]) if (x > r.start && x < r.start + r.count) cuts.add(x);
        const points = [...cuts].sort((p, q) => p - q);
        for (let i = 0; i + 1 < points.length; i++) {
          const start = points[i]!, count = points[i + 1]! - start;
          const input = (s: ModelSlot) => exprAt(tensors[s]!.segments, offsetIn(s, r, start), count);
          let expr: Expr;
          if (!r.merged) expr = convertedTo(exprAt(t.segments, start, count), dtype);
          else {
            const c = callAt(start);
            const value: Expr = { kind: "op", kernel: c.kernel, args: c.args.map(input), params: c.params.map(Math.fround), round: clamp ? "F32" : round };
            // The clamp bounds are A's and B's values as read; the result is rounded once, after it.
            expr = clamp ? { kind: "op", kernel: "clamp", args: [value, input("a"), input("b")], params: [], round } : value;
          }
          segments.push({ start, count, expr });
        }
      }
      result.push({ name: t.name, dtype, shape: t.shape, segments });
    });
  }
  stats.tensors = results[0]?.length ?? 0;
  return results.map((tensors, k) => ({ label: row.outputs?.[k]?.path ?? `${row.name}`, tensors, byName: new Map(tensors.map((t) => [t.name, t])) }));
}

/** Flattens the expressions of one piece into job ops, sharing common subexpressions. */
class PieceBuilder {
  readonly ops: JobOp[] = [];
  private readonly keys = new Map<string, Operand>();
  constructor(private readonly fileIndex: (m: ModelFile) => number) {}

  operand(expr: Expr, start: number): { operand: Operand; key: string } {
    if (expr.kind === "file") {
      const element = expr.base + start;
      const file = this.fileIndex(expr.model);
      return { operand: { kind: "input", file, offset: expr.tensor.offset + element * DTYPE_SIZE[expr.tensor.dtype], dtype: DTYPE_ID[expr.tensor.dtype] }, key: `f${file}@${expr.tensor.offset}+${element}` };
    }
    const args = expr.args.map((a) => this.operand(a, start));
    const key = `${expr.kernel}(${args.map((a) => a.key).join(",")};${expr.params.join(",")};${expr.round})`;
    let operand = this.keys.get(key);
    if (!operand) {
      this.ops.push({ kernel: KERNEL_ID[expr.kernel], args: args.map((a) => a.operand), params: expr.params, round: DTYPE_ID[expr.round] });
      operand = { kind: "op", index: this.ops.length - 1 };
      this.keys.set(key, operand);
    }
    return { operand, key };
  }
}

export interface BoardRequest {
  rows: BoardRow[];
}

/** Plans a whole board: validates references, evaluates rows, lays out outputs, emits passes. */
export function planBoard(request: BoardRequest): BoardPlan {
  const { rows } = request;
  const results: VirtualModel[][] = [];
  const stats: PlanStats[] = [];
  const fileModels = new Map<string, VirtualModel>();
  const inputs: ModelFile[] = [];
  const sideInputs: ModelFile[] = [];
  const virtual = (input: RowInput, rowIndex: number, slot: ModelSlot): VirtualModel => {
    if ("row" in input) {
      if (!(input.row >= 0 && input.row < rowIndex)) {
        throw new MergeError("RECIPE_INVALID", `row ${rowIndex + 1} (${rows[rowIndex]!.name}): input ${slot.toUpperCase()} refers to row ${input.row + 1}, which does not come before it`);
      }
      const r = results[input.row]!;
      if (r.length !== 1) throw new MergeError("RECIPE_INVALID", `row ${rowIndex + 1} (${rows[rowIndex]!.name}): input ${slot.toUpperCase()} is row ${rows[input.row]!.name}, a sweep of ${r.length} values; only a single-valued row can feed another`);
      return r[0]!;
    }
    let m = fileModels.get(input.model.path);
    if (!m) {
      m = fileModel(input.model);
      fileModels.set(input.model.path, m);
      inputs.push(input.model);
      const side = sideModelOf(input.model);
      if (side) sideInputs.push(side);
    }
    return m;
  };
  rows.forEach((row, i) => {
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

  // Every saved result, laid out; grouped into passes by key order (usually one pass).
  const saved: { output: PlannedOutput; tensors: VirtualTensor[] }[] = [];
  rows.forEach((row, i) => row.outputs?.forEach((o, k) => {
    const tensors = results[i]![k]!.tensors;
    const layout = layoutOutput(o.format, tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), o.metadata);
    saved.push({ output: { row: i, multiplier: row.multipliers[k]!, path: o.path, layout }, tensors });
  }));
  const groups = new Map<string, typeof saved>();
  for (const s of saved) {
    const order = s.tensors.map((t) => `${t.name}${shapeToString(t.shape)}`).join("\n");
    groups.set(order, [...(groups.get(order) ?? []), s]);
  }
  const indexByPath = new Map([...inputs, ...sideInputs].map((m, i) => [m.path, i]));
  const fileIndex = (m: ModelFile) => indexByPath.get(m.path)!;
  const passes: PlannedPass[] = [...groups.values()].map((group) => {
    const pieces: JobPiece[] = [];
    group[0]!.tensors.forEach((first, k) => {
      const perOutput = group.map((g) => g.tensors[k]!);
      const cuts = new Set<number>([0, numelOf(first.shape)]);
      for (const t of perOutput) for (const g of t.segments) cuts.add(g.start);
      const points = [...cuts].sort((p, q) => p - q);
      for (let i = 0; i + 1 < points.length; i++) {
        const start = points[i]!, count = points[i + 1]! - start;
        const builder = new PieceBuilder(fileIndex);
        const writes = perOutput.map((t, o) => {
          const size = DTYPE_SIZE[t.dtype];
          const { operand } = builder.operand(exprAt(t.segments, start, count), 0);
          return { output: o, offset: group[o]!.output.layout.offsets[k]! + start * size, dtype: DTYPE_ID[t.dtype], source: operand };
        });
        pieces.push({ name: first.name, n: count, ops: builder.ops, writes });
      }
    });
    return { outputs: group.map((g) => g.output), pieces };
  });
  const bytesToRead = inputs.reduce((sum, m) => sum + m.size, 0);
  const bytesToWrite = saved.reduce((sum, s) => sum + s.output.layout.size, 0);
  return { inputs, sideInputs, passes, stats, bytesToRead, bytesToWrite };
}
