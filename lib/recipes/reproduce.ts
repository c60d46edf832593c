/**
 * `reproduce`: rebuild a model from the recipe it carries (`tensormerge_recipe`), finding every
 * ingredient by sha256 in the model folders, and check the result is the same file, bit for bit.
 *
 * Intermediate files the recipe records (`produces`) are used when a folder has them and
 * recomputed in the same pass when none does, so only the original ingredients are required.
 */
import { basename, extname, resolve } from "node:path";
import type { EngineName } from "../engine";
import { MergeError } from "../errors";
import { openModel as defaultOpenModel } from "../formats";
import { sha256File } from "../library/hash";
import type { HashCache } from "../library/hash-cache";
import type { ModelFile } from "../model";
import { embeddedRecipe, RECIPE_METADATA_KEY } from "./metadata";
import { runRecipe, type RecipeProgress, type RecipeRunReport } from "./run";
import { optionalBoolean, optionalFunction, optionalSignal, optionalString, optionalStringList, rejectUnknownKeys, requireString } from "../validate";
import type { Recipe } from "./types";
import { isModelFolder } from "../hf/folder";
import { reproduceHfFolder, type HfReproduceReport } from "../hf/reproduce";
import { bakeRecordOf, reproduceBake, type BakeReproduction } from "../lora/reproduce";

/** The bake a model records (and no recipe): rebuilt by bake() again; undefined otherwise. */
async function bakeReproductionOf(source: string, options: ReproduceOptions): Promise<BakeReproduction | undefined> {
  const model = await (options.openModel ?? defaultOpenModel)(source);
  const record = model.metadata[RECIPE_METADATA_KEY] === undefined ? bakeRecordOf(model.metadata, source) : undefined;
  if (!record) return undefined;
  const { openModel: _, onProgress, ...rest } = options;
  return reproduceBake(model, record, { ...rest, ...(onProgress ? { onProgress: (progress) => onProgress({ phase: "merge", passes: 1, progress }) } : {}) });
}

export interface ReproduceOptions {
  /** Folders searched for the ingredients (by sha256; files named as recorded are hashed first). */
  modelDirs?: readonly string[];
  /** Output path (default: `<name>.reproduced.safetensors` in the working directory). */
  out?: string;
  overwrite?: boolean;
  hashCache?: HashCache | null;
  engine?: EngineName;
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  /** Plan only: find the ingredients, report what would be read and written. */
  dryRun?: boolean;
  openModel?: (path: string) => Promise<ModelFile>;
  onProgress?: (event: RecipeProgress) => void;
  signal?: AbortSignal;
}

export interface ReproduceReport {
  kind: "recipe";
  source: string;
  out: string;
  /** The recipe found in the model. */
  recipe: Recipe;
  /** Whether the rebuilt file equals the original byte for byte (null in a dry run). */
  identical: boolean | null;
  sourceSha256: string | null;
  outSha256: string | null;
  run: RecipeRunReport;
}

/** The recipe a model carries, or a RECIPE_INVALID error saying what it carries instead. */
export async function readEmbeddedRecipe(path: string, open: (path: string) => Promise<ModelFile> = defaultOpenModel): Promise<Recipe> {
  const model = await open(path);
  const recipe = embeddedRecipe(model.metadata);
  if (recipe) return recipe;
  const why = model.metadata[RECIPE_METADATA_KEY] !== undefined
    ? `its ${RECIPE_METADATA_KEY} is not a valid recipe`
    : model.metadata.sd_merge_recipe !== undefined
      ? "it has the classic tool's sd_merge_recipe but no tensormerge_recipe (the classic recipe does not say enough to rebuild a file bit for bit)"
      : "it carries no recipe (it was not made by tensormerge, or was made with the recipe left out)";
  throw new MergeError("RECIPE_INVALID", `${path}: cannot reproduce: ${why}`, { path });
}

/**
 * Rebuilds a model from its embedded recipe and compares the bytes.
 *
 * @example
 * const r = await reproduce("mix15.safetensors", { modelDirs: ["models"] });
 * r.identical; // true
 */
const OPTION_KEYS = ["modelDirs", "out", "overwrite", "hashCache", "engine", "threads", "isa", "dryRun", "openModel", "onProgress", "signal"] as const;

export async function reproduce(path: string, options: ReproduceOptions = {}): Promise<ReproduceReport | BakeReproduction> {
  // Checked here, before the recipe is read; runRecipe checks what it is passed again.
  if (options === null || typeof options !== "object") throw new MergeError("INVALID_ARGUMENT", "reproduce() expects an options object");
  rejectUnknownKeys("options", options, OPTION_KEYS);
  const source = resolve(requireString("path", path));
  optionalString("out", options.out);
  optionalBoolean("overwrite", options.overwrite);
  optionalBoolean("dryRun", options.dryRun);
  optionalStringList("modelDirs", options.modelDirs);
  optionalFunction("openModel", options.openModel);
  optionalFunction("onProgress", options.onProgress);
  optionalSignal("signal", options.signal);
  if (await isModelFolder(source)) throw new MergeError("INVALID_ARGUMENT", `${source} is a model folder: reproduceModel() rebuilds folders`, { path: source });
  const baked = await bakeReproductionOf(source, options); // a model made by bake(): lib/lora/reproduce.ts
  if (baked) return baked;
  const recipe = await readEmbeddedRecipe(source, options.openModel);
  const last = recipe.rows.length - 1;
  const format = recipe.rows[last]!.format;
  const out = resolve(options.out ?? `${basename(source, extname(source))}.reproduced.${format === "ckpt" ? "ckpt" : "safetensors"}`);
  const run = await runRecipe(recipe, {
    outputPaths: { [last]: [out] },
    keep: [{ path: source, what: "the model being rebuilt" }], // compared at the end: never replaced, by any name
    ...(options.modelDirs ? { modelDirs: options.modelDirs } : {}),
    hashCache: options.hashCache ?? null,
    overwrite: options.overwrite === true,
    recipeMetadata: true,
    copyConfig: false,
    dryRun: options.dryRun === true,
    ...(options.engine ? { engine: options.engine } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.isa ? { isa: options.isa } : {}),
    ...(options.openModel ? { openModel: options.openModel } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  if (options.dryRun) return { kind: "recipe", source, out, recipe, identical: null, sourceSha256: null, outSha256: null, run };
  const [a, b] = [await sha256File(source), await sha256File(out)];
  return { kind: "recipe", source, out, recipe, identical: a.sha256 === b.sha256, sourceSha256: a.sha256, outSha256: b.sha256, run };
}

/**
 * `reproduce` for a model file or a Hugging Face folder (rebuilt from the recipe in its shards
 * by lib/hf/reproduce.ts; its report has `recipeKind` and per-file results).
 *
 * @example
 * const r = await reproduceModel("./merged", { modelDirs: ["./models"] });
 */
export async function reproduceModel(path: string, options: ReproduceOptions = {}): Promise<ReproduceReport | BakeReproduction | HfReproduceReport> {
  const source = resolve(requireString("path", path));
  if (!(await isModelFolder(source))) return reproduce(source, options);
  const { onProgress, hashCache: _cache, openModel: _open, ...rest } = options;
  return reproduceHfFolder(source, { ...rest, ...(onProgress ? { onProgress: (progress) => onProgress({ phase: "merge", passes: progress.passes ?? 1, progress }) } : {}) });
}
