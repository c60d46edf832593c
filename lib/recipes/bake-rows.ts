/**
 * Recipes with bake rows (`loras`): the merge rows run first, as one board pass (runRecipe), then
 * each bake row in order, as one streaming pass of `bake()` on its A: a model, a variable, a
 * saved merge row's file or an earlier bake row's file. A bake row's output carries the bake
 * record (`tensormerge_lora_bake`: its A and LoRAs by sha256), so `reproduce` rebuilds it from
 * those files; a merge row's output carries its recipe as before.
 *
 * Not in the same pass as the board: a bake row reads its A from a file the board wrote
 * (validate.ts refuses a merge row that would take a bake row's output, and an unsaved A).
 */
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { MergeError } from "../errors";
import { bake } from "../lora/bake";
import { outputPathFor } from "./compile";
import { ModelFinder } from "./finder";
import type { RecipeOutputReport, RecipeRunReport, RunRecipeOptions } from "./run";
import { isBakeRow, mapRowInputs, rowLabel, usedVariables, type Recipe, type RecipeInput } from "./types";
import { validateRecipe } from "./validate";

type RunRecipe = (recipe: Recipe, options: RunRecipeOptions) => Promise<RecipeRunReport>;

/** Runs a recipe that has bake rows (see the module comment); `runBoard` is runRecipe. */
export async function runWithBakeRows(recipe: Recipe, options: RunRecipeOptions, runBoard: RunRecipe): Promise<RecipeRunReport> {
  const started = Date.now();
  validateRecipe(recipe);
  const cwd = options.cwd ?? process.cwd();
  const outDir = resolve(cwd, options.outDir ?? ".");
  // The merge rows, renumbered (no merge row refers to a bake row: validate.ts).
  const mergeRows = recipe.rows.map((r, i) => (isBakeRow(r) ? -1 : i)).filter((i) => i >= 0);
  const newIndex = new Map(mergeRows.map((old, k) => [old, k]));
  const shift = (input: RecipeInput): RecipeInput => (input.kind === "row" ? { kind: "row", row: newIndex.get(input.row)! } : input);
  const board: Recipe = { ...recipe, rows: mergeRows.map((i) => ({ ...recipe.rows[i]!, ...mapRowInputs(recipe.rows[i]!, shift) })) };
  const { outputPaths, ...rest } = options;
  const boardPaths = outputPaths ? Object.fromEntries(Object.entries(outputPaths).filter(([k]) => newIndex.has(Number(k))).map(([k, v]) => [newIndex.get(Number(k))!, v])) : undefined;
  // A binding for no variable of the recipe is a typo (the board alone does not know the bake rows' variables).
  if (options.strictBindings !== false) {
    const known = new Set([...usedVariables(recipe), ...recipe.variables.map((v) => v.name)]);
    for (const name of Object.keys(options.bindings ?? {})) {
      if (!known.has(name)) throw new MergeError("RECIPE_INVALID", `unknown variable __${name}__: the recipe has ${known.size === 0 ? "no variables" : `only ${[...known].map((v) => `__${v}__`).join(", ")}`}`);
    }
  }
  const bakeOnly = mergeRows.length === 0;
  const report: RecipeRunReport = bakeOnly ? emptyReport(recipe, options) : await runBoard(board, { ...rest, ...(boardPaths ? { outputPaths: boardPaths } : {}), strictBindings: false });
  for (const o of report.outputs) o.row = mergeRows[o.row - 1]! + 1;

  const finder = bakeOnly ? new ModelFinder({ ...(options.modelDirs ? { modelDirs: options.modelDirs } : {}), hashCache: options.hashCache ?? null, cwd, ...(options.signal ? { signal: options.signal } : {}) }) : report.compiled.finder;
  const rowFile = new Map<number, string>(); // recipe row → the file it wrote (or that stands for it)
  for (const o of report.outputs) rowFile.set(o.row - 1, o.path);
  const resolveInput = async (input: RecipeInput, what: string): Promise<string> => {
    if (input.kind === "row") {
      const path = rowFile.get(input.row);
      if (!path) throw new MergeError("RECIPE_INVALID", `${what}: ${rowLabel(recipe, input.row)} wrote no file to bake into`);
      return path;
    }
    const ref = input.kind === "var" ? options.bindings?.[input.name] : input.ref;
    if (ref === undefined) throw new MergeError("RECIPE_INVALID", `${what}: unbound variable __${(input as { name: string }).name}__: bind it with --var`);
    if (input.kind === "model" && input.sha256) {
      const direct = await finder.resolve(ref).catch(() => undefined);
      if (direct && (await finder.hashes(direct)).sha256 === input.sha256) return direct;
      const found = await finder.byHash(input.sha256, ref);
      if (found) return found;
      throw new MergeError("MODEL_NOT_FOUND", `${what}: no file with sha256 ${input.sha256} (recorded as "${ref}") in ${finder.dirs.join(", ") || "no model folder"}`);
    }
    return finder.resolve(ref);
  };

  for (const [i, row] of recipe.rows.entries()) {
    if (!isBakeRow(row)) continue;
    const label = rowLabel(recipe, i);
    const out = resolve(cwd, outputPaths?.[i]?.[0] ?? outputPathFor(outDir, row, row.multipliers[0]!));
    const entry: RecipeOutputReport = { row: i + 1, name: row.name, path: out, multiplier: row.multipliers[0]!, format: row.format, bytes: 0, state: "planned" };
    report.outputs.push(entry);
    rowFile.set(i, out);
    if (options.skipExisting && (await stat(out).catch(() => undefined))) {
      entry.state = "skipped";
      entry.bytes = (await stat(out)).size;
      options.onProgress?.({ phase: "output", path: out, state: "skipped" });
      continue;
    }
    const model = await resolveInput(row.inputs.a!, `${label} A`);
    const loras = [];
    for (const [k, l] of row.loras!.entries()) loras.push({ path: await resolveInput(l.input, `${label} LoRA ${k + 1}`), ratio: l.ratio, ...(l.te !== undefined ? { te: l.te } : {}) });
    if (options.dryRun) continue;
    options.onProgress?.({ phase: "output", path: out, state: "writing" });
    const r = await bake({
      model, loras, out,
      ...(row.loraTe !== undefined ? { te: row.loraTe } : {}),
      ...(row.loraBlocks !== undefined ? { loraBlocks: row.loraBlocks } : {}),
      ...(row.dtype ? { dtype: row.dtype } : {}),
      ...(row.metadata ? { metadata: row.metadata } : {}),
      recipeMetadata: options.recipeMetadata !== false,
      overwrite: options.overwrite === true,
      ...(options.modelDirs ? { models: [...options.modelDirs] } : {}),
      ...(options.engine ? { engine: options.engine } : {}),
      ...(options.threads !== undefined ? { threads: options.threads } : {}),
      ...(options.isa ? { isa: options.isa } : {}),
      ...(options.onProgress ? { onProgress: (progress) => options.onProgress!({ phase: "merge", passes: 1, progress }) } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    entry.state = "written";
    entry.bytes = r.output.bytes;
    report.bytesRead += r.bytesRead;
    report.bytesWritten += r.bytesWritten;
    report.passes += 1;
    report.engine = r.engine;
    report.isa = r.isa;
    report.threads = r.threads;
    report.warnings.push(...r.warnings);
    report.nonFinite.push(...r.nonFinite);
    options.onProgress?.({ phase: "output", path: out, state: "done" });
  }
  report.seconds += (Date.now() - started) / 1000;
  return report;
}

/** The report of a recipe with no merge row (before its bake rows run). */
function emptyReport(recipe: Recipe, options: RunRecipeOptions): RecipeRunReport {
  return {
    dryRun: options.dryRun === true, inputs: [], outputs: [], bytesRead: 0, bytesWritten: 0, passes: 0, disk: [],
    engine: options.engine === "js" ? "js" : "native", isa: "", threads: options.threads ?? 0, seconds: 0, warnings: [], nonFinite: [], stats: [], plan: null,
    compiled: { recipe, rows: [], files: [], skipped: [], replaced: new Map(), warnings: [], opens: new Map(), finder: new ModelFinder({}) },
  };
}

/** Whether a recipe needs runWithBakeRows. */
export function hasBakeRows(recipe: Recipe): boolean {
  return Array.isArray(recipe?.rows) && recipe.rows.some((r) => r && isBakeRow(r));
}
