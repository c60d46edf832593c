/**
 * Can these models be merged? Checked from headers alone, before any output file exists.
 *
 * Every model is compared with A (the first), because A defines the output: its keys, order and
 * shapes. The rules:
 * - Architecture: models of two known, different families (SD 1.x, SD 2.x, SDXL, SDXL refiner,
 *   SD 3, FLUX) cannot be merged (ARCHITECTURE_MISMATCH). The SD 1.x variants (inpainting,
 *   instruct-pix2pix) are one family. A model identified as `unknown` is judged by structure: it
 *   must share at least half of the smaller model's tensors with A.
 * - Shapes: a tensor both models have must have the same shape (SHAPE_MISMATCH), except
 *   (a) the UNet input convolution when A has more input channels than the other model
 *   (inpainting 9 / instruct-pix2pix 8 vs 4: the shared channels are merged, the rest kept from
 *   A — `isInputChannelExtension` in lib/keys.ts); the other way round is refused, as in the
 *   classic tool ("A must be the inpainting model"); and (b) buffers copied from A as they are
 *   (`isCopiedAsIs`), which only earn a warning.
 * - Base + models methods (ties, dare, model-stock, …) pass the base first and then the models
 *   (labels "base", "model 1", …), so every model is checked against the base; the same file
 *   twice (by path, or by device and inode through another name) is refused before anything is
 *   read (`assertDistinctModels`): a model merged twice only weighs double by accident.
 * - Keys only in some models are not an error: they are counted and sampled in the report. The
 *   planner keeps A's value for a key another model lacks and ignores keys A lacks.
 */
import { basename } from "node:path";
import { MergeError, type ErrorCode } from "../errors";
import { isCopiedAsIs, isInputChannelExtension, sameShape } from "../keys";
import { shapeToString, type ModelFile } from "../model";
import { describeArchitecture, identifyModel, type ArchitectureId, type Identification } from "./identify";

export interface CompatibilityOptions {
  /** Names of the models in messages, in order (default "A", "B", "C", …). */
  labels?: readonly string[];
  /** How many example keys to keep per list (default 5). */
  sampleSize?: number;
}

export interface CompatModelSummary {
  label: string;
  path: string;
  architecture: ArchitectureId;
  architectureLabel: string;
  family: string;
  variant: string | null;
  inputChannels: number | null;
  tensors: number;
}

export interface KeyDifference {
  /** The model compared with A. */
  label: string;
  /** Keys A has and this model lacks. */
  missing: { count: number; sample: string[] };
  /** Keys this model has and A lacks. */
  extra: { count: number; sample: string[] };
}

export interface ShapeMismatch {
  tensor: string;
  /** The model compared with A. */
  label: string;
  a: number[];
  other: number[];
  /** "input-channels" (the known exception), "buffer" (copied from A) or "mismatch" (fatal). */
  kind: "input-channels" | "buffer" | "mismatch" | "input-channels-reversed";
  fatal: boolean;
}

/** One reason the models cannot be merged. */
export interface CompatProblem {
  code: Extract<ErrorCode, "ARCHITECTURE_MISMATCH" | "SHAPE_MISMATCH">;
  /** The model compared with A. */
  label: string;
  path: string;
  message: string;
  tensor?: string;
}

export interface CompatibilityReport {
  compatible: boolean;
  /** The error `assertCompatible` throws: ARCHITECTURE_MISMATCH first, then SHAPE_MISMATCH. */
  code: Extract<ErrorCode, "ARCHITECTURE_MISMATCH" | "SHAPE_MISMATCH"> | null;
  /** Why the models cannot be merged, one sentence each (empty when compatible). */
  reasons: string[];
  /** The same, structured. */
  problems: CompatProblem[];
  warnings: string[];
  models: CompatModelSummary[];
  /** One entry per model after A. */
  keyDifferences: KeyDifference[];
  /** Every shared tensor whose shape differs, fatal or not. */
  shapeMismatches: ShapeMismatch[];
  /** Tensors present in every model. */
  sharedKeys: number;
}

const DEFAULT_LABELS = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"];

function labelFor(options: CompatibilityOptions, i: number): string {
  return options.labels?.[i] ?? DEFAULT_LABELS[i] ?? `model ${i + 1}`;
}

function summary(model: ModelFile, id: Identification, label: string): CompatModelSummary {
  return {
    label, path: model.path, architecture: id.architecture, architectureLabel: id.label, family: id.family,
    variant: id.variant ?? null, inputChannels: id.inputChannels ?? null, tensors: model.tensors.length,
  };
}

function sample<T>(items: T[], n: number): T[] {
  return items.slice(0, n);
}

/**
 * Compares models (A first) and reports whether they can be merged and why not.
 *
 * @example
 * const report = checkCompatibility([await openModel(a), await openModel(b)]);
 * if (!report.compatible) console.error(report.reasons.join("\n"));
 */
export function checkCompatibility(models: readonly ModelFile[], options: CompatibilityOptions = {}): CompatibilityReport {
  if (models.length === 0) throw new MergeError("INVALID_ARGUMENT", "checkCompatibility needs at least one model");
  const n = options.sampleSize ?? 5;
  const ids = models.map((m) => identifyModel(m));
  const summaries = models.map((m, i) => summary(m, ids[i]!, labelFor(options, i)));
  const a = models[0]!;
  const idA = ids[0]!;
  const labelA = summaries[0]!.label;
  // Messages name each model by its slot and its file, "B (style.safetensors)", unless the
  // caller's labels already say what it is (recipes: "A (O1)").
  const nameOf = (i: number) => (options.labels?.[i] !== undefined ? summaries[i]!.label : `${summaries[i]!.label} (${basename(models[i]!.path)})`);
  const nameA = nameOf(0);
  const problems: CompatProblem[] = [];
  const warnings: string[] = [];
  const keyDifferences: KeyDifference[] = [];
  const shapeMismatches: ShapeMismatch[] = [];

  for (let i = 1; i < models.length; i++) {
    const m = models[i]!;
    const id = ids[i]!;
    const label = summaries[i]!.label;
    const name = nameOf(i);
    const problem = (c: CompatProblem["code"], message: string, tensor?: string) =>
      problems.push({ code: c, label, path: m.path, message, ...(tensor !== undefined ? { tensor } : {}) });
    const missing = a.tensors.filter((t) => !m.byName.has(t.name)).map((t) => t.name);
    const extra = m.tensors.filter((t) => !a.byName.has(t.name)).map((t) => t.name);
    keyDifferences.push({ label, missing: { count: missing.length, sample: sample(missing, n) }, extra: { count: extra.length, sample: sample(extra, n) } });
    const shared = a.tensors.length - missing.length;

    const known = idA.architecture !== "unknown" && id.architecture !== "unknown";
    if (known && idA.family !== id.family) {
      problem("ARCHITECTURE_MISMATCH", `${nameA} is ${describeArchitecture(idA)}, ${name} is ${describeArchitecture(id)}: models of different architectures cannot be merged`);
      continue;
    }
    if (!known && shared < Math.min(a.tensors.length, m.tensors.length) / 2) {
      problem("ARCHITECTURE_MISMATCH", `${nameA} (${describeArchitecture(idA)}) and ${name} (${describeArchitecture(id)}) share only ${shared} of their ${a.tensors.length} and ${m.tensors.length} tensors: they do not have the same structure and cannot be merged`);
      continue;
    }

    for (const t of m.tensors) {
      const ta = a.byName.get(t.name);
      if (!ta || sameShape(ta.shape, t.shape)) continue;
      let kind: ShapeMismatch["kind"];
      if (isInputChannelExtension(t.name, ta.shape, t.shape)) kind = "input-channels";
      else if (isInputChannelExtension(t.name, t.shape, ta.shape)) kind = "input-channels-reversed";
      else if (isCopiedAsIs(t.name, ta.dtype)) kind = "buffer";
      else kind = "mismatch";
      const fatal = kind === "mismatch" || kind === "input-channels-reversed";
      shapeMismatches.push({ tensor: t.name, label, a: [...ta.shape], other: [...t.shape], kind, fatal });
      if (kind === "input-channels-reversed") {
        problem("SHAPE_MISMATCH", `${name} has ${t.shape[1]} input channels and ${nameA} ${ta.shape[1]} (${t.name}): when merging an inpainting or instruct-pix2pix model with a normal one, ${labelA} must be the one with more input channels`, t.name);
      } else if (kind === "buffer") {
        warnings.push(`${t.name}: ${nameA} ${shapeToString(ta.shape)}, ${name} ${shapeToString(t.shape)}; a buffer, copied from ${nameA}`);
      }
    }
    const fatal = shapeMismatches.filter((s) => s.label === label && s.kind === "mismatch");
    if (fatal.length > 0) {
      const first = fatal[0]!;
      problem("SHAPE_MISMATCH", `${name} does not fit ${nameA}: ${fatal.length} tensor${fatal.length === 1 ? " has a" : "s have"} different shape${fatal.length === 1 ? "" : "s"}, e.g. ${first.tensor}: ${nameA} ${shapeToString(first.a)}, ${name} ${shapeToString(first.other)}`, first.tensor);
    }
    if (missing.length > 0) warnings.push(`${name} lacks ${missing.length} tensor${missing.length === 1 ? "" : "s"} that ${nameA} has (e.g. ${missing[0]}): ${nameA}'s values are kept`);
    if (extra.length > 0) warnings.push(`${name} has ${extra.length} tensor${extra.length === 1 ? "" : "s"} that ${nameA} lacks (e.g. ${extra[0]}): not in the output`);
  }

  let sharedKeys = 0;
  for (const t of a.tensors) if (models.every((m) => m.byName.has(t.name))) sharedKeys++;
  // Architecture problems first: they explain every shape problem that follows from them.
  problems.sort((x, y) => (x.code === y.code ? 0 : x.code === "ARCHITECTURE_MISMATCH" ? -1 : 1));
  const code = problems[0]?.code ?? null;
  return { compatible: problems.length === 0, code, reasons: problems.map((p) => p.message), problems, warnings, models: summaries, keyDifferences, shapeMismatches, sharedKeys };
}

/**
 * Throws unless the models can be merged: MergeError ARCHITECTURE_MISMATCH (for example
 * "A is SD 1.x (sd1), B is SDXL (sdxl): models of different architectures cannot be merged")
 * or SHAPE_MISMATCH (naming a tensor and both shapes). The error's `path` is the offending
 * model, `tensor` the first mismatching tensor. Returns the report when they can.
 *
 * @example
 * const [a, b] = await Promise.all([openModel(pathA), openModel(pathB)]);
 * assertCompatible([a, b]);                        // before creating any output
 * assertCompatible([a, b, c], { labels: ["O1", "B", "C"] });
 */
export function assertCompatible(models: readonly ModelFile[], options: CompatibilityOptions = {}): CompatibilityReport {
  const report = checkCompatibility(models, options);
  if (report.compatible) return report;
  const first = report.problems[0]!;
  const more = report.problems.length > 1 ? ` (and ${report.problems.length - 1} more problem${report.problems.length > 2 ? "s" : ""})` : "";
  throw new MergeError(first.code, first.message + more, { path: first.path, ...(first.tensor !== undefined ? { tensor: first.tensor } : {}) });
}

/**
 * Refuses the same file given twice among a row's models (its base included): the same path, or
 * the same device and inode (a hard link or symlink). INVALID_ARGUMENT names both by their labels.
 *
 * @example
 * assertDistinctModels([base, m1, m2], { labels: ["base", "model 1", "model 2"] });
 */
export function assertDistinctModels(models: readonly ModelFile[], options: Pick<CompatibilityOptions, "labels"> = {}): void {
  const seen = new Map<string, number>();
  const name = (i: number) => (options.labels?.[i] !== undefined ? options.labels[i]! : `${labelFor(options, i)} (${basename(models[i]!.path)})`);
  models.forEach((m, i) => {
    const keys = [`path:${m.path}`, ...(m.stamp ? [`inode:${m.stamp.dev}:${m.stamp.ino}`] : [])];
    for (const key of keys) {
      const first = seen.get(key);
      if (first !== undefined && models[first] !== undefined) {
        throw new MergeError("INVALID_ARGUMENT", `${name(i)} is the same file as ${name(first)}: each model is merged once (give its weight instead)`, { path: m.path });
      }
    }
    for (const key of keys) seen.set(key, i);
  });
}
