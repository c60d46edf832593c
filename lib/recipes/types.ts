/**
 * A recipe: the board as data, independent of its text form (classic Merge Board text or our
 * JSON) and of the files it will be bound to. `compileRecipe()` turns it into planner rows.
 */
import type { ConfigSource } from "../library/config";
import type { OutputDtype } from "../dtypes";
import type { OutputFormat } from "../formats/output";
import type { MethodName } from "../methods/registry";
import type { MergeMethod, ModelSlot } from "../methods/define";
import { blockMapFor, parseBlockValues, valueForKey, type BlockMap } from "../blocks";
import { MergeError } from "../errors";
import { identifyModel } from "../library/identify";
import type { KeyValue, RowParams } from "../methods/params";
import type { ModelFile } from "../model";

/** Where a row input comes from. */
export type RecipeInput =
  /** A user variable (`__SD15__`), bound to a model when the recipe runs. */
  | { kind: "var"; name: string }
  /** An earlier row's output (`__O1__` or the row's name); 0-based index. */
  | { kind: "row"; row: number }
  /**
   * A model reference (path, name or hash prefix), optionally pinned to a file by its hashes:
   * a pinned reference only accepts a file with that sha256 (recipes embedded in models pin
   * every ingredient, so `reproduce` finds them by hash).
   */
  | { kind: "model"; ref: string; sha256?: string; legacy?: string };

/** The file a row stands for, in recipes embedded in a model (see metadata.ts). */
export interface RowProduces {
  sha256: string;
  /** 8-hex legacy A1111 hash. */
  legacy: string;
  /** The file's name as the model that used it recorded it. */
  name: string;
}

/** One of the models a base + models row merges (ties, dare, model-stock, …). */
export interface RecipeModel {
  input: RecipeInput;
  /** The model's weight in the merge (the method's default, 1, when absent). */
  weight?: number;
  /** This model's own values of the method's parameters (`{ density: 0.3 }`), over the row's. */
  params?: Record<string, number>;
}

/** A LoRA a bake row adds to its A (lib/recipes/bake-rows.ts). */
export interface RecipeLora {
  /** The LoRA file: a variable or a model reference (not a row). */
  input: RecipeInput;
  /** Ratio of the denoiser modules (default 1). */
  ratio: number;
  /** Ratio of the text-encoder modules (default: ratio × the row's `loraTe`). */
  te?: number;
}

export interface RecipeRow {
  /** Output name: file name stem, and how later rows may refer to the result. */
  name: string;
  method: MethodName;
  /** The classic slots A, B, C (empty for a base + models row). */
  inputs: Partial<Record<ModelSlot, RecipeInput>>;
  /** A base + models row: the base the models are fine-tunes of (task vectors are model − base). */
  base?: RecipeInput;
  /** A base + models row: the models merged, in order (the order seeds DARE's masks). */
  models?: RecipeModel[];
  /** One value, or several for a sweep (one output each, same pass): the method's α. */
  multipliers: number[];
  /** The method's other parameters by name (`{ beta: 0.3 }`); defaults otherwise. */
  params?: Record<string, number>;
  /**
   * Per-key values by parameter name (`{ alpha: [{ pattern, value }] }`): for a key, the first
   * matching pattern wins over the block and row values (lib/methods/params.ts).
   */
  weights?: Record<string, KeyValue[]>;
  /**
   * Block values by parameter name (`{ alpha: "GRAD_V", beta: "0.5,1,…" }`, the forms
   * lib/blocks/parse.ts reads), for A's architecture; keys in no block stay A.
   */
  blocks?: Record<string, string | number[]>;
  /** Clamp merged values to [min(A,B), max(A,B)]. */
  clamp?: boolean;
  /** Float output type; undefined keeps A's types. */
  dtype?: OutputDtype;
  format: OutputFormat;
  /** False: the row only feeds later rows and is never written. */
  save: boolean;
  /** Output file name template without extension; `<name>` and `<M>` are replaced. */
  output?: string;
  /** Regular expressions; matching keys are left out of this row's result. */
  discard?: string[];
  /** Drop EMA, scheduler buffers and VAE training keys. */
  prune?: boolean;
  /** A VAE to bake in (a variable or a model). */
  vae?: RecipeInput;
  /**
   * Which input's model config (`<name>.yaml`) is copied beside the outputs: the first of A, B,
   * C that has one (`abc`, the default), only `a`, `b` or `c`, or `none`.
   */
  config?: ConfigSource;
  /** Extra safetensors metadata for this row's outputs. */
  metadata?: Record<string, string>;
  /** Only in recipes embedded in a model: the file this row produced, if it was saved. */
  produces?: RowProduces;
  /** A bake row: LoRAs baked into A, in order (the method is no-interpolation). */
  loras?: RecipeLora[];
  /** A bake row: multiplies every LoRA's ratio for text-encoder modules, unless the LoRA sets `te` (default 1). */
  loraTe?: number;
  /** A bake row: LoRA block weights (lib/lora/block-weights.ts forms), for every LoRA. */
  loraBlocks?: string | number[];
}

/** Whether a row bakes LoRAs. */
export function isBakeRow(row: Pick<RecipeRow, "loras">): boolean {
  return row.loras !== undefined;
}

export interface RecipeVariable {
  name: string;
  description?: string;
}

export interface Recipe {
  name?: string;
  description?: string;
  /** Declared variables, in order (a recipe may also use undeclared ones, as the classic text does). */
  variables: RecipeVariable[];
  rows: RecipeRow[];
}

export const SLOTS: readonly ModelSlot[] = ["a", "b", "c"];

/** One input of a row, with how messages name it ("A", "base", "model 2"). */
export interface LabelledInput {
  label: string;
  input: RecipeInput;
}

/** Every model input of a row, VAE aside: A, B, C, then the base and the models in order. */
export function rowInputs(row: Pick<RecipeRow, "inputs" | "base" | "models">): LabelledInput[] {
  const list: LabelledInput[] = [];
  for (const s of SLOTS) if (row.inputs[s]) list.push({ label: s.toUpperCase(), input: row.inputs[s]! });
  if (row.base) list.push({ label: "base", input: row.base });
  (row.models ?? []).forEach((m, i) => list.push({ label: `model ${i + 1}`, input: m.input }));
  return list;
}

/** What a base + models method reads: whether the base is required, and how many models. */
export interface ModelsShape {
  base: "required" | "optional";
  minModels: number;
  maxModels: number;
}

/**
 * A method's base + models inputs (`MethodDefinition.many`), or null for an A/B/C method. The one
 * place that reads the registry's declaration, so rows, CLI and metadata agree.
 */
export function modelsShapeOf(method: MergeMethod): ModelsShape | null {
  const many = method.many;
  return many ? { base: many.base ? "required" : "optional", minModels: many.min, maxModels: many.max } : null;
}

/** The per-model parameter a model's `weight` sets (mergekit's per-model `weight`). */
export const MODEL_WEIGHT_PARAM = "weight";

/** The row's fields that hold inputs (A, B, C, base, models), each input passed through `f`. */
export function mapRowInputs(row: Pick<RecipeRow, "inputs" | "base" | "models">, f: (input: RecipeInput) => RecipeInput): Pick<RecipeRow, "inputs" | "base" | "models"> {
  const inputs: RecipeRow["inputs"] = {};
  for (const s of SLOTS) if (row.inputs[s]) inputs[s] = f(row.inputs[s]!);
  return {
    inputs,
    ...(row.base ? { base: f(row.base) } : {}),
    ...(row.models ? { models: row.models.map((m) => ({ ...m, input: f(m.input), ...(m.params ? { params: { ...m.params } } : {}) })) } : {}),
  };
}

/** Whether a row is a base + models row rather than an A/B/C one. */
export function isModelsRow(row: Pick<RecipeRow, "base" | "models">): boolean {
  return row.base !== undefined || row.models !== undefined;
}

/** Variable names used by the rows (inputs and VAEs), in first-use order. */
export function usedVariables(recipe: Recipe): string[] {
  const seen = new Set<string>();
  for (const row of recipe.rows) {
    for (const input of [...rowInputs(row).map((i) => i.input), row.vae, ...(row.loras ?? []).map((l) => l.input)]) if (input?.kind === "var") seen.add(input.name);
  }
  return [...seen];
}

/** "row 2 (mix15)" for messages. */
export function rowLabel(recipe: Recipe, index: number): string {
  const row = recipe.rows[index];
  return row ? `row ${index + 1} (${row.name})` : `row ${index + 1}`;
}

/**
 * The planner's view of a row's parameters (undefined when the row only has its multiplier).
 * Block values need the block map of the row's A (`blocks`); without it they are left out
 * (validation only looks at names, ranges and patterns).
 */
export function rowParamsOf(row: Pick<RecipeRow, "params" | "weights" | "blocks">, blocks?: BlockMap | null, label: string | ((param: string) => string) = "block values"): RowParams | undefined {
  const values = row.params && Object.keys(row.params).length ? row.params : undefined;
  const weights = row.weights && Object.values(row.weights).some((l) => l.length) ? row.weights : undefined;
  // A label per parameter (merge(): --blocks, --beta-blocks, --density-blocks), or one for the row.
  const what = (name: string) => (typeof label === "string" ? `${label} for ${name}` : label(name));
  let blockValue: RowParams["blockValue"];
  let blockValues: RowParams["blockValues"];
  if (row.blocks && Object.keys(row.blocks).length && blocks !== undefined) {
    const names = Object.keys(row.blocks);
    if (blocks === null) throw new MergeError("INVALID_ARGUMENT", `${typeof label === "string" ? label : names.map(label).join(", ")}: model A's architecture has no block map (tensormerge blocks A shows it); use per-key patterns`);
    const map = blocks;
    const parsed = Object.fromEntries(Object.entries(row.blocks).map(([name, spec]) => [name, parseBlockValues(spec, map, { what: what(name) })]));
    blockValue = Object.fromEntries(names.map((name) => [name, (key: string) => valueForKey(parsed[name]!, map, key)]));
    blockValues = Object.fromEntries(names.map((name) => [name, { what: what(name), names: parsed[name]!.names, values: parsed[name]!.values }]));
  }
  if (!values && !weights && !blockValue) return undefined;
  return { ...(values ? { values } : {}), ...(weights ? { weights } : {}), ...(blockValue ? { blockValue, blockValues } : {}) };
}

/** The block map of a model's architecture, or null where there is none. */
export function blockMapOf(model: ModelFile): BlockMap | null {
  return blockMapFor(identifyModel(model).architecture, model.tensors.map((t) => t.name)) ?? null;
}

/** The row fields that carry parameters, copied (for metadata rows built from another row). */
export function rowParamFields(row: Pick<RecipeRow, "params" | "weights" | "blocks" | "clamp">): Pick<RecipeRow, "params" | "weights" | "blocks" | "clamp"> {
  return {
    ...(row.blocks && Object.keys(row.blocks).length ? { blocks: Object.fromEntries(Object.entries(row.blocks).map(([k, v]) => [k, typeof v === "string" ? v : [...v]])) } : {}),
    ...(row.params && Object.keys(row.params).length ? { params: { ...row.params } } : {}),
    ...(row.weights && Object.values(row.weights).some((l) => l.length)
      ? { weights: Object.fromEntries(Object.entries(row.weights).filter(([, l]) => l.length).map(([k, l]) => [k, l.map((w) => ({ pattern: w.pattern, value: w.value }))])) }
      : {}),
    ...(row.clamp ? { clamp: true } : {}),
  };
}
