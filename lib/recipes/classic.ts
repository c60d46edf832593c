/**
 * The classic Merge Board recipe text (bbc-mc/sdweb-merge-board), read and written:
 *
 *     # Sample Recipe
 *     a14 = __SD14__ + __F222__, 0.5
 *     mix14 = __O1__ + __WD13__ + __SD14__, 1.0, safetensors
 *     __F222__ # You can use F111 instead.
 *
 * One row per line: `OUT = A + B[ + C], M[, fp16][, safetensors]`. Two models make a weighted
 * sum, three an add difference; without `safetensors` the row is saved as `.ckpt`; `#` starts a
 * comment (whole line or end of line); a line starting with `_` declares a variable
 * (`__NAME__, note` or `__NAME__ # note`). The classic tool's limit of ten rows is gone.
 *
 * Our additions use the same comma-separated option slots, so classic recipes read unchanged:
 * `bf16` / `fp32`, a method name (`sigmoid`, `inverse-sigmoid`, …), `ckpt`, `nosave` (the row
 * only feeds later rows), a single model (`OUT = A, fp16`: no interpolation, a conversion) and a
 * multiplier range `start:stop:step` (a sweep, files named `<OUT>-<M>`). Unknown options are
 * errors rather than ignored, so a typo such as `fp61` is caught.
 */
import { OUTPUT_DTYPES, type OutputDtype } from "../dtypes";
import { MergeError } from "../errors";
import { METHODS, type MethodName } from "../methods/registry";
import type { ModelSlot } from "../methods/define";
import { formatMultiplier, parseMultipliers } from "../validate";
import { inputToken, parseInputToken } from "./inputs";
import { SLOTS, isModelsRow, type Recipe, type RecipeInput, type RecipeRow, type RecipeVariable } from "./types";
import { sanitizeOutputName, validateRecipe } from "./validate";

const METHOD_BY_COUNT: Record<number, MethodName> = { 1: "no-interpolation", 2: "weighted-sum", 3: "add-difference" };
const METHOD_TOKENS = new Map<string, MethodName>(METHODS.map((m) => [m.name, m.name as MethodName]));
const OPTION_HELP = `${OUTPUT_DTYPES.join(", ")}, safetensors, ckpt, nosave, ${[...METHOD_TOKENS.keys()].join(", ")}`;

function lineError(line: number, message: string): MergeError {
  return new MergeError("RECIPE_INVALID", `line ${line}: ${message}`);
}

interface RawRow {
  line: number;
  name: string;
  models: string[];
  rest: string[];
}

/**
 * Parses classic Merge Board text into a recipe and validates it.
 *
 * @example
 * const recipe = parseClassicRecipe("a = __SD15__ + __F222__, 0.5, fp16, safetensors\n");
 * recipe.rows[0].inputs.a; // { kind: "var", name: "SD15" }
 */
export function parseClassicRecipe(text: string): Recipe {
  const recipe = readClassic(text);
  validateRecipe(recipe);
  return recipe;
}

/** Parses without validating the whole (validation is the caller's next step). */
export function readClassic(text: string): Recipe {
  const raw: RawRow[] = [];
  const variables: RecipeVariable[] = [];
  let name: string | undefined;
  const lines = text.split(/\r?\n/);
  const first = lines.findIndex((l) => l.trim() !== "") + 1;
  lines.forEach((full, i) => {
    const lineNo = i + 1;
    const trimmed = full.trim();
    if (trimmed === "") return;
    if (trimmed.startsWith("#")) {
      // The first line, when it is a comment, is the recipe's title ("# Sample Recipe").
      if (lineNo === first) {
        const title = trimmed.replace(/^#+/, "").trim();
        if (title) name = title;
      }
      return;
    }
    const hash = trimmed.indexOf("#");
    const body = (hash >= 0 ? trimmed.slice(0, hash) : trimmed).trim();
    const comment = hash >= 0 ? trimmed.slice(hash + 1).trim() : "";
    if (body.startsWith("_")) {
      const m = /^__(.+?)__\s*(?:,(.*))?$/.exec(body);
      if (!m) throw lineError(lineNo, `"${body}" is neither a row (OUT = A + B, M) nor a variable (__NAME__)`);
      const description = (m[2] ?? "").trim() || comment;
      if (variables.some((v) => v.name === m[1])) throw lineError(lineNo, `variable __${m[1]}__ is declared twice`);
      variables.push({ name: m[1]!, ...(description ? { description } : {}) });
      return;
    }
    const eq = body.indexOf("=");
    if (eq < 0) throw lineError(lineNo, `expected "OUT = A + B[ + C], M[, fp16][, safetensors]", got "${body}"`);
    const parts = body.slice(eq + 1).split(",").map((p) => p.trim());
    const models = parts[0]!.split("+").map((p) => p.trim());
    raw.push({ line: lineNo, name: sanitizeOutputName(body.slice(0, eq)), models, rest: parts.slice(1) });
  });
  const rowNames = raw.map((r) => r.name);
  const rows = raw.map((r, i) => readRow(r, rowNames, i));
  return { ...(name !== undefined ? { name } : {}), variables, rows };
}

function readRow(r: RawRow, rowNames: string[], index: number): RecipeRow {
  if (r.models.length > 3) throw lineError(r.line, `${r.models.length} models; a row takes A + B, or A + B + C`);
  r.models.forEach((m, k) => {
    if (m === "") throw lineError(r.line, `model ${SLOTS[k]!.toUpperCase()} is empty${k === 2 ? " (add difference needs A + B + C)" : ""}`);
  });
  const inputs: Partial<Record<ModelSlot, RecipeInput>> = {};
  r.models.forEach((m, k) => { inputs[SLOTS[k]!] = parseInputToken(m, rowNames); });

  let method: MethodName | undefined;
  let dtype: OutputDtype | undefined;
  let format: "ckpt" | "safetensors" = "ckpt";
  let save = true;
  let multipliers: number[] | undefined;
  r.rest.forEach((part, k) => {
    const token = part.toLowerCase();
    const isOption = (OUTPUT_DTYPES as readonly string[]).includes(token) || token === "safetensors" || token === "ckpt" || token === "nosave" || METHOD_TOKENS.has(token);
    if (k === 0 && !isOption) {
      multipliers = readMultiplier(part, r.line);
      return;
    }
    if (token === "") throw lineError(r.line, "empty option between commas");
    if ((OUTPUT_DTYPES as readonly string[]).includes(token)) {
      if (dtype !== undefined) throw lineError(r.line, `two output types (${dtype}, ${token})`);
      dtype = token as OutputDtype;
    } else if (token === "safetensors" || token === "ckpt") format = token;
    else if (token === "nosave") save = false;
    else if (METHOD_TOKENS.has(token)) {
      if (method !== undefined) throw lineError(r.line, `two methods (${method}, ${token})`);
      method = METHOD_TOKENS.get(token)!;
    } else throw lineError(r.line, `unknown option "${part}" (known: ${OPTION_HELP})`);
  });
  method ??= METHOD_BY_COUNT[r.models.length]!;
  if (multipliers === undefined) {
    if (method !== "no-interpolation") throw lineError(r.line, `row ${index + 1} (${r.name}) has no multiplier M`);
    multipliers = [0];
  }
  return { name: r.name, method, inputs, multipliers, ...(dtype ? { dtype } : {}), format, save };
}

function readMultiplier(text: string, line: number): number[] {
  try {
    if (text.includes(":")) return parseMultipliers(text);
    const v = Number(text);
    if (!Number.isFinite(v)) throw new Error();
    return [v];
  } catch {
    throw lineError(line, `multiplier "${text}" is not a number or a range start:stop:step`);
  }
}

function cannot(row: RecipeRow, index: number, what: string): MergeError {
  return new MergeError("RECIPE_INVALID", `row ${index + 1} (${row.name}): the classic text cannot express ${what}; save the recipe as JSON`);
}

/** A sweep as `start:stop:step` when it is one (as parseMultipliers reads it back). */
function rangeText(values: number[]): string | undefined {
  if (values.length < 2) return undefined;
  const step = Math.round((values[1]! - values[0]!) * 1e10) / 1e10;
  if (!(step > 0)) return undefined;
  const text = `${formatMultiplier(values[0]!)}:${formatMultiplier(values[values.length - 1]!)}:${formatMultiplier(step)}`;
  try {
    const back = parseMultipliers(text);
    return back.length === values.length && back.every((v, i) => v === values[i]) ? text : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes a recipe as classic Merge Board text. Throws RECIPE_INVALID for what the text cannot
 * say (per-row discard, VAE, metadata, output templates, pinned hashes, irregular sweeps).
 *
 * @example
 * formatClassicRecipe(recipe); // "a14 = __SD14__ + __F222__, 0.5\n…"
 */
export function formatClassicRecipe(recipe: Recipe): string {
  validateRecipe(recipe);
  const lines: string[] = [];
  if (recipe.name !== undefined) {
    if (/[\r\n]/.test(recipe.name)) throw new MergeError("RECIPE_INVALID", "the recipe name has a line break");
    lines.push(`# ${recipe.name}`);
  }
  recipe.rows.forEach((row, i) => {
    if (isModelsRow(row)) throw cannot(row, i, `a ${row.method} row's base and list of models (the classic board has only A, B and C)`);
    if (row.discard?.length) throw cannot(row, i, "discarded keys");
    if (row.prune) throw cannot(row, i, "pruning");
    if (row.vae) throw cannot(row, i, "a baked-in VAE");
    if (row.loras) throw cannot(row, i, "baked LoRAs (a row with \"loras\" exists only in JSON recipes)");
    if (row.config && row.config !== "abc") throw cannot(row, i, `the model config source "${row.config}"`);
    if (row.metadata && Object.keys(row.metadata).length) throw cannot(row, i, "extra metadata");
    if (row.output !== undefined) throw cannot(row, i, "an output file name template");
    if (row.produces) throw cannot(row, i, "the file a row produced");
    if (row.params && Object.keys(row.params).length) throw cannot(row, i, `the parameters ${Object.keys(row.params).join(", ")}`);
    if (row.weights && Object.values(row.weights).some((l) => l.length)) throw cannot(row, i, "per-key weights");
    if (row.clamp) throw cannot(row, i, "clamp");
    if (row.blocks && Object.keys(row.blocks).length) throw cannot(row, i, "block weights");
    if (/[=,+#]/.test(row.name) || row.name.startsWith("_")) throw cannot(row, i, `the output name "${row.name}"`);
    const models = SLOTS.filter((s) => row.inputs[s]).map((s) => {
      const token = inputToken(row.inputs[s]!, recipe, "index");
      if (token === undefined || /[=,+#]/.test(token) || token !== token.trim() || (row.inputs[s]!.kind === "model" && token.startsWith("_"))) {
        throw cannot(row, i, `input ${s.toUpperCase()} as written`);
      }
      return token;
    });
    const parts = [`${row.name} = ${models.join(" + ")}`];
    const implied = METHOD_BY_COUNT[models.length];
    if (row.method !== "no-interpolation" || row.multipliers[0] !== 0) {
      const m = row.multipliers.length === 1 ? String(row.multipliers[0]) : rangeText(row.multipliers);
      if (m === undefined) throw cannot(row, i, `the multipliers ${row.multipliers.join(", ")} (only a range start:stop:step)`);
      parts.push(m);
    }
    if (row.dtype) parts.push(row.dtype);
    if (row.method !== implied) parts.push(row.method);
    if (row.format === "safetensors") parts.push("safetensors");
    if (!row.save) parts.push("nosave");
    lines.push(parts.join(", "));
  });
  if (recipe.variables.length > 0) {
    lines.push("", "# variables");
    for (const v of recipe.variables) {
      if (v.description !== undefined && /[\r\n]/.test(v.description)) throw new MergeError("RECIPE_INVALID", `variable __${v.name}__: its description has a line break`);
      lines.push(v.description ? `__${v.name}__ # ${v.description}` : `__${v.name}__`);
    }
  }
  return lines.join("\n") + "\n";
}
