/**
 * From a recipe and its bindings to what the planner needs: every input file found and opened
 * exactly once, every output path decided (and checked) before anything is written, rows whose
 * outputs already exist left out (`skipExisting`) with later rows reading those files instead.
 *
 * Errors come here, before any output exists: an unbound or unknown variable, a model that
 * cannot be found, an output that exists, models of different architectures.
 */
import { basename, dirname, join, resolve } from "node:path";
import { MergeError } from "../errors";
import { openModel as defaultOpenModel } from "../formats";
import type { OutputFormat } from "../formats/output";
import { assertCompatible, assertDistinctModels } from "../library/compat";
import { planKeyEdits } from "../library/edits";
import type { HashCache } from "../library/hash-cache";
import type { MergeMethod, ModelSlot } from "../methods/define";
import { resolveMethod } from "../methods/registry";
import type { ModelFile, TensorInfo } from "../model";
import { checkTargets, exists } from "../outputs";
import { formatMultiplier } from "../validate";
import type { Bindings } from "./bindings";
import { ModelFinder } from "./finder";
import { SLOTS, rowInputs, rowLabel, usedVariables, type Recipe, type RecipeInput, type RecipeRow } from "./types";
import { validateRecipe } from "./validate";

export interface CompileOptions {
  /** Variable name (without `__`) → model reference. */
  bindings?: Bindings;
  /** A binding for a variable the recipe does not have is an error (default true: catches typos). */
  strictBindings?: boolean;
  /** Folders where model names and hashes are looked up (default: the library's default folders). */
  modelDirs?: readonly string[];
  /** Folder for the outputs (default: the working directory). */
  outDir?: string;
  /** Create the output folders once the recipe has passed every check (default false: they must exist). */
  createOutDirs?: boolean;
  /** Explicit output paths for some rows (recipe row index → one path per multiplier). */
  outputPaths?: Record<number, string[]>;
  /** Hash cache for hash references and metadata (default: none). */
  hashCache?: HashCache | null;
  /** Leave existing outputs alone; later rows read them instead of recomputing. */
  skipExisting?: boolean;
  /** Replace existing outputs. */
  overwrite?: boolean;
  /** Opens a model file (default `openModel`); a hook for tests and tools that count or cache opens. */
  openModel?: (path: string) => Promise<ModelFile>;
  /** Base for relative paths (default: process.cwd()). */
  cwd?: string;
  signal?: AbortSignal;
  /** Planning only: output folders that do not exist yet are not an error. */
  dryRun?: boolean;
  /** Progress of hashing files to find pinned ingredients. */
  onHash?: (path: string, bytesDone: number, bytesTotal: number) => void;
}

/** An input file, opened once. */
export interface CompiledFile {
  /** Absolute path. */
  path: string;
  model: ModelFile;
  /** The name metadata and history record: the file name, or the recorded name of a pinned input. */
  name: string;
}

export type CompiledSource = { kind: "file"; file: CompiledFile } | { kind: "row"; row: number };

/** One model of a base + models row. */
export interface CompiledModel {
  source: CompiledSource;
  weight?: number;
  params?: Record<string, number>;
}

/** Every source of a compiled row, labelled as messages name them: A, B, C, base, model 1, … */
export function compiledSources(c: Pick<CompiledRow, "inputs" | "base" | "models">): { label: string; source: CompiledSource }[] {
  return [
    ...SLOTS.flatMap((s) => (c.inputs[s] ? [{ label: s.toUpperCase(), source: c.inputs[s]! }] : [])),
    ...(c.base ? [{ label: "base", source: c.base }] : []),
    ...(c.models ?? []).map((m, i) => ({ label: `model ${i + 1}`, source: m.source })),
  ];
}

/** The source that defines a row's output (its keys, order, shapes, block map): A, else the base, else the first model. */
export function primarySource(c: Pick<CompiledRow, "inputs" | "base" | "models">): CompiledSource {
  return c.inputs.a ?? c.base ?? c.models![0]!.source;
}

export interface CompiledOutput {
  path: string;
  multiplier: number;
  format: OutputFormat;
  /** "new", "overwrite" (exists, replaced) or "skip" (exists, left alone). */
  state: "new" | "overwrite" | "skip";
}

export interface CompiledRow {
  /** Index of the row in the recipe. */
  index: number;
  row: RecipeRow;
  method: MergeMethod;
  /** Inputs: files, or earlier compiled rows (by index in `CompiledRecipe.rows`). */
  inputs: Partial<Record<ModelSlot, CompiledSource>>;
  /** A base + models row: its base. */
  base?: CompiledSource;
  /** A base + models row: its models, in order, with their weights and own parameters. */
  models?: CompiledModel[];
  /** Multipliers computed in this run (a sweep minus the outputs skipped). */
  multipliers: number[];
  /** Outputs written, parallel to `multipliers`; empty for a row that only feeds later rows. */
  outputs: CompiledOutput[];
  vae?: CompiledFile;
  discard?: (name: string) => boolean;
  replace?: Map<string, { model: ModelFile; tensor: TensorInfo }>;
}

export interface CompiledRecipe {
  recipe: Recipe;
  rows: CompiledRow[];
  /** Every input file, once, in first-use order. */
  files: CompiledFile[];
  /** Outputs left alone because they exist (`skipExisting`). */
  skipped: { index: number; output: CompiledOutput }[];
  /** Recipe rows not computed because a file stands for them (an existing output, or a file found by hash). */
  replaced: Map<number, CompiledFile>;
  warnings: string[];
  /** How many times each path was opened: once, by design (tests assert it). */
  opens: Map<string, number>;
  finder: ModelFinder;
}

function invalid(message: string): MergeError {
  return new MergeError("RECIPE_INVALID", message);
}

/** `<name>` / `<M>` template → file path. */
export function outputPathFor(outDir: string, row: RecipeRow, multiplier: number): string {
  const template = row.output ?? (row.multipliers.length > 1 ? "<name>-<M>" : "<name>");
  const stem = template.replaceAll("<name>", row.name).replaceAll("<M>", formatMultiplier(multiplier));
  return join(outDir, `${stem}.${row.format === "ckpt" ? "ckpt" : "safetensors"}`);
}

function checkBindings(recipe: Recipe, bindings: Bindings, strict: boolean): void {
  const used = usedVariables(recipe);
  const known = new Set([...used, ...recipe.variables.map((v) => v.name)]);
  const unbound = used.filter((v) => !Object.hasOwn(bindings, v) || bindings[v] === undefined);
  if (unbound.length > 0) {
    const where = (name: string) => recipe.rows.findIndex((r) => [...rowInputs(r).map((i) => i.input), r.vae].some((i) => i?.kind === "var" && i.name === name));
    const list = unbound.map((v) => `__${v}__ (${rowLabel(recipe, where(v))})`).join(", ");
    throw invalid(`unbound variable${unbound.length > 1 ? "s" : ""} ${list}: bind ${unbound.length > 1 ? "each" : "it"} with --var ${unbound[0]}=MODEL or a bindings file`);
  }
  if (strict) {
    for (const name of Object.keys(bindings)) {
      if (!known.has(name)) {
        throw invalid(`unknown variable __${name}__: the recipe has ${known.size === 0 ? "no variables" : `only ${[...known].map((v) => `__${v}__`).join(", ")}`}`);
      }
    }
  }
}

/**
 * Resolves, opens and checks everything a recipe needs. Nothing is written.
 *
 * @example
 * const compiled = await compileRecipe(parseRecipe(text), { bindings: { SD15: "sd15" }, modelDirs: ["models"], outDir: "out" });
 */
export async function compileRecipe(recipe: Recipe, options: CompileOptions = {}): Promise<CompiledRecipe> {
  const { warnings } = validateRecipe(recipe);
  const bindings = options.bindings ?? {};
  checkBindings(recipe, bindings, options.strictBindings !== false);
  const cwd = options.cwd ?? process.cwd();
  const outDir = resolve(cwd, options.outDir ?? ".");
  const finder = new ModelFinder({
    ...(options.modelDirs ? { modelDirs: options.modelDirs } : {}),
    hashCache: options.hashCache ?? null,
    cwd,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onHash ? { onHash: options.onHash } : {}),
  });
  const open = options.openModel ?? defaultOpenModel;
  const opens = new Map<string, number>();
  const opened = new Map<string, Promise<ModelFile>>();
  const openOnce = (path: string): Promise<ModelFile> => {
    let m = opened.get(path);
    if (!m) {
      opens.set(path, (opens.get(path) ?? 0) + 1);
      m = open(path);
      opened.set(path, m);
    }
    return m;
  };

  // Outputs and their states.
  const outputs: CompiledOutput[][] = [];
  for (const [i, row] of recipe.rows.entries()) {
    if (!row.save) {
      outputs.push([]);
      continue;
    }
    const paths = options.outputPaths?.[i]?.map((p) => resolve(cwd, p)) ?? row.multipliers.map((m) => outputPathFor(outDir, row, m));
    if (paths.length !== row.multipliers.length) throw new MergeError("INVALID_ARGUMENT", `${rowLabel(recipe, i)}: ${paths.length} output paths for ${row.multipliers.length} multipliers`);
    const list: CompiledOutput[] = [];
    for (const [k, path] of paths.entries()) {
      const there = await exists(path);
      list.push({ path, multiplier: row.multipliers[k]!, format: row.format, state: !there ? "new" : options.skipExisting ? "skip" : "overwrite" });
    }
    outputs.push(list);
  }

  // Rows a file stands for: a saved single output that exists (skipExisting), or a recorded file found by hash.
  const replaced = new Map<number, { path: string; name: string }>();
  for (const [i, row] of recipe.rows.entries()) {
    if (row.produces) {
      const found = await finder.byHash(row.produces.sha256, row.produces.name);
      if (found) replaced.set(i, { path: found, name: row.produces.name });
    } else if (outputs[i]!.length === 1 && outputs[i]![0]!.state === "skip") {
      replaced.set(i, { path: outputs[i]![0]!.path, name: basename(outputs[i]![0]!.path) });
    }
  }

  // Rows to compute: they write something, or feed a row that is computed.
  const needed = recipe.rows.map(() => false);
  for (let i = recipe.rows.length - 1; i >= 0; i--) {
    if (replaced.has(i)) continue;
    const writes = outputs[i]!.some((o) => o.state !== "skip");
    const feeds = recipe.rows.some((r, j) => j > i && needed[j] && rowInputs(r).some(({ input }) => input.kind === "row" && input.row === i));
    needed[i] = writes || feeds;
  }

  // Resolve every model reference of the rows computed, then open each file once.
  const resolved = new Map<string, { path: string; name: string }>();
  const refKey = (input: RecipeInput) => JSON.stringify(input);
  const resolveInput = async (input: RecipeInput, label: string): Promise<{ path: string; name: string }> => {
    const key = refKey(input);
    const known = resolved.get(key);
    if (known) return known;
    let result: { path: string; name: string };
    if (input.kind === "var") {
      const ref = bindings[input.name]!; // own: checkBindings saw to it
      result = { path: await withContext(finder.resolve(ref), `${label}: __${input.name}__ = "${ref}"`), name: "" };
    } else if (input.kind === "model" && input.sha256 !== undefined) {
      result = { path: await findPinned(finder, input.ref, input.sha256, label), name: input.ref };
    } else if (input.kind === "model") {
      result = { path: await withContext(finder.resolve(input.ref), label), name: "" };
    } else {
      throw new MergeError("INTERNAL", "row inputs are not model references");
    }
    if (!result.name) result.name = basename(result.path);
    resolved.set(key, result);
    return result;
  };

  const files = new Map<string, CompiledFile>();
  const fileFor = async (where: { path: string; name: string }): Promise<CompiledFile> => {
    const key = `${where.path}\n${where.name}`;
    let f = files.get(key);
    if (!f) {
      f = { path: where.path, model: await openOnce(where.path), name: where.name };
      files.set(key, f);
    }
    return f;
  };

  const compiledIndex = new Map<number, number>();
  const rows: CompiledRow[] = [];
  for (const [i, row] of recipe.rows.entries()) {
    if (!needed[i]) continue;
    const label = rowLabel(recipe, i);
    const sourceOf = async (input: RecipeInput, what: string): Promise<CompiledSource> => {
      if (input.kind !== "row") return { kind: "file", file: await fileFor(await resolveInput(input, `${label} ${what}`)) };
      const r = replaced.get(input.row);
      return r ? { kind: "file", file: await fileFor(r) } : { kind: "row", row: compiledIndex.get(input.row)! };
    };
    const inputs: Partial<Record<ModelSlot, CompiledSource>> = {};
    for (const slot of SLOTS) {
      const input = row.inputs[slot];
      if (input) inputs[slot] = await sourceOf(input, `input ${slot.toUpperCase()}`);
    }
    const base = row.base ? await sourceOf(row.base, "base") : undefined;
    const models: CompiledModel[] | undefined = row.models ? [] : undefined;
    for (const [k, m] of (row.models ?? []).entries()) {
      models!.push({ source: await sourceOf(m.input, `model ${k + 1}`), ...(m.weight !== undefined ? { weight: m.weight } : {}), ...(m.params ? { params: { ...m.params } } : {}) });
    }
    const vae = row.vae ? await fileFor(await resolveInput(row.vae, `${label} VAE`)) : undefined;
    const writes = outputs[i]!.filter((o) => o.state !== "skip");
    compiledIndex.set(i, rows.length);
    rows.push({
      index: i,
      row,
      method: resolveMethod(row.method),
      inputs,
      ...(base ? { base } : {}),
      ...(models ? { models } : {}),
      multipliers: writes.map((o) => o.multiplier),
      outputs: writes,
      ...(vae ? { vae } : {}),
    });
    if (!row.save) rows[rows.length - 1]!.multipliers = [...row.multipliers];
  }

  const allFiles = [...new Map([...files.values()].map((f) => [f.path, f])).values()];
  const skipped = recipe.rows.flatMap((_, i) => outputs[i]!.filter((o) => o.state === "skip").map((output) => ({ index: i, output })));
  let written = rows.flatMap((r) => r.outputs.map((o) => o.path));
  if (options.dryRun) {
    // A dry run may plan into a folder that the real run will create.
    const missing = new Set<string>();
    for (const w of written) if (!(await exists(dirname(w)))) missing.add(dirname(w));
    for (const m of missing) warnings.push(`${m} does not exist yet: it will be created`);
    written = written.filter((w) => !missing.has(dirname(w)));
  }
  await checkTargets(written, allFiles.map((f) => f.path), options.overwrite === true, options.createOutDirs === true);

  // Structure checks and key edits need the file each row's A (or base) comes from.
  const rootOf = (source: CompiledSource): ModelFile => (source.kind === "file" ? source.file.model : rootOf(primarySource(rows[source.row]!)));
  for (const c of rows) {
    const label = rowLabel(recipe, c.index);
    const sources = compiledSources(c);
    const labels = sources.map((s) => `${s.label} (${sourceName(rows, s.source)})`);
    try {
      // The same file twice among a row's base and models (two names, or a row's output and that file).
      if (c.base || c.models) assertDistinctModels(sources.map((s) => (s.source.kind === "file" ? s.source.file.model : undefined)).filter((m): m is ModelFile => m !== undefined), { labels: labels.filter((_, k) => sources[k]!.source.kind === "file") });
      assertCompatible(sources.map((s) => rootOf(s.source)), { labels });
    } catch (e) {
      if (e instanceof MergeError) throw new MergeError(e.code, `${label}: ${e.message}`, { ...(e.path ? { path: e.path } : {}), ...(e.tensor ? { tensor: e.tensor } : {}), cause: e });
      throw e;
    }
    if (c.vae || c.row.discard?.length || c.row.prune) {
      try {
        const edits = planKeyEdits({ a: rootOf(primarySource(c)), ...(c.vae ? { vae: c.vae.model } : {}), ...(c.row.discard ? { discard: c.row.discard } : {}), prune: c.row.prune === true });
        c.discard = edits.discard;
        if (edits.replace.size > 0) c.replace = edits.replace;
      } catch (e) {
        if (e instanceof MergeError) throw new MergeError(e.code, `${label}: ${e.message}`, { cause: e });
        throw e;
      }
    }
  }

  const replacedFiles = new Map<number, CompiledFile>();
  for (const [i, where] of replaced) {
    const f = [...files.values()].find((x) => x.path === where.path && x.name === where.name);
    if (f) replacedFiles.set(i, f);
  }
  return { recipe, rows, files: allFiles, skipped, replaced: replacedFiles, warnings, opens, finder };
}

function sourceName(rows: CompiledRow[], s: CompiledSource): string {
  return s.kind === "file" ? s.file.name : rows[s.row]!.row.name;
}

async function withContext<T>(p: Promise<T>, context: string): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof MergeError) throw new MergeError(e.code, `${context}: ${e.message}`, { ...(e.path ? { path: e.path } : {}), cause: e });
    throw e;
  }
}

/** A pinned ingredient: the reference if it has the right hash, else any file with that hash. */
async function findPinned(finder: ModelFinder, ref: string, sha256: string, label: string): Promise<string> {
  const direct = await finder.resolve(ref).catch(() => undefined);
  if (direct && (await finder.hashes(direct)).sha256 === sha256) return direct;
  const found = await finder.byHash(sha256, ref);
  if (found) return found;
  throw new MergeError("MODEL_NOT_FOUND", `${label}: no model with sha256 ${sha256} (recorded as "${ref}") in ${finder.dirs.join(", ") || "no model folder"}; put the file in a model folder (--model-dir DIR)`);
}
