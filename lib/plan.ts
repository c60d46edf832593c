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
import type { OutputDtype } from "./dtypes";
import { MergeError } from "./errors";
import type { OutputFormat, OutputLayout } from "./formats/output";
import { sideModelOf } from "./formats/ckpt/strided";
import type { MergeMethod, ModelSlot } from "./methods/define";
import type { RowParams } from "./methods/params";
import { shapeToString, type ModelFile, type TensorInfo } from "./model";
import type { JobPiece } from "./native/job";
import { planManyRow } from "./plan-many";
import { layoutRowOutputs } from "./plan-layouts";
import { fileModel, materialize, segmentsOf, type RowResult, type VirtualModel } from "./plan-expr";
import { buildPieces, type SavedOutput } from "./plan-pieces";
import { planRow } from "./plan-row";

// Defined in lib/plan-expr.ts; still exported here, where they were defined before it.
export {
  callExpr, exprHasStats, fileModel, fixedTensor, keptTensor, withDtype,
  type Expr, type RowResult, type RowTensor, type Segment, type StatExpr, type VirtualModel, type VirtualTensor,
} from "./plan-expr";

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

function emptyStats(): PlanStats {
  return { tensors: 0, merged: 0, missing: {}, missingExamples: [], copiedAsIs: 0, replaced: 0, discarded: 0, partial: [], extraKeys: 0 };
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
