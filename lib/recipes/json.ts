/**
 * Our own recipe file: JSON that can say everything a board can (every method, variables,
 * per-row options, sweeps, output templates, pinned hashes). `recipe.schema.json` describes it
 * for editors; this module checks it by hand so every message names the row and the key.
 *
 * @example
 * {
 *   "format": "tensormerge-recipe", "version": 1,
 *   "variables": { "SD15": "Stable Diffusion 1.5" },
 *   "rows": [
 *     { "name": "base", "a": "__SD15__", "b": "anything-v3", "multiplier": 0.3, "save": false },
 *     { "name": "mix", "method": "add-difference", "a": "base", "b": "__STYLE__", "c": "__SD15__",
 *       "multiplier": "0.1:0.5:0.1", "dtype": "fp16" }
 *   ]
 * }
 */
import type { ConfigSource } from "../library/config";
import { OUTPUT_DTYPES, type OutputDtype } from "../dtypes";
import { MergeError } from "../errors";
import type { ModelSlot } from "../methods/define";
import { METHODS } from "../methods/registry";
import { MAX_SWEEP_VALUES, parseMultipliers } from "../validate";
import { inputToken, parseInputToken } from "./inputs";
import schema from "./recipe.schema.json";
import { SLOTS, rowParamFields, type Recipe, type RecipeInput, type RecipeLora, type RecipeModel, type RecipeRow } from "./types";
import { validateRecipe } from "./validate";

/** The JSON schema of recipe files. */
export const RECIPE_SCHEMA: unknown = schema;
export const RECIPE_FORMAT = "tensormerge-recipe";

const TOP_KEYS = ["$schema", "format", "version", "name", "description", "variables", "rows"];
const ROW_KEYS = ["name", "method", "a", "b", "c", "base", "models", "multiplier", "params", "weights", "blocks", "clamp", "dtype", "format", "save", "output", "discard", "prune", "vae", "config", "metadata", "produces", "loras", "te", "loraBlocks"];
const CONFIG_SOURCES: readonly ConfigSource[] = ["abc", "a", "b", "c", "none"];

function bad(where: string, message: string): MergeError {
  return new MergeError("RECIPE_INVALID", `${where}: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function unknownKeys(where: string, value: Record<string, unknown>, known: string[]): void {
  for (const k of Object.keys(value)) if (!known.includes(k)) throw bad(where, `unknown key "${k}" (known: ${known.join(", ")})`);
}

function str(where: string, v: unknown): string {
  if (typeof v !== "string") throw bad(where, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Parses a JSON recipe (text or an already parsed value) and validates it.
 *
 * @example
 * const recipe = parseJsonRecipe(readFileSync("board.json", "utf8"));
 */
export function parseJsonRecipe(input: string | unknown): Recipe {
  const recipe = readJson(input);
  validateRecipe(recipe);
  return recipe;
}

/** Parses without validating the whole (validation is the caller's next step). */
export function readJson(input: string | unknown): Recipe {
  let value: unknown = input;
  if (typeof input === "string") {
    try {
      value = JSON.parse(input);
    } catch (e) {
      throw new MergeError("RECIPE_INVALID", `recipe is not valid JSON: ${(e as Error).message}`);
    }
  }
  if (!isObject(value)) throw new MergeError("RECIPE_INVALID", "a JSON recipe is an object with a \"rows\" array");
  unknownKeys("recipe", value, TOP_KEYS);
  if (value.format !== undefined && value.format !== RECIPE_FORMAT) throw bad("recipe", `format must be "${RECIPE_FORMAT}"`);
  if (value.version !== undefined && value.version !== 1) throw bad("recipe", `version ${JSON.stringify(value.version)} is not supported (this tensormerge reads version 1)`);
  if (!Array.isArray(value.rows)) throw bad("recipe", "\"rows\" must be an array");
  const variables: Recipe["variables"] = [];
  if (value.variables !== undefined) {
    if (!isObject(value.variables)) throw bad("recipe.variables", "expected an object of name → description");
    for (const [name, v] of Object.entries(value.variables)) {
      const where = `variable ${name}`;
      const description = typeof v === "string" ? v : isObject(v) ? (unknownKeys(where, v, ["description"]), v.description === undefined ? "" : str(where, v.description)) : str(where, v);
      variables.push({ name, ...(description ? { description } : {}) });
    }
  }
  const rawRows = value.rows as unknown[];
  const names = rawRows.map((r) => (isObject(r) && typeof r.name === "string" ? r.name : ""));
  const rows = rawRows.map((r, i) => readRow(r, i, names));
  return {
    ...(value.name !== undefined ? { name: str("recipe.name", value.name) } : {}),
    ...(value.description !== undefined ? { description: str("recipe.description", value.description) } : {}),
    variables,
    rows,
  };
}

function readInput(where: string, v: unknown, names: string[]): RecipeInput {
  if (typeof v === "string") {
    if (v.trim() === "") throw bad(where, "empty input");
    return parseInputToken(v, names);
  }
  if (!isObject(v)) throw bad(where, `expected a string or an object ({"var"}, {"row"}, {"model"}), got ${JSON.stringify(v)}`);
  if ("var" in v) {
    unknownKeys(where, v, ["var"]);
    return { kind: "var", name: str(where, v.var) };
  }
  if ("row" in v) {
    unknownKeys(where, v, ["row"]);
    if (typeof v.row === "number") {
      if (!Number.isInteger(v.row) || v.row < 1) throw bad(where, "row numbers start at 1 (as in __O1__)");
      return { kind: "row", row: v.row - 1 };
    }
    const name = str(where, v.row);
    const index = names.indexOf(name);
    if (index < 0) throw bad(where, `no row is named "${name}"`);
    return { kind: "row", row: index };
  }
  if ("model" in v) {
    unknownKeys(where, v, ["model", "sha256", "legacy"]);
    return {
      kind: "model",
      ref: str(where, v.model),
      ...(v.sha256 !== undefined ? { sha256: str(where, v.sha256) } : {}),
      ...(v.legacy !== undefined ? { legacy: str(where, v.legacy) } : {}),
    };
  }
  throw bad(where, `an input object has "var", "row" or "model"`);
}

/** Parameter values by name: `{"beta": 0.3}`. */
function readNumbers(where: string, v: unknown, example: string): Record<string, number> {
  if (!isObject(v)) throw bad(where, `expected an object of numbers, such as ${example}`);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => {
    if (typeof x !== "number") throw bad(`${where}.${k}`, `expected a number, got ${JSON.stringify(x)}`);
    return [k, x];
  }));
}

/**
 * A base + models row's `models`: each entry an input as a string (`"a.safetensors"`,
 * `"__STYLE__"`, a row name) or an object: the input (`"input"`, or inline `"var"` / `"row"` /
 * `"model"` with its hashes) with its `"weight"` and its own `"params"`.
 */
function readModels(where: string, v: unknown, names: string[]): RecipeModel[] {
  if (!Array.isArray(v)) throw bad(where, "expected a list of models (strings, or objects with \"input\" and \"weight\")");
  return v.map((entry: unknown, k) => {
    const at = `${where}[${k}]`;
    if (!isObject(entry)) return { input: readInput(at, entry, names) };
    const { weight, params, input, ...rest } = entry;
    let source: RecipeInput;
    if (input !== undefined) {
      if (Object.keys(rest).length) throw bad(at, `"input" and ${Object.keys(rest).map((x) => `"${x}"`).join(", ")} both say which model: give one`);
      source = readInput(`${at} input`, input, names);
    } else source = readInput(at, rest, names);
    if (weight !== undefined && typeof weight !== "number") throw bad(`${at} weight`, `expected a number, got ${JSON.stringify(weight)}`);
    return {
      input: source,
      ...(weight !== undefined ? { weight: weight as number } : {}),
      ...(params !== undefined ? { params: readNumbers(`${at} params`, params, "{\"density\": 0.3}") } : {}),
    };
  });
}

/**
 * A bake row's `loras`: each a LoRA as a string (a file, a name, `"__STYLE__"`) or an object
 * `{"lora": …, "ratio": 0.8, "te": 0.4}`.
 */
function readLoras(where: string, v: unknown, names: string[]): RecipeLora[] {
  if (!Array.isArray(v) || v.length === 0) throw bad(where, "expected a non-empty list of LoRAs (strings, or objects with \"lora\", \"ratio\", \"te\")");
  return v.map((entry: unknown, k) => {
    const at = `${where}[${k}]`;
    if (!isObject(entry)) return { input: readInput(at, entry, names), ratio: 1 };
    unknownKeys(at, entry, ["lora", "ratio", "te"]);
    if (entry.lora === undefined) throw bad(at, "\"lora\" is missing");
    for (const key of ["ratio", "te"] as const) {
      if (entry[key] !== undefined && (typeof entry[key] !== "number" || !Number.isFinite(entry[key]))) throw bad(`${at} ${key}`, `expected a number, got ${JSON.stringify(entry[key])}`);
    }
    return { input: readInput(`${at} lora`, entry.lora, names), ratio: (entry.ratio as number | undefined) ?? 1, ...(entry.te !== undefined ? { te: entry.te as number } : {}) };
  });
}

function readRow(r: unknown, i: number, names: string[]): RecipeRow {
  const where = `row ${i + 1}`;
  if (!isObject(r)) throw bad(where, "expected an object");
  unknownKeys(where, r, ROW_KEYS);
  const label = `row ${i + 1}${typeof r.name === "string" ? ` (${r.name})` : ""}`;
  const name = str(`${label} name`, r.name);
  const inputs: Partial<Record<ModelSlot, RecipeInput>> = {};
  for (const slot of SLOTS) if (r[slot] !== undefined) inputs[slot] = readInput(`${label} ${slot}`, r[slot], names);
  const base = r.base === undefined ? undefined : readInput(`${label} base`, r.base, names);
  const models = r.models === undefined ? undefined : readModels(`${label} models`, r.models, names);
  if ((base || models) && r.method === undefined) throw bad(label, `a row with "base" or "models" names its "method" (ties, dare, model-stock, …)`);
  const method = r.method === undefined ? (inputs.c ? "add-difference" : inputs.b ? "weighted-sum" : "no-interpolation") : str(`${label} method`, r.method);
  let multipliers: number[];
  if (r.multiplier === undefined) {
    // A base + models row's α is a parameter like the others (lambda, t): its default will do.
    const known = base || models ? METHODS.find((m) => m.name === method) : undefined;
    if (method !== "no-interpolation" && !known) throw bad(label, `"multiplier" is missing`);
    multipliers = [known?.params[0]?.default ?? 0];
  } else if (typeof r.multiplier === "number") multipliers = [r.multiplier];
  else if (Array.isArray(r.multiplier)) {
    if (r.multiplier.length > MAX_SWEEP_VALUES) throw bad(`${label} multiplier`, `${r.multiplier.length} values; a sweep has at most ${MAX_SWEEP_VALUES}`);
    multipliers = r.multiplier.map((m, k) => {
      if (typeof m !== "number") throw bad(`${label} multiplier[${k}]`, `expected a number, got ${JSON.stringify(m)}`);
      return m;
    });
  } else {
    try {
      multipliers = parseMultipliers(str(`${label} multiplier`, r.multiplier));
    } catch (e) {
      throw bad(label, (e as Error).message);
    }
  }
  let dtype: OutputDtype | undefined;
  if (r.dtype !== undefined && r.dtype !== "same") {
    const d = str(`${label} dtype`, r.dtype);
    if (!(OUTPUT_DTYPES as readonly string[]).includes(d)) throw bad(label, `dtype "${d}" is not one of same, ${OUTPUT_DTYPES.join(", ")}`);
    dtype = d as OutputDtype;
  }
  const format = r.format === undefined ? "safetensors" : str(`${label} format`, r.format);
  if (format !== "safetensors" && format !== "ckpt") throw bad(label, `format "${format}" is not safetensors or ckpt`);
  if (r.save !== undefined && typeof r.save !== "boolean") throw bad(label, "\"save\" must be true or false");
  if (r.prune !== undefined && typeof r.prune !== "boolean") throw bad(label, "\"prune\" must be true or false");
  if (r.config !== undefined && !(CONFIG_SOURCES as readonly unknown[]).includes(r.config)) throw bad(label, `"config" must be one of ${CONFIG_SOURCES.join(", ")}`);
  let discard: string[] | undefined;
  if (r.discard !== undefined) {
    if (!Array.isArray(r.discard)) throw bad(label, "\"discard\" must be an array of regular expressions");
    discard = r.discard.map((p, k) => str(`${label} discard[${k}]`, p));
  }
  let metadata: Record<string, string> | undefined;
  if (r.metadata !== undefined) {
    if (!isObject(r.metadata)) throw bad(label, "\"metadata\" must be an object of strings");
    metadata = Object.fromEntries(Object.entries(r.metadata).map(([k, v]) => [k, str(`${label} metadata.${k}`, v)]));
  }
  let params: Record<string, number> | undefined;
  if (r.params !== undefined) {
    if (!isObject(r.params)) throw bad(label, "\"params\" must be an object of numbers, such as {\"beta\": 0.3}");
    params = readNumbers(`${label} params`, r.params, "{\"beta\": 0.3}");
  }
  let weights: Record<string, { pattern: string; value: number }[]> | undefined;
  if (r.weights !== undefined) {
    if (!isObject(r.weights)) throw bad(label, "\"weights\" must map parameter names to lists of {\"pattern\", \"value\"}");
    weights = Object.fromEntries(Object.entries(r.weights).map(([k, list]) => {
      if (!Array.isArray(list)) throw bad(`${label} weights.${k}`, "expected a list of {\"pattern\", \"value\"}");
      return [k, list.map((w: unknown, j) => {
        const at = `${label} weights.${k}[${j}]`;
        if (!isObject(w)) throw bad(at, "expected {\"pattern\", \"value\"}");
        unknownKeys(at, w, ["pattern", "value"]);
        if (typeof w.value !== "number") throw bad(at, `"value" must be a number, got ${JSON.stringify(w.value)}`);
        return { pattern: str(`${at} pattern`, w.pattern), value: w.value };
      })];
    }));
  }
  let blocks: Record<string, string | number[]> | undefined;
  if (r.blocks !== undefined) {
    if (!isObject(r.blocks)) throw bad(label, "\"blocks\" must map parameter names to block values, such as {\"alpha\": \"GRAD_V\"}");
    blocks = Object.fromEntries(Object.entries(r.blocks).map(([k, v]) => {
      if (typeof v === "string") return [k, v];
      if (Array.isArray(v) && v.every((x) => typeof x === "number")) return [k, [...v] as number[]];
      throw bad(`${label} blocks.${k}`, "expected a string (a list or a preset name) or a list of numbers");
    }));
  }
  if (r.clamp !== undefined && typeof r.clamp !== "boolean") throw bad(label, "\"clamp\" must be true or false");
  const loras = r.loras === undefined ? undefined : readLoras(`${label} loras`, r.loras, names);
  if (!loras && (r.te !== undefined || r.loraBlocks !== undefined)) throw bad(label, "\"te\" and \"loraBlocks\" belong to a row with \"loras\"");
  if (r.te !== undefined && (typeof r.te !== "number" || !Number.isFinite(r.te))) throw bad(`${label} te`, `expected a number, got ${JSON.stringify(r.te)}`);
  if (r.loraBlocks !== undefined && typeof r.loraBlocks !== "string" && !(Array.isArray(r.loraBlocks) && r.loraBlocks.every((x) => typeof x === "number"))) throw bad(`${label} loraBlocks`, "expected block values as text (\"1,0,0,…\") or a list of numbers");
  let produces: RecipeRow["produces"];
  if (r.produces !== undefined) {
    if (!isObject(r.produces)) throw bad(label, "\"produces\" must be an object");
    unknownKeys(`${label} produces`, r.produces, ["sha256", "legacy", "name"]);
    produces = { sha256: str(`${label} produces.sha256`, r.produces.sha256), legacy: str(`${label} produces.legacy`, r.produces.legacy), name: str(`${label} produces.name`, r.produces.name) };
    if (!/^[0-9a-f]{64}$/.test(produces.sha256)) throw bad(label, "produces.sha256 must be 64 lower-case hex digits");
  }
  return {
    name,
    method: method as RecipeRow["method"],
    inputs,
    ...(base ? { base } : {}),
    ...(models ? { models } : {}),
    multipliers,
    ...(params ? { params } : {}),
    ...(weights ? { weights } : {}),
    ...(blocks ? { blocks } : {}),
    ...(r.clamp === true ? { clamp: true } : {}),
    ...(dtype ? { dtype } : {}),
    format,
    save: r.save !== false,
    ...(r.output !== undefined ? { output: str(`${label} output`, r.output) } : {}),
    ...(discard ? { discard } : {}),
    ...(r.prune === true ? { prune: true } : {}),
    ...(r.vae !== undefined ? { vae: readInput(`${label} vae`, r.vae, names) } : {}),
    ...(r.config !== undefined && r.config !== "abc" ? { config: r.config as ConfigSource } : {}),
    ...(metadata ? { metadata } : {}),
    ...(produces ? { produces } : {}),
    ...(loras ? { loras } : {}),
    ...(r.te !== undefined ? { loraTe: r.te as number } : {}),
    ...(r.loraBlocks !== undefined ? { loraBlocks: typeof r.loraBlocks === "string" ? r.loraBlocks : [...(r.loraBlocks as number[])] } : {}),
  };
}

function writeInput(input: RecipeInput, recipe: Recipe): unknown {
  const token = inputToken(input, recipe, "name");
  if (token !== undefined) return token;
  if (input.kind !== "model") throw new MergeError("INTERNAL", "only model references need the object form");
  return { model: input.ref, ...(input.sha256 !== undefined ? { sha256: input.sha256 } : {}), ...(input.legacy !== undefined ? { legacy: input.legacy } : {}) };
}

/** A model entry: the bare input when it has nothing else, else an object (the input inline). */
function writeModel(entry: RecipeModel, recipe: Recipe): unknown {
  const input = writeInput(entry.input, recipe);
  const extra = {
    ...(entry.weight !== undefined ? { weight: entry.weight } : {}),
    ...(entry.params && Object.keys(entry.params).length ? { params: { ...entry.params } } : {}),
  };
  if (Object.keys(extra).length === 0) return input;
  return typeof input === "string" ? { input, ...extra } : { ...(input as Record<string, unknown>), ...extra };
}

/** The recipe as a plain JSON value (key order fixed, so the text is deterministic). */
export function recipeToJson(recipe: Recipe): Record<string, unknown> {
  const rows = recipe.rows.map((row) => {
    const out: Record<string, unknown> = { name: row.name, method: row.method };
    for (const slot of SLOTS) if (row.inputs[slot]) out[slot] = writeInput(row.inputs[slot]!, recipe);
    if (row.base) out.base = writeInput(row.base, recipe);
    if (row.models) out.models = row.models.map((m) => writeModel(m, recipe));
    out.multiplier = row.multipliers.length === 1 ? row.multipliers[0] : [...row.multipliers];
    const p = rowParamFields(row);
    if (p.params) out.params = p.params;
    if (p.weights) out.weights = p.weights;
    if (p.blocks) out.blocks = p.blocks;
    if (p.clamp) out.clamp = true;
    if (row.dtype) out.dtype = row.dtype;
    out.format = row.format;
    if (!row.save) out.save = false;
    if (row.output !== undefined) out.output = row.output;
    if (row.discard?.length) out.discard = [...row.discard];
    if (row.prune) out.prune = true;
    if (row.vae) out.vae = writeInput(row.vae, recipe);
    if (row.config && row.config !== "abc") out.config = row.config;
    if (row.metadata && Object.keys(row.metadata).length) out.metadata = { ...row.metadata };
    if (row.produces) out.produces = { sha256: row.produces.sha256, legacy: row.produces.legacy, name: row.produces.name };
    if (row.loras) {
      out.loras = row.loras.map((l) => {
        const input = writeInput(l.input, recipe);
        return l.ratio === 1 && l.te === undefined && typeof input === "string" ? input : { lora: input, ratio: l.ratio, ...(l.te !== undefined ? { te: l.te } : {}) };
      });
      if (row.loraTe !== undefined) out.te = row.loraTe;
      if (row.loraBlocks !== undefined) out.loraBlocks = typeof row.loraBlocks === "string" ? row.loraBlocks : [...row.loraBlocks];
    }
    return out;
  });
  return {
    format: RECIPE_FORMAT,
    version: 1,
    ...(recipe.name !== undefined ? { name: recipe.name } : {}),
    ...(recipe.description !== undefined ? { description: recipe.description } : {}),
    ...(recipe.variables.length ? { variables: Object.fromEntries(recipe.variables.map((v) => [v.name, v.description ?? ""])) } : {}),
    rows,
  };
}

/**
 * Writes a recipe as JSON text (two-space indented, final newline).
 *
 * @example
 * writeFileSync("board.json", formatJsonRecipe(parseClassicRecipe(text)));
 */
export function formatJsonRecipe(recipe: Recipe): string {
  validateRecipe(recipe);
  return JSON.stringify(recipeToJson(recipe), null, 2) + "\n";
}
