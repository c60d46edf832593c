/**
 * `reproduce` for Hugging Face folder outputs: every shard carries the recipe that made the
 * folder, either the mergekit YAML (`tensormerge_mergekit_config`, from `tensormerge mergekit`)
 * or the merge's options (`tensormerge_merge`, from `merge()` on folders). The folder is rebuilt
 * from it and compared file by file.
 *
 * - The input folders: a mergekit config names them by path (as written, so relative to the
 *   working directory, then to the folder beside the rebuilt model), else a folder of the same
 *   name in `modelDirs`; a merge recipe records their names, looked up beside the model and in
 *   `modelDirs`. Folders have no single sha256, so they are found by name, and the comparison of
 *   the results is what proves the rebuild.
 * - The shard size is not in the recipe: the largest shard's data bytes splits the tensors
 *   exactly as the original limit did (a shard closes when the next tensor would pass the
 *   limit; every original shard fits under its largest, and none could take its successor's
 *   first tensor under a limit that is no larger than the original one).
 * - Compared: every file but the model card (`README.md` names the folder, so it differs by
 *   construction): shards, index, config.json and the copied tokenizer files, byte for byte.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { EngineName } from "../engine";
import { MergeError } from "../errors";
import { sha256File } from "../library/hash";
import type { MergeOptions, MergeProgress } from "../merge";
import { openHfFolder } from "./folder";
import { mergekitConfigFromText, runMergekitConfig } from "./mergekit";

export const MERGEKIT_RECIPE_KEY = "tensormerge_mergekit_config";
export const FOLDER_MERGE_RECIPE_KEY = "tensormerge_merge";

export interface HfReproduceOptions {
  modelDirs?: readonly string[];
  /** Output folder (default: `<name>.reproduced` in the working directory). */
  out?: string;
  overwrite?: boolean;
  dryRun?: boolean;
  engine?: EngineName;
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  onProgress?: (p: MergeProgress) => void;
  signal?: AbortSignal;
}

export interface HfReproduceReport {
  source: string;
  out: string;
  /** Which recipe the folder carried: the mergekit YAML or merge()'s options (JSON). */
  recipeKind: "mergekit" | "merge";
  recipeText: string;
  /** Null in a dry run. */
  identical: boolean | null;
  /** Each compared file (README.md left out), null in a dry run. */
  files: { name: string; identical: boolean }[] | null;
  shardSize: number;
  bytesWritten: number;
}

/** The recipe every shard of the folder carries (they must agree). */
async function folderRecipe(folder: string): Promise<{ kind: "mergekit" | "merge"; text: string; shardSize: number }> {
  const hf = await openHfFolder(folder);
  let found: { kind: "mergekit" | "merge"; text: string } | undefined;
  for (const shard of hf.shards) {
    const m = shard.metadata;
    const here = m[MERGEKIT_RECIPE_KEY] !== undefined ? { kind: "mergekit" as const, text: m[MERGEKIT_RECIPE_KEY]! } : m[FOLDER_MERGE_RECIPE_KEY] !== undefined ? { kind: "merge" as const, text: m[FOLDER_MERGE_RECIPE_KEY]! } : undefined;
    if (!here) throw new MergeError("RECIPE_INVALID", `${shard.path}: cannot reproduce: this shard carries no recipe (${MERGEKIT_RECIPE_KEY} or ${FOLDER_MERGE_RECIPE_KEY}); it was not made by tensormerge, or with the recipe left out`, { path: shard.path });
    if (found && (found.kind !== here.kind || found.text !== here.text)) throw new MergeError("RECIPE_INVALID", `${shard.path}: cannot reproduce: its recipe differs from the first shard's (shards of different merges in one folder)`, { path: shard.path });
    found = here;
  }
  const shardSize = Math.max(...hf.shards.map((s) => s.tensors.reduce((n, t) => n + t.byteLength, 0)));
  return { ...found!, shardSize };
}

/** A folder named `name` in the search folders (the model's own parent first). */
function locator(source: string, modelDirs: readonly string[]): (ref: string) => string | undefined {
  const dirs = [dirname(source), ...modelDirs.map((d) => resolve(d))];
  return (ref) => {
    const name = basename(ref.replace(/[\\/]+$/, ""));
    for (const d of dirs) {
      const p = join(d, name);
      try {
        if (statSync(p).isDirectory()) return p;
      } catch {
        // not here
      }
    }
    return undefined;
  };
}

interface FolderMergeRecipe {
  method: string;
  models: Record<string, string>;
  multiplier: number;
  params?: Record<string, number>;
  weights?: { alpha?: { pattern: string; value: number }[]; beta?: { pattern: string; value: number }[] };
  blocks?: { alpha?: string | number[]; beta?: string | number[] };
  clamp?: boolean;
  modelParams?: Record<string, number>[];
  dtype?: string;
}

/** merge() options that write the same recipe again (lib/hf/merge-folders.ts records it from them). */
function mergeOptionsOf(recipe: FolderMergeRecipe, source: string, find: (ref: string) => string | undefined): Omit<MergeOptions, "out"> {
  const where = (slot: string) => {
    const name = recipe.models[slot];
    const path = typeof name === "string" ? find(name) : undefined;
    if (!path) throw new MergeError("MODEL_NOT_FOUND", `${source}: cannot reproduce: the recipe's ${slot} "${name}" is not a folder beside the model or in the model folders`, { path: source });
    return path;
  };
  const slots = Object.keys(recipe.models);
  const many = slots.includes("base");
  const options: Omit<MergeOptions, "out"> = {
    method: recipe.method as MergeOptions["method"],
    multiplier: recipe.multiplier,
    ...(many
      ? { base: where("base"), models: slots.filter((s) => s.startsWith("model ")).map(where) }
      : Object.fromEntries(slots.map((s) => [s, where(s)]))),
    ...(recipe.params ? { params: recipe.params } : {}),
    ...(recipe.weights?.alpha ? { weights: recipe.weights.alpha } : {}),
    ...(recipe.weights?.beta ? { betaWeights: recipe.weights.beta } : {}),
    ...(recipe.blocks?.alpha !== undefined ? { blocks: recipe.blocks.alpha } : {}),
    ...(recipe.blocks?.beta !== undefined ? { betaBlocks: recipe.blocks.beta } : {}),
    ...(recipe.clamp ? { clamp: true } : {}),
    ...(many && recipe.modelParams ? { modelParams: recipe.modelParams } : {}),
    ...(recipe.dtype ? { dtype: recipe.dtype as MergeOptions["dtype"] } : {}),
  };
  return options;
}

function parseFolderMergeRecipe(text: string, source: string): FolderMergeRecipe {
  let r: unknown;
  try {
    r = JSON.parse(text);
  } catch {
    r = undefined;
  }
  const o = r as FolderMergeRecipe | undefined;
  if (!o || typeof o !== "object" || typeof o.method !== "string" || !o.models || typeof o.models !== "object" || typeof o.multiplier !== "number") {
    throw new MergeError("RECIPE_INVALID", `${source}: cannot reproduce: its ${FOLDER_MERGE_RECIPE_KEY} is not a merge recipe (method, models, multiplier)`, { path: source });
  }
  return o;
}

/** Every file of both folders but README.md, compared by sha256. */
async function compareFolders(a: string, b: string): Promise<{ name: string; identical: boolean }[]> {
  const names = [...new Set([...readdirSync(a), ...readdirSync(b)])].filter((n) => n !== "README.md").sort();
  const out: { name: string; identical: boolean }[] = [];
  for (const name of names) {
    const [pa, pb] = [join(a, name), join(b, name)];
    const same = existsSync(pa) && existsSync(pb) && statSync(pa).size === statSync(pb).size && (await sha256File(pa)).sha256 === (await sha256File(pb)).sha256;
    out.push({ name, identical: same });
  }
  return out;
}

/**
 * Rebuilds a Hugging Face folder from the recipe in its shards and compares the files.
 *
 * @example
 * const r = await reproduceHfFolder("./merged", { modelDirs: ["./models"] });
 * r.identical; // true
 */
export async function reproduceHfFolder(folder: string, options: HfReproduceOptions = {}): Promise<HfReproduceReport> {
  const source = resolve(folder);
  const { kind, text, shardSize } = await folderRecipe(source);
  const out = resolve(options.out ?? `${basename(source)}.reproduced`);
  const find = locator(source, options.modelDirs ?? []);
  const common = {
    overwrite: options.overwrite === true,
    dryRun: options.dryRun === true,
    ...(options.engine ? { engine: options.engine } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.isa ? { isa: options.isa } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  let bytesWritten: number;
  if (kind === "mergekit") {
    // Relative model paths resolve as when it ran from the folder's parent; then by name.
    const config = mergekitConfigFromText(text, join(dirname(source), `${basename(source)}.mergekit.yml`), find);
    bytesWritten = (await runMergekitConfig(config, { out, shardSize, ...common })).bytesWritten;
  } else {
    const { merge } = await import("../merge"); // lib/merge.ts imports lib/hf: load it when needed
    const report = await merge({ ...mergeOptionsOf(parseFolderMergeRecipe(text, source), source, find), out, shardSize, ...common });
    bytesWritten = report.bytesWritten;
  }
  if (options.dryRun) return { source, out, recipeKind: kind, recipeText: text, identical: null, files: null, shardSize, bytesWritten };
  const files = await compareFolders(source, out);
  return { source, out, recipeKind: kind, recipeText: text, identical: files.every((f) => f.identical), files, shardSize, bytesWritten };
}
