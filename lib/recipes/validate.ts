/**
 * Checks a recipe as a whole, before any model is opened or any file written: names, methods and
 * their inputs (add-difference without C), multipliers, row references (a later row, a cycle, a
 * sweep feeding another row), output templates and discard patterns. Every problem is a
 * RECIPE_INVALID error that names the row.
 */
import { OUTPUT_DTYPES } from "../dtypes";
import { MergeError } from "../errors";
import { compileDiscardPatterns } from "../library/edits";
import { METHODS, resolveMethod } from "../methods/registry";
import { checkRowParams } from "../methods/params";
import type { MergeMethod } from "../methods/define";
import { MODEL_WEIGHT_PARAM, SLOTS, isModelsRow, modelsShapeOf, rowInputs, rowLabel, rowParamsOf, type Recipe, type RecipeInput, type RecipeRow } from "./types";

export const VARIABLE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** Characters the classic tool replaces in output names, plus path separators and controls. */
const NAME_UNSAFE = /[\\/|:?"<>*\u0000-\u001f]/g;

function invalid(message: string): MergeError {
  return new MergeError("RECIPE_INVALID", message);
}

/** An output name made safe for a file name, as the classic tool does (`re.sub(r'[\\|:|?|"|<|>|\|\*]', '-', O)`). */
export function sanitizeOutputName(name: string): string {
  return name.trim().replace(NAME_UNSAFE, "-");
}

/** Row indices a row reads (inputs only; a VAE is always a file). */
export function rowDependencies(recipe: Recipe, index: number): number[] {
  const row = recipe.rows[index]!;
  return rowInputs(row).map((i) => i.input).filter((i): i is Extract<RecipeInput, { kind: "row" }> => i.kind === "row").map((i) => i.row);
}

/** A cycle through `start`, as row indices, or null. */
function findCycle(recipe: Recipe): number[] | null {
  const state = new Array<0 | 1 | 2>(recipe.rows.length).fill(0);
  const stack: number[] = [];
  const visit = (i: number): number[] | null => {
    if (state[i] === 2) return null;
    if (state[i] === 1) return [...stack.slice(stack.indexOf(i)), i];
    state[i] = 1;
    stack.push(i);
    for (const d of rowDependencies(recipe, i)) {
      if (d < 0 || d >= recipe.rows.length) continue;
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state[i] = 2;
    return null;
  };
  for (let i = 0; i < recipe.rows.length; i++) {
    const c = visit(i);
    if (c) return c;
  }
  return null;
}

export interface RecipeCheck {
  /** Not errors, but worth telling: unsaved rows nothing uses, for example. */
  warnings: string[];
}

/**
 * Validates a recipe; throws RECIPE_INVALID on the first problem.
 *
 * @example
 * validateRecipe(parseRecipe(text)); // { warnings: [] }
 */
export function validateRecipe(recipe: Recipe): RecipeCheck {
  const warnings: string[] = [];
  if (recipe.rows.length === 0) throw invalid("the recipe has no rows");
  const names = new Map<string, number>();
  recipe.rows.forEach((row, i) => {
    const label = rowLabel(recipe, i);
    if (!row.name || row.name !== sanitizeOutputName(row.name) || row.name === "." || row.name === "..") {
      throw invalid(`row ${i + 1}: output name ${JSON.stringify(row.name)} is empty or not usable as a file name`);
    }
    if (/^__.*__$/.test(row.name)) throw invalid(`${label}: an output name cannot look like a variable`);
    const lower = row.name.toLowerCase();
    if (names.has(lower)) throw invalid(`${label}: output name "${row.name}" is already used by ${rowLabel(recipe, names.get(lower)!)}`);
    names.set(lower, i);
  });

  const cycle = findCycle(recipe);
  if (cycle) throw invalid(`the rows form a cycle: ${cycle.map((i) => recipe.rows[i]!.name).join(" → ")}`);

  recipe.rows.forEach((row, i) => {
    const label = rowLabel(recipe, i);
    const method = resolveMethodFor(row.method, label);
    if (modelsShapeOf(method) || isModelsRow(row)) checkModelsRow(recipe, i, method);
    else {
      for (const slot of SLOTS) {
        const input = row.inputs[slot];
        const needed = method.inputs.includes(slot);
        if (needed && !input) throw invalid(`${label}: ${method.name} needs model ${slot.toUpperCase()}${slot === "c" ? " (R = A + (B − C)·M)" : ""}`);
        if (!needed && input) throw invalid(`${label}: ${method.name} does not use model ${slot.toUpperCase()}`);
        if (input) checkInput(recipe, i, slot.toUpperCase(), input);
      }
    }
    if (row.vae) {
      if (row.vae.kind === "row") throw invalid(`${label}: the VAE must be a model file or a variable, not a row`);
      checkInput(recipe, i, "VAE", row.vae);
    }
    if (row.multipliers.length === 0) throw invalid(`${label}: no multiplier`);
    if (!method.usesMultiplier && row.multipliers.length > 1) throw invalid(`${label}: ${method.name} takes no multiplier, so it cannot sweep`);
    const [lo, hi] = method.multiplierRange;
    for (const m of row.multipliers) {
      if (typeof m !== "number" || !Number.isFinite(m) || m < lo || m > hi) throw invalid(`${label}: multiplier ${m} is outside ${lo}…${hi} for ${method.name}`);
    }
    if (new Set(row.multipliers).size !== row.multipliers.length) throw invalid(`${label}: the sweep lists a multiplier twice`);
    try {
      checkRowParams(method, rowParamsOf(row));
      if (row.blocks?.alpha !== undefined && row.multipliers.length > 1) throw new Error("blocks set alpha for every block, so a multiplier sweep would write the same model several times");
      for (const [name, spec] of Object.entries(row.blocks ?? {})) {
        if (!method.params.some((p) => p.name === name)) throw new Error(`block values for ${name}: ${method.name} has no parameter "${name}"`);
        if (typeof spec !== "string" && !(Array.isArray(spec) && spec.every((v) => typeof v === "number"))) throw new Error(`block values for ${name} must be a string or a list of numbers`);
      }
    } catch (e) {
      throw invalid(`${label}: ${(e as Error).message}`);
    }
    if (row.clamp && (!method.clampable || isModelsRow(row))) throw invalid(`${label}: clamp needs models A and B; ${method.name} does not read B`);
    if (row.dtype !== undefined && !(OUTPUT_DTYPES as readonly string[]).includes(row.dtype)) throw invalid(`${label}: dtype "${row.dtype}" is not one of ${OUTPUT_DTYPES.join(", ")}`);
    if (row.format !== "safetensors" && row.format !== "ckpt") throw invalid(`${label}: format "${row.format}" is not safetensors or ckpt`);
    if (row.output !== undefined) {
      const rest = row.output.replaceAll("<name>", "").replaceAll("<M>", "");
      if (/[<>]/.test(rest)) throw invalid(`${label}: output template "${row.output}" has an unknown placeholder (known: <name>, <M>)`);
      if (row.output.trim() === "" || sanitizeOutputName(rest) !== rest) throw invalid(`${label}: output template "${row.output}" is not usable as a file name`);
      if (row.multipliers.length > 1 && !row.output.includes("<M>")) throw invalid(`${label}: a sweep's output template must contain <M>, or every value would get the same file name`);
    }
    try {
      compileDiscardPatterns(row.discard);
    } catch (e) {
      throw invalid(`${label}: ${(e as Error).message}`);
    }
  });

  // Rows that feed others must come first and be single-valued; unsaved rows should be used.
  const usedBy = recipe.rows.map(() => [] as number[]);
  recipe.rows.forEach((row, i) => {
    for (const { label, input } of rowInputs(row)) {
      if (input.kind !== "row") continue;
      if (input.row >= i) {
        throw invalid(`${rowLabel(recipe, i)}: input ${label} is ${rowLabel(recipe, input.row)}, which comes later; rows run in order, so an input can only be an earlier row's output`);
      }
      usedBy[input.row]!.push(i);
    }
  });
  recipe.rows.forEach((row, i) => checkBakeRow(recipe, i, usedBy[i]!));
  recipe.rows.forEach((row, i) => {
    if (usedBy[i]!.length > 0 && row.multipliers.length > 1) {
      throw invalid(`${rowLabel(recipe, usedBy[i]![0]!)} takes ${rowLabel(recipe, i)}, a sweep of ${row.multipliers.length} values; only a single-valued row can feed another`);
    }
    if (!row.save && usedBy[i]!.length === 0) warnings.push(`${rowLabel(recipe, i)} is not saved and no row uses it: it is skipped`);
  });
  return { warnings };
}

/**
 * A base + models row: its method takes a base and models (not A/B/C), the base is there when
 * the method needs it, there are enough models, none twice (nor the base among them), each
 * weight a finite number and each model's own parameters the method's, in range.
 */
function checkModelsRow(recipe: Recipe, index: number, method: MergeMethod): void {
  const row: RecipeRow = recipe.rows[index]!;
  const label = rowLabel(recipe, index);
  const shape = modelsShapeOf(method);
  if (!shape) {
    const slots = method.inputs.map((s) => s.toUpperCase()).join(", ");
    throw invalid(`${label}: ${method.name} takes models ${slots}, not a base and a list of models; base + models methods: ${METHODS.filter((m) => modelsShapeOf(m)).map((m) => m.name).join(", ") || "none"}`);
  }
  for (const slot of SLOTS) if (row.inputs[slot]) throw invalid(`${label}: ${method.name} takes a base and a list of models, not model ${slot.toUpperCase()}`);
  if (!row.base && shape.base === "required") throw invalid(`${label}: ${method.name} needs a base (task vectors are each model minus the base)`);
  const models = row.models ?? [];
  if (models.length < shape.minModels) throw invalid(`${label}: ${method.name} needs at least ${shape.minModels} model${shape.minModels === 1 ? "" : "s"}, got ${models.length}`);
  if (models.length > shape.maxModels) throw invalid(`${label}: ${method.name} takes at most ${shape.maxModels} models, got ${models.length}`);
  if (row.base) checkInput(recipe, index, "base", row.base);
  if (row.config === "b" || row.config === "c") throw invalid(`${label}: config "${row.config}" names a model slot ${method.name} does not have: use "a" (the base), "abc" (the first input that has one) or "none"`);
  const seen = new Map<string, string>();
  if (row.base) seen.set(JSON.stringify(row.base), "the base");
  models.forEach((m, k) => {
    const what = `model ${k + 1}`;
    if (m === null || typeof m !== "object" || !m.input) throw invalid(`${label}: ${what} has no input`);
    checkInput(recipe, index, what, m.input);
    const key = JSON.stringify(m.input);
    const twin = seen.get(key);
    if (twin) throw invalid(`${label}: ${what} (${describeInput(recipe, m.input)}) is the same as ${twin}: each model is merged once`);
    seen.set(key, what);
    if (m.weight !== undefined && !method.params.some((p) => p.name === MODEL_WEIGHT_PARAM && p.perModel)) throw invalid(`${label}: ${what}: ${method.name} takes no per-model weight`);
    if (m.weight !== undefined && (typeof m.weight !== "number" || !Number.isFinite(m.weight) || Math.abs(m.weight) > 1e6)) {
      throw invalid(`${label}: ${what}: weight ${JSON.stringify(m.weight)} must be a finite number`);
    }
    try {
      for (const name of Object.keys(m.params ?? {})) {
        const p = method.params.find((q) => q.name === name);
        if (p && !p.perModel) throw new Error(`${name} is the row's parameter, not a model's: set it in the row's "params"`);
      }
      checkRowParams(method, m.params && Object.keys(m.params).length ? { values: m.params } : undefined);
    } catch (e) {
      throw invalid(`${label}: ${what}: ${(e as Error).message}`);
    }
  });
}

/**
 * A bake row (`loras`): it bakes its LoRAs into A (method no-interpolation, one output, none of
 * the merge-only options); the LoRAs are files or variables; A is a file, a variable, a saved
 * merge row or an earlier bake row; no merge row takes a bake row's output (bake rows run after
 * the board, lib/recipes/bake-rows.ts).
 */
function checkBakeRow(recipe: Recipe, index: number, usedBy: number[]): void {
  const row = recipe.rows[index]!;
  const label = rowLabel(recipe, index);
  if (!row.loras) {
    if (row.loraTe !== undefined || row.loraBlocks !== undefined) throw invalid(`${label}: te and loraBlocks belong to a row with loras`);
    return;
  }
  if (row.method !== "no-interpolation") throw invalid(`${label}: a row with loras bakes them into A; its method is no-interpolation, not ${row.method}`);
  if (!row.save) throw invalid(`${label}: a bake row is always saved (save: false is not supported)`);
  if (row.multipliers.length !== 1) throw invalid(`${label}: a bake row has no multiplier to sweep`);
  const unsupported = [row.vae ? "vae" : "", row.discard?.length ? "discard" : "", row.prune ? "prune" : "", row.clamp ? "clamp" : "", row.blocks && Object.keys(row.blocks).length ? "blocks (use loraBlocks)" : "", row.weights && Object.keys(row.weights).length ? "weights" : "", row.params && Object.keys(row.params).length ? "params" : ""].filter(Boolean);
  if (unsupported.length) throw invalid(`${label}: a bake row does not take ${unsupported.join(", ")}`);
  if (row.loras.length === 0) throw invalid(`${label}: loras is empty`);
  row.loras.forEach((l, k) => {
    if (l.input.kind === "row") throw invalid(`${label}: LoRA ${k + 1} must be a LoRA file or a variable, not a row`);
    checkInput(recipe, index, `LoRA ${k + 1}`, l.input);
    for (const [what, v] of [["ratio", l.ratio], ["te", l.te]] as const) {
      if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || Math.abs(v) > 1e6)) throw invalid(`${label}: LoRA ${k + 1}: ${what} ${JSON.stringify(v)} must be a finite number`);
    }
  });
  if (row.loraTe !== undefined && (typeof row.loraTe !== "number" || !Number.isFinite(row.loraTe))) throw invalid(`${label}: te ${JSON.stringify(row.loraTe)} must be a finite number`);
  const a = row.inputs.a;
  if (a?.kind === "row" && !recipe.rows[a.row]!.save) throw invalid(`${label}: A is ${rowLabel(recipe, a.row)}, which is not saved; a bake row reads a file: save that row`);
  for (const j of usedBy) {
    if (!recipe.rows[j]!.loras) throw invalid(`${rowLabel(recipe, j)} takes ${label}, a bake row; bake rows run after the merge rows, so only another bake row can take its output`);
  }
}

/** An input as a user wrote it, for messages. */
export function describeInput(recipe: Recipe, input: RecipeInput): string {
  switch (input.kind) {
    case "var":
      return `__${input.name}__`;
    case "row":
      return recipe.rows[input.row]?.name ?? `row ${input.row + 1}`;
    case "model":
      return input.ref;
  }
}

function resolveMethodFor(name: string, label: string) {
  try {
    return resolveMethod(name);
  } catch (e) {
    throw invalid(`${label}: ${(e as Error).message}`);
  }
}

function checkInput(recipe: Recipe, index: number, slot: string, input: RecipeInput): void {
  const label = rowLabel(recipe, index);
  if (input.kind === "var" && !VARIABLE_NAME.test(input.name)) throw invalid(`${label}: input ${slot}: "${input.name}" is not a valid variable name`);
  if (input.kind === "row" && !(Number.isInteger(input.row) && input.row >= 0 && input.row < recipe.rows.length)) {
    throw invalid(`${label}: input ${slot} refers to row ${input.row + 1}, but the recipe has ${recipe.rows.length} row${recipe.rows.length === 1 ? "" : "s"}`);
  }
  if (input.kind === "model") {
    if (input.ref.trim() === "") throw invalid(`${label}: input ${slot} is empty`);
    if (input.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(input.sha256)) throw invalid(`${label}: input ${slot}: sha256 must be 64 lower-case hex digits`);
    if (input.legacy !== undefined && !/^[0-9a-f]{8}$/.test(input.legacy)) throw invalid(`${label}: input ${slot}: legacy hash must be 8 lower-case hex digits`);
  }
}

/** Method names, for messages and help. */
export const METHOD_NAMES = METHODS.map((m) => m.name);
