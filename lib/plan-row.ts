/**
 * Evaluates one A/B/C row of a board symbolically (lib/plan.ts): for each of A's keys, whether
 * it is kept, copied or merged, and a merged key's segments for any of the row's multipliers.
 * Base + models rows are lib/plan-many.ts.
 */
import { OUTPUT_DTYPE_TO_DTYPE, isMathDtype, isNarrowFloat, type Dtype } from "./dtypes";
import { MergeError } from "./errors";
import { isInputChannelExtension, sameShape } from "./keys";
import { SCALED_FP8_MARKER, refuseScaledFp8 } from "./scaled-fp8";
import type { KernelCall, ModelSlot } from "./methods/define";
import { paramResolver } from "./methods/params";
import { numelOf, shapeToString } from "./model";
import { nameHash } from "./engine/philox";
import type { BoardRow, PlanStats } from "./plan";
import {
  callExpr, convertedTo, exprAt, fixedTensor, keptTensor, realTensor, realValues, scaledBy, withDtype,
  type Expr, type RowResult, type RowTensor, type Segment, type VirtualModel, type VirtualTensor,
} from "./plan-expr";


const NO_PARAMS: number[] = [];

/** Evaluates one row symbolically: its keys, each for any of its multipliers. */
export function planRow(row: BoardRow, models: Partial<Record<ModelSlot, VirtualModel>>, stats: PlanStats): RowResult {
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
