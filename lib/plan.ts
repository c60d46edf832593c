/**
 * The merge planner: from opened models and a method, decide for every output tensor where its
 * bytes come from and which kernel computes them, as a `Job` both engines execute.
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
import { isCopiedAsIs, isInputChannelExtension, sameShape } from "./keys";
import type { MergeMethod, ModelSlot } from "./methods/define";
import { numelOf, shapeToString, type ModelFile, type TensorInfo } from "./model";
import { KERNEL_ID, type JobPiece, type Operand } from "./native/job";

export interface PlanOutput {
  /** Final path (used in messages); the job writes a temporary file. */
  path: string;
  format: OutputFormat;
  multiplier: number;
  metadata: Record<string, string>;
}

export interface PlanRequest {
  models: Partial<Record<ModelSlot, ModelFile>>;
  method: MergeMethod;
  /** One output per entry (a sweep has several, all computed in one pass). */
  outputs: PlanOutput[];
  /** Float output type; default: the same as A's tensor. */
  dtype?: OutputDtype;
  /** Keys left out of the output. */
  discard?: (name: string) => boolean;
  /** Output keys whose values come from another file as they are (for example a baked-in VAE). */
  replace?: Map<string, { model: ModelFile; tensor: TensorInfo }>;
}

export interface PlanStats {
  tensors: number;
  merged: number;
  /** Float keys copied from A because a model lacks them, per model slot. */
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

export interface MergePlan {
  inputs: ModelFile[];
  layouts: OutputLayout[];
  pieces: JobPiece[];
  stats: PlanStats;
  bytesToRead: number;
  bytesToWrite: number;
}

const F32 = DTYPE_ID.F32;

function inputOperand(file: number, tensor: TensorInfo, element: number): Operand {
  return { kind: "input", file, offset: tensor.offset + element * DTYPE_SIZE[tensor.dtype], dtype: DTYPE_ID[tensor.dtype] };
}

export function planMerge(request: PlanRequest): MergePlan {
  const { method } = request;
  const a = request.models.a;
  if (!a) throw new MergeError("INVALID_ARGUMENT", "model A is required");
  for (const slot of method.inputs) {
    if (!request.models[slot]) throw new MergeError("INVALID_ARGUMENT", `${method.name} needs model ${slot.toUpperCase()}`);
  }
  const slots = method.inputs;
  const inputs = slots.map((s) => request.models[s]!);
  const fileIndex = new Map<ModelSlot, number>(slots.map((s, i) => [s, i]));
  const extraInputs = new Map<ModelFile, number>();
  const fileOf = (model: ModelFile): number => {
    const i = inputs.indexOf(model);
    if (i >= 0) return i;
    let j = extraInputs.get(model);
    if (j === undefined) {
      j = inputs.length;
      inputs.push(model);
      extraInputs.set(model, j);
    }
    return j;
  };

  const stats: PlanStats = { tensors: 0, merged: 0, missing: {}, missingExamples: [], copiedAsIs: 0, replaced: 0, discarded: 0, partial: [], extraKeys: 0 };
  for (const s of slots) {
    if (s === "a") continue;
    stats.extraKeys += request.models[s]!.tensors.filter((t) => !a.byName.has(t.name)).length;
  }

  // Pass 1: decide each output tensor's dtype and source.
  type Decision =
    | { kind: "copy"; tensor: TensorInfo; file: number } // raw bytes or dtype conversion of one tensor
    | { kind: "merge"; tensors: Partial<Record<ModelSlot, TensorInfo>>; partialFrom?: ModelSlot[] };
  const entries: { name: string; dtype: Dtype; shape: number[]; decision: Decision }[] = [];
  const outFloat = request.dtype ? OUTPUT_DTYPE_TO_DTYPE[request.dtype] : undefined;

  for (const t of a.tensors) {
    if (request.discard?.(t.name)) {
      stats.discarded++;
      continue;
    }
    const replacement = request.replace?.get(t.name);
    if (replacement) {
      const r = replacement.tensor;
      if (!sameShape(r.shape, t.shape)) {
        throw new MergeError("SHAPE_MISMATCH", `${t.name}: replacement from ${replacement.model.path} has shape ${shapeToString(r.shape)}, A has ${shapeToString(t.shape)}`, { tensor: t.name, path: replacement.model.path });
      }
      const dtype = isMathDtype(r.dtype) ? outFloat ?? t.dtype : r.dtype;
      entries.push({ name: t.name, dtype, shape: t.shape, decision: { kind: "copy", tensor: r, file: fileOf(replacement.model) } });
      stats.replaced++;
      continue;
    }
    if (isCopiedAsIs(t.name, t.dtype)) {
      entries.push({ name: t.name, dtype: t.dtype, shape: t.shape, decision: { kind: "copy", tensor: t, file: 0 } });
      stats.copiedAsIs++;
      continue;
    }
    const dtype = outFloat ?? t.dtype;
    const tensors: Partial<Record<ModelSlot, TensorInfo>> = { a: t };
    let lacking: ModelSlot | undefined;
    const partialFrom: ModelSlot[] = [];
    for (const s of slots) {
      if (s === "a") continue;
      const other = request.models[s]!.byName.get(t.name);
      if (!other) {
        lacking ??= s;
        stats.missing[s] = (stats.missing[s] ?? 0) + 1;
        continue;
      }
      if (!isMathDtype(other.dtype)) {
        throw new MergeError("DTYPE_UNSUPPORTED", `${t.name}: ${other.dtype} in ${s.toUpperCase()} (${request.models[s]!.path}) cannot be merged with ${t.dtype} in A`, { tensor: t.name, path: request.models[s]!.path });
      }
      if (!sameShape(other.shape, t.shape)) {
        if (!isInputChannelExtension(t.name, t.shape, other.shape)) {
          throw new MergeError(
            "SHAPE_MISMATCH",
            `${t.name}: shape ${shapeToString(t.shape)} in A (${a.path}) but ${shapeToString(other.shape)} in ${s.toUpperCase()} (${request.models[s]!.path})`,
            { tensor: t.name, path: request.models[s]!.path },
          );
        }
        partialFrom.push(s);
      }
      tensors[s] = other;
    }
    if (lacking || method.inputs.length === 1) {
      if (lacking && stats.missingExamples.length < 5) stats.missingExamples.push(t.name);
      entries.push({ name: t.name, dtype, shape: t.shape, decision: { kind: "copy", tensor: t, file: 0 } });
      continue;
    }
    if (partialFrom.length > 0) stats.partial.push(t.name);
    entries.push({ name: t.name, dtype, shape: t.shape, decision: { kind: "merge", tensors, ...(partialFrom.length ? { partialFrom } : {}) } });
    stats.merged++;
  }
  stats.tensors = entries.length;

  // Pass 2: lay out each output and emit pieces in output order.
  const layouts = request.outputs.map((o) => layoutOutput(o.format, entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })), o.metadata));
  const calls = request.outputs.map((o) => method.kernelFor(o.multiplier));
  const pieces: JobPiece[] = [];
  entries.forEach((entry, k) => {
    const outDtypeId = DTYPE_ID[entry.dtype];
    const outSize = DTYPE_SIZE[entry.dtype];
    const n = numelOf(entry.shape);
    const d = entry.decision;
    const copyPiece = (tensor: TensorInfo, file: number, start: number, count: number): JobPiece => ({
      name: entry.name,
      n: count,
      ops: [],
      writes: layouts.map((l, o) => ({ output: o, offset: l.offsets[k]! + start * outSize, dtype: outDtypeId, source: inputOperand(file, tensor, start) })),
    });
    if (d.kind === "copy") {
      pieces.push(copyPiece(d.tensor, d.file, 0, n));
      return;
    }
    const mergePiece = (start: number, count: number, otherStart: number): JobPiece => {
      const operand = (slot: ModelSlot): Operand => {
        const t = d.tensors[slot]!;
        const shifted = slot !== "a" && d.partialFrom?.includes(slot);
        return inputOperand(fileIndex.get(slot)!, t, shifted ? otherStart : start);
      };
      return {
        name: entry.name,
        n: count,
        ops: calls.map((c) => ({ kernel: KERNEL_ID[c.kernel], args: c.args.map(operand), params: c.params.map(Math.fround), round: F32 })),
        writes: layouts.map((l, o) => ({ output: o, offset: l.offsets[k]! + start * outSize, dtype: outDtypeId, source: { kind: "op", index: o } })),
      };
    };
    if (!d.partialFrom) {
      pieces.push(mergePiece(0, n, 0));
      return;
    }
    // Input conv [O, Ca, kh, kw] vs [O, Cb, kh, kw]: per output channel, merge the first Cb
    // input channels and keep the remaining Ca − Cb from A.
    const aShape = d.tensors.a!.shape;
    const other = d.tensors[d.partialFrom[0]!]!.shape;
    const inner = aShape[2]! * aShape[3]!;
    const rowA = aShape[1]! * inner;
    const rowB = other[1]! * inner;
    for (let o = 0; o < aShape[0]!; o++) {
      pieces.push(mergePiece(o * rowA, rowB, o * rowB));
      pieces.push(copyPiece(d.tensors.a!, 0, o * rowA + rowB, rowA - rowB));
    }
  });

  const bytesToRead = inputs.reduce((sum, m) => sum + m.size, 0);
  const bytesToWrite = layouts.reduce((sum, l) => sum + l.size, 0);
  return { inputs, layouts, pieces, stats, bytesToRead, bytesToWrite };
}
