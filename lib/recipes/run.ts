/**
 * Runs a recipe as one streaming pass: every input read once, unsaved rows never written, every
 * saved output (and every value of a sweep) written together, then given its final name.
 *
 * The order of work, and why:
 * 1. compile: find and open every model once, decide every output path, refuse what cannot work
 *    (nothing written yet);
 * 2. hash the inputs (from the hash cache when it knows them): the metadata names them by sha256;
 * 3. plan the board and write every output to a hidden staging name in its folder. An output's
 *    header is laid out before any data is written, but when a saved row feeds a later one, the
 *    later header must name the earlier file's sha256, which does not exist yet; it is laid out
 *    with a placeholder of the same length;
 * 4. in row order: put the real hashes in the header (same length, so in place), hash the file
 *    when a later header or the history needs it;
 * 5. rename every staged file to its final name, copy the model config (`<name>.yaml`) of the
 *    first input that has one, append the history.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { executePlan, nonFiniteWarnings, preflight, sideFileNeeds } from "../board";
import { defaultThreads, resolveEngine, type EngineName } from "../engine";
import { MergeError, fsError } from "../errors";
import { openModel } from "../formats";
import { layoutOutput } from "../formats/output";
import { computeFileHashes, type FileHashes } from "../library/hash";
import { copyModelConfig, type ConfigSource } from "../library/config";
import type { MergeProgress } from "../merge";
import type { ModelSlot } from "../methods/define";
import { GuardedCallback, cancellable } from "../callback";
import { HashCache } from "../library/hash-cache";
import { ProtectedFiles, commitFile, diskNeeds, patchFile, planConfigCopies, removeQuietly, type ConfigCopy } from "../outputs";
import { invalid, optionalBoolean, optionalFunction, optionalSignal, optionalString, optionalStringList, optionalStringRecord, rejectUnknownKeys, requireInteger, requireOneOf } from "../validate";
import { missingKeyWarnings } from "../keys";
import { planBoard, type BoardPlan, type BoardRow, type PlanStats, type RowInput } from "../plan";
import { compileRecipe, compiledSources, primarySource, type CompileOptions, type CompiledFile, type CompiledRecipe, type CompiledRow, type CompiledSource } from "./compile";
import { appendHistory, type HistoryEntry } from "./history";
import { hasBakeRows, runWithBakeRows } from "./bake-rows";
import { outputMetadata, virtualIdentity, type InputIdentity, type OutputStep } from "./metadata";
import type { ModelFile } from "../model";
import { MODEL_WEIGHT_PARAM, SLOTS, blockMapOf, rowLabel, rowParamsOf, type Recipe } from "./types";

export interface RunRecipeOptions extends CompileOptions {
  engine?: EngineName;
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  /** Write sd_merge_recipe, sd_merge_models and tensormerge_recipe (default true). */
  recipeMetadata?: boolean;
  /** Append one JSON line per output to this file (default: no history). */
  history?: string;
  /** What the history records as the recipe (its path, usually). */
  recipeSource?: string;
  /** Copy the model config (`<name>.yaml`) of the first input that has one (default true). */
  copyConfig?: boolean;
  /** Where rows without their own `config` take the model config from (default "abc"). */
  config?: ConfigSource;
  /** Plan only: report inputs, outputs, bytes and disk space; write nothing. */
  dryRun?: boolean;
  /**
   * Files besides the inputs that nothing written may replace, by any name (reproduce: the
   * original), with how an error names them.
   */
  keep?: readonly { path: string; what: string }[];
  /**
   * Progress: hashing, merging, and each output's state. Every event comes before the outputs get
   * their final names; if it throws, the run is cancelled and rejects with that error, leaving nothing.
   */
  onProgress?: (event: RecipeProgress) => void;
}

const OPTION_KEYS = [
  "bindings", "strictBindings", "modelDirs", "outDir", "createOutDirs", "outputPaths", "hashCache", "skipExisting", "overwrite", "openModel",
  "cwd", "signal", "dryRun", "onHash", "engine", "threads", "isa", "recipeMetadata", "history", "recipeSource", "copyConfig", "config", "keep", "onProgress",
] as const;

/** Every option checked before any work, each mistake naming its option. */
function validateRunOptions(options: RunRecipeOptions): void {
  if (options === null || typeof options !== "object") throw new MergeError("INVALID_ARGUMENT", "runRecipe() expects an options object");
  rejectUnknownKeys("options", options, OPTION_KEYS);
  optionalStringRecord("bindings", options.bindings);
  for (const k of ["strictBindings", "createOutDirs", "skipExisting", "overwrite", "dryRun", "recipeMetadata", "copyConfig"] as const) optionalBoolean(k, options[k]);
  for (const k of ["outDir", "cwd", "history", "recipeSource"] as const) optionalString(k, options[k]);
  optionalStringList("modelDirs", options.modelDirs);
  if (options.keep !== undefined && (!Array.isArray(options.keep) || !options.keep.every((k) => typeof k?.path === "string" && typeof k.what === "string"))) {
    throw invalid("keep", "an array of { path, what }", options.keep);
  }
  if (options.outputPaths !== undefined) {
    if (typeof options.outputPaths !== "object" || options.outputPaths === null) throw invalid("outputPaths", "an object of path lists", options.outputPaths);
    for (const [row, paths] of Object.entries(options.outputPaths)) optionalStringList(`outputPaths[${row}]`, paths);
  }
  if (options.hashCache !== undefined && options.hashCache !== null && !(options.hashCache instanceof HashCache)) throw invalid("hashCache", "a HashCache or null", options.hashCache);
  if (options.engine !== undefined) requireOneOf("engine", options.engine, ["auto", "native", "js"] as const);
  if (options.threads !== undefined) requireInteger("threads", options.threads, 1, 1024);
  if (options.isa !== undefined) requireOneOf("isa", options.isa, ["auto", "scalar", "avx2", "avx512"] as const);
  if (options.config !== undefined) requireOneOf("config", options.config, ["abc", "a", "b", "c", "none"] as const);
  optionalFunction("openModel", options.openModel);
  optionalFunction("onHash", options.onHash);
  optionalFunction("onProgress", options.onProgress);
  optionalSignal("signal", options.signal);
}

export type RecipeProgress =
  | { phase: "hash"; path: string; bytesDone: number; bytesTotal: number }
  | { phase: "merge"; passes: number; progress: MergeProgress }
  | { phase: "output"; path: string; state: "writing" | "finishing" | "done" | "skipped" };

export interface RecipeOutputReport {
  /** 1-based recipe row. */
  row: number;
  name: string;
  path: string;
  multiplier: number;
  format: "safetensors" | "ckpt";
  bytes: number;
  state: "planned" | "written" | "skipped";
  sha256?: string;
  legacy?: string;
}

export interface RecipeRunReport {
  dryRun: boolean;
  inputs: { path: string; name: string; bytes: number; opens: number }[];
  outputs: RecipeOutputReport[];
  bytesRead: number;
  bytesWritten: number;
  passes: number;
  /** Space each output folder needs and has (free is null when unknown). */
  disk: { dir: string; needed: number; free: number | null }[];
  engine: "native" | "js";
  isa: string;
  threads: number;
  seconds: number;
  warnings: string[];
  /**
   * Per written output: the NaNs and infinities the merge computed (as MergeReport.nonFinite;
   * empty in a dry run). Any non-zero count also adds a line to `warnings`.
   */
  nonFinite: { path: string; nan: number; inf: number }[];
  /** Planner statistics per computed row. */
  stats: PlanStats[];
  /** The plan, for tools that want the detail (pieces, layouts). */
  plan: BoardPlan | null;
  compiled: CompiledRecipe;
}

const CONV_IN = "model.diffusion_model.input_blocks.0.0.weight";
const STAGED = ".tensormerge-staged-";

function stagingPath(final: string): string {
  return join(dirname(final), `.${basename(final)}${STAGED}${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** Same-length stand-ins for hashes not known yet (distinct per row, so dict keys stay distinct). */
function placeholder(nonce: string, what: string): { sha256: string; legacy: string } {
  const sha256 = createHash("sha256").update(`tensormerge placeholder ${nonce} ${what}`).digest("hex");
  return { sha256, legacy: sha256.slice(0, 8) };
}

/**
 * Runs (or with `dryRun`, plans) a recipe.
 *
 * @example
 * const report = await runRecipe(parseRecipe(readFileSync("board.txt", "utf8")), {
 *   bindings: { SD15: "v1-5-pruned-emaonly", F222: "f222" }, modelDirs: ["models"], outDir: "out",
 *   history: "out/tensormerge-history.jsonl",
 * });
 * report.outputs.map((o) => `${o.path} ${o.sha256}`);
 */
export async function runRecipe(recipe: Recipe, options: RunRecipeOptions = {}): Promise<RecipeRunReport> {
  const started = Date.now();
  const stack = new Error().stack;
  const guards: GuardedCallback<never>[] = [];
  const callbacksOk = () => guards.forEach((g) => g.check());
  try {
    if (recipe === null || typeof recipe !== "object" || !Array.isArray(recipe.rows)) throw invalid("recipe", "a recipe (from parseRecipe)", recipe);
    // A recipe built by hand rather than parsed: its metadata goes into the files as is.
    recipe.rows.forEach((row, i) => optionalStringRecord(`rows[${i}].metadata`, row?.metadata));
    validateRunOptions(options);
    if (hasBakeRows(recipe)) return await runWithBakeRows(recipe, options, runRecipe); // lib/recipes/bake-rows.ts
    if (options.signal?.aborted) throw new MergeError("ABORTED", "the run was cancelled before it started");
    // From here on, callbacks never throw: a throw cancels the run through `signal` and becomes its error.
    const { signal, cancel } = cancellable(options.signal);
    const guard = <T>(fn: (value: T) => void) => {
      const g = new GuardedCallback(fn, cancel);
      guards.push(g as GuardedCallback<never>);
      return g.call;
    };
    const onProgress = options.onProgress ? guard(options.onProgress) : undefined;
    const onHash = options.onHash ? guard((a: [string, number, number]) => options.onHash!(...a)) : undefined;
    return await runInner(recipe, {
      ...options,
      signal,
      ...(onProgress ? { onProgress } : {}),
      ...(onHash ? { onHash: (path: string, done: number, total: number) => onHash([path, done, total]) } : {}),
    }, started, callbacksOk);
  } catch (e) {
    callbacksOk();
    if (e instanceof MergeError && stack) e.stack = `${e.name} [${e.code}]: ${e.message}\n${stack.split("\n").slice(1).join("\n")}`;
    throw e;
  }
}

async function runInner(recipe: Recipe, options: RunRecipeOptions, started: number, callbacksOk: () => void): Promise<RecipeRunReport> {
  const onProgress = options.onProgress;
  const compiled = await compileRecipe(recipe, {
    ...options,
    ...(onProgress ? { onHash: (path: string, bytesDone: number, bytesTotal: number) => onProgress({ phase: "hash", path, bytesDone, bytesTotal }) } : {}),
  });
  const dryRun = options.dryRun === true;
  const wantMeta = options.recipeMetadata !== false;
  const wantHistory = options.history !== undefined && !dryRun;
  const engine = resolveEngine(options.engine ?? "auto");
  const { rows } = compiled;
  const configCopies = await checkWrites(compiled, options);

  // Which saved rows feed later rows (their hash goes into a later header).
  const feedsLater = rows.map((_, i) => rows.some((r) => compiledSources(r).some(({ source }) => source.kind === "row" && source.row === i)));

  // Input identities: real hashes, except in a dry run (same-length placeholders: sizes are exact).
  const nonce = randomBytes(8).toString("hex");
  const fileHashes = new Map<string, { sha256: string; legacy: string }>();
  for (const f of compiled.files) {
    if ((wantMeta || wantHistory) && !dryRun) {
      const h = await compiled.finder.hashes(f.path);
      fileHashes.set(f.path, { sha256: h.sha256, legacy: h.legacy });
    } else fileHashes.set(f.path, placeholder(nonce, `file ${f.path}`));
  }
  const fileIdentity = (f: CompiledFile): InputIdentity => ({ ...fileHashes.get(f.path)!, name: f.name, metadata: f.model.metadata, virtual: false });

  // Row identities, for the rows after them; recomputed once real hashes are known.
  const rowIds: InputIdentity[] = [];
  const outputHashes = new Map<string, FileHashes>();
  const identityOf = (s: CompiledSource): InputIdentity => (s.kind === "file" ? fileIdentity(s.file) : rowIds[s.row]!);
  const channels = (s: CompiledSource): number | undefined => (s.kind === "file" ? s.file.model.byName.get(CONV_IN)?.shape[1] : channels(primarySource(rows[s.row]!)));
  // Block values follow the architecture of the row's A (or base): its file, or the file at the root of the rows it comes from.
  const modelA = (ci: number): ModelFile => {
    const src = primarySource(rows[ci]!);
    return src.kind === "file" ? src.file.model : modelA(src.row);
  };
  const stepOf = (ci: number, multiplier: number, format: "safetensors" | "ckpt"): OutputStep => {
    const c = rows[ci]!;
    const inputs: Partial<Record<ModelSlot, InputIdentity>> = {};
    for (const s of SLOTS) if (c.inputs[s]) inputs[s] = identityOf(c.inputs[s]!);
    const a = channels(primarySource(c)), b = c.inputs.b ? channels(c.inputs.b) : undefined;
    return {
      row: c.row, multiplier, format, inputs,
      ...(c.base ? { base: identityOf(c.base) } : {}),
      ...(c.models ? { models: c.models.map((m) => identityOf(m.source)) } : {}),
      ...(c.vae ? { vae: fileIdentity(c.vae) } : {}),
      isInpainting: a === 9 && b === 4,
      isInstructPix2Pix: a === 8 && b === 4,
      ...(c.row.blocks ? { blockMap: blockMapOf(modelA(ci)) } : {}),
    };
  };
  const identify = (ci: number): void => {
    const c = rows[ci]!;
    if (!wantMeta) {
      // No metadata: identities only serve the history, which names saved rows by their hashes.
      const o = c.outputs[0];
      const known = o ? outputHashes.get(o.path) : undefined;
      rowIds[ci] = { ...(known ?? placeholder(nonce, `row ${ci}`)), name: o ? basename(o.path) : c.row.name, metadata: {}, virtual: !o };
      return;
    }
    if (c.outputs.length === 0) {
      const step = stepOf(ci, c.multipliers[0]!, "safetensors");
      // A recorded file recomputed (reproduce): it stands for that file.
      const p = c.row.produces;
      rowIds[ci] = p ? { sha256: p.sha256, legacy: p.legacy, name: p.name, metadata: outputMetadata(step, { recipe: true }), virtual: false } : virtualIdentity(step);
      return;
    }
    const o = c.outputs[0]!;
    const known = outputHashes.get(o.path);
    rowIds[ci] = { ...(known ?? placeholder(nonce, `row ${ci}`)), name: basename(o.path), metadata: outputMetadata(stepOf(ci, o.multiplier, o.format), { recipe: true }), virtual: false };
  };
  rows.forEach((_, ci) => identify(ci));

  // The board, outputs at staging names with placeholder metadata.
  const staging = new Map<string, string>();
  const planParams = rows.map((c, ci) => rowParamsOf(c.row, c.row.blocks ? blockMapOf(modelA(ci)) : undefined, `${rowLabel(recipe, c.index)}: block values`));
  const boardRows: BoardRow[] = rows.map((c, ci) => {
    const inputs: Partial<Record<ModelSlot, RowInput>> = {};
    for (const s of SLOTS) {
      const src = c.inputs[s];
      if (src) inputs[s] = rowInputOf(src);
    }
    return {
      name: c.row.name,
      method: c.method,
      inputs,
      ...manyModelsBoardFields(c),
      multipliers: c.multipliers,
      ...(planParams[ci] ? { params: planParams[ci] } : {}),
      ...(c.row.clamp ? { clamp: true } : {}),
      ...(c.row.dtype ? { dtype: c.row.dtype } : {}),
      ...(c.outputs.length ? {
        outputs: c.outputs.map((o) => {
          const path = stagingPath(o.path);
          staging.set(o.path, path);
          return { path, format: o.format, metadata: outputMetadata(stepOf(ci, o.multiplier, o.format), { recipe: wantMeta }) };
        }),
      } : {}),
      ...(c.discard ? { discard: c.discard } : {}),
      ...(c.replace ? { replace: c.replace } : {}),
    };
  });
  const hasWork = rows.some((c) => c.outputs.length > 0);
  const plan = hasWork ? planBoard({ rows: boardRows }) : null;
  const planned = plan ? plan.passes.flatMap((p) => p.outputs) : [];
  const sizeOf = new Map(planned.map((o) => [o.path, o.layout.size]));

  const outputs: RecipeOutputReport[] = [];
  for (const c of rows) {
    for (const o of c.outputs) {
      outputs.push({ row: c.index + 1, name: c.row.name, path: o.path, multiplier: o.multiplier, format: o.format, bytes: sizeOf.get(staging.get(o.path)!) ?? 0, state: "planned" });
    }
  }
  for (const { index, output } of compiled.skipped) {
    const size = (await stat(output.path).catch(() => undefined))?.size ?? 0;
    outputs.push({ row: index + 1, name: recipe.rows[index]!.name, path: output.path, multiplier: output.multiplier, format: output.format, bytes: size, state: "skipped" });
  }
  const disk = await diskNeeds([...outputs.filter((o) => o.state === "planned"), ...(plan ? sideFileNeeds(plan) : [])]);
  const report: RecipeRunReport = {
    dryRun,
    inputs: compiled.files.map((f) => ({ path: f.path, name: f.name, bytes: f.model.size, opens: compiled.opens.get(f.path) ?? 0 })),
    outputs,
    bytesRead: plan?.bytesToRead ?? 0,
    bytesWritten: plan?.bytesToWrite ?? 0,
    passes: plan?.passes.length ?? 0,
    disk,
    engine,
    isa: "",
    threads: options.threads ?? defaultThreads(),
    seconds: 0,
    warnings: [...compiled.warnings, ...rows.flatMap(rowKeyWarnings), ...rows.flatMap((c, ci) => modelKeyWarnings(c, plan?.stats[ci], rows))],
    nonFinite: [],
    stats: plan?.stats ?? [],
    plan,
    compiled,
  };
  if (dryRun || !plan) {
    callbacksOk();
    if (!dryRun && wantHistory) await appendHistory(options.history!, historyEntries(report, compiled, rowIds, options, fileHashes));
    report.seconds = (Date.now() - started) / 1000;
    return report;
  }

  if (options.createOutDirs) {
    for (const dir of new Set(plan.passes.flatMap((p) => p.outputs.map((o) => dirname(o.path))))) {
      await mkdir(dir, { recursive: true }).catch((e) => { throw fsError(e, dir, "creating the output folder"); });
    }
  }
  for (const t of await preflight(plan, false)) report.warnings.push(`removed ${t}, left by a merge that was killed`);
  for (const o of outputs) if (o.state === "planned") onProgress?.({ phase: "output", path: o.path, state: "writing" });
  const passes = plan.passes.length;
  const run = await executePlan(plan, {
    engine,
    threads: report.threads,
    isa: options.isa ?? "auto",
    overwrite: false,
    ...(onProgress ? { onProgress: (progress: MergeProgress) => onProgress({ phase: "merge", passes, progress }) } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  }, started);
  report.isa = run.isa;
  report.threads = run.threads;
  // The board wrote staging names: report the final ones.
  const finalName = new Map([...staging].map(([final, staged]) => [staged, final]));
  report.nonFinite = run.nonFinite.map((c) => ({ ...c, path: finalName.get(c.path) ?? c.path }));
  report.warnings.push(...nonFiniteWarnings(report.nonFinite));

  try {
    // Row by row: real hashes into the headers, then hash what later headers or the history need.
    for (const [ci, c] of rows.entries()) {
      for (const o of c.outputs) {
        if (options.signal?.aborted) throw new MergeError("ABORTED", "the merge was cancelled");
        const staged = staging.get(o.path)!;
        onProgress?.({ phase: "output", path: o.path, state: "finishing" });
        const layoutMeta = boardRows[ci]!.outputs!.find((x) => x.path === staged)!.metadata;
        const realMeta = outputMetadata(stepOf(ci, o.multiplier, o.format), { recipe: wantMeta });
        if (JSON.stringify(realMeta) !== JSON.stringify(layoutMeta)) {
          if (o.format === "safetensors") await rewriteMetadata(staged, layoutMeta, realMeta);
          else await rewriteCkptMetadata(staged, layoutMeta, realMeta);
        }
        if (wantHistory || (wantMeta && feedsLater[ci])) outputHashes.set(o.path, await computeFileHashes(staged, options.signal ? { signal: options.signal } : {}));
      }
      identify(ci);
    }
    // The last events, then the names: a callback that throws still leaves nothing behind.
    for (const o of outputs) if (o.state === "planned") onProgress?.({ phase: "output", path: o.path, state: "done" });
    callbacksOk();
    if (options.signal?.aborted) throw new MergeError("ABORTED", "the merge was cancelled");
    for (const o of outputs) {
      if (o.state !== "planned") continue;
      await commitFile(staging.get(o.path)!, o.path, options.overwrite === true);
      staging.delete(o.path);
      o.state = "written";
      const h = outputHashes.get(o.path);
      if (h) {
        o.sha256 = h.sha256;
        o.legacy = h.legacy;
        if (options.hashCache) {
          const s = await stat(o.path);
          options.hashCache.set(resolve(o.path), s.size, s.mtimeMs, h);
        }
      }
    }
  } finally {
    for (const path of staging.values()) await removeQuietly(path);
  }
  await options.hashCache?.save().catch(() => undefined);
  for (const c of configCopies) await copyModelConfig(c.model, c.output);
  if (wantHistory) await appendHistory(options.history!, historyEntries(report, compiled, rowIds, options, fileHashes));
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

/**
 * Replaces a safetensors file's `__metadata__` in place. Only hex digits change (placeholders of
 * the same length), so the header keeps its length; should it shrink (two rows wrote identical
 * files, so two placeholder keys became one), the padding absorbs it.
 */
async function rewriteMetadata(path: string, from: Record<string, string>, to: Record<string, string>): Promise<void> {
  const handle = await open(path, "r+").catch((e) => { throw fsError(e, path, "finishing the output"); });
  try {
    const len = Buffer.alloc(8);
    await handle.read(len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE(0));
    const header = Buffer.alloc(n);
    await handle.read(header, 0, n, 8);
    const oldPrefix = Buffer.from(`{"__metadata__":${JSON.stringify(from)}`);
    const newPrefix = Buffer.from(`{"__metadata__":${JSON.stringify(to)}`);
    if (!header.subarray(0, oldPrefix.length).equals(oldPrefix)) throw new MergeError("INTERNAL", `${path}: the header is not the one planned`, { path });
    let end = n;
    while (end > oldPrefix.length && header[end - 1] === 0x20) end--;
    const body = Buffer.concat([newPrefix, header.subarray(oldPrefix.length, end)]);
    if (body.length > n) throw new MergeError("INTERNAL", `${path}: the final metadata is longer than planned`, { path });
    const padded = Buffer.concat([body, Buffer.alloc(n - body.length, 0x20)]);
    await handle.write(padded, 0, n, 8);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The same for a .ckpt: the metadata is in the pickle (data.pkl), whose CRC is in two zip
 * records. Both layouts are computed from the file's own tensor table; only the bytes that differ
 * between them are written, so the tensor records' CRCs, patched after the pass (zero in both
 * layouts), are left as they are.
 */
async function rewriteCkptMetadata(path: string, from: Record<string, string>, to: Record<string, string>): Promise<void> {
  const model = await openModel(path);
  const entries = model.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
  const before = layoutOutput("ckpt", entries, from), after = layoutOutput("ckpt", entries, to);
  const sameShape = before.size === after.size && before.literals.length === after.literals.length
    && before.literals.every((l, i) => l.offset === after.literals[i]!.offset && l.data.length === after.literals[i]!.data.length);
  if (!sameShape) throw new MergeError("INTERNAL", `${path}: the final metadata does not fit the planned archive (two rows wrote identical files?)`, { path });
  const patches: { offset: number; data: Uint8Array }[] = [];
  for (const [i, l] of before.literals.entries()) {
    const next = after.literals[i]!.data;
    for (let k = 0; k < next.length; ) {
      if (next[k] === l.data[k]) { k++; continue; }
      let end = k;
      while (end < next.length && next[end] !== l.data[end]) end++;
      patches.push({ offset: l.offset + k, data: next.subarray(k, end) });
      k = end;
    }
  }
  await patchFile(path, patches);
}

/**
 * Before anything is written: no output may replace a file the caller keeps (`keep`), no model
 * config copied beside an output may replace an input, an input's config or an output, and the
 * history may not be appended to any of those, whatever name reaches them (compile already
 * refused outputs that are inputs). Returns the config copies to make at the end.
 */
async function checkWrites(compiled: CompiledRecipe, options: RunRecipeOptions): Promise<ConfigCopy[]> {
  const { rows } = compiled;
  const written = rows.flatMap((c) => c.outputs.map((o) => o.path));
  const inputs = compiled.files.map((f) => f.path);
  const keep = options.keep ?? [];
  const kept = await ProtectedFiles.of(keep);
  for (const w of written) await kept.check(w);
  let copies: ConfigCopy[] = [];
  if (options.copyConfig !== false) {
    // A row's input that is an earlier row stands for that row's own inputs, A first.
    const sources = (s: CompiledSource): string[] => (s.kind === "file" ? [s.file.path] : compiledSources(rows[s.row]!).flatMap((k) => sources(k.source)));
    const groups = rows.map((c) => {
      const source = c.row.config ?? options.config ?? "abc";
      // A base + models row: "abc" is the base then each model, "a" the base alone.
      const picked = source === "none" ? [] : c.base || c.models
        ? (source === "abc" ? compiledSources(c) : source === "a" ? [{ source: primarySource(c) }] : [])
        : (source === "abc" ? SLOTS : [source]).flatMap((k) => (c.inputs[k] ? [{ source: c.inputs[k]! }] : []));
      return { from: [...new Set(picked.flatMap((k) => sources(k.source)))], outputs: c.outputs.map((o) => o.path) };
    });
    copies = await planConfigCopies(groups.filter((g) => g.from.length && g.outputs.length), [...inputs, ...keep.map((k) => k.path)], options.overwrite === true);
  }
  if (options.history !== undefined) {
    const notHistory = await ProtectedFiles.of([
      ...inputs.map((path) => ({ path, what: "one of the inputs" })),
      ...keep,
      ...(options.recipeSource !== undefined ? [{ path: resolve(options.cwd ?? ".", options.recipeSource), what: "the recipe" }] : []),
      ...written.map((path) => ({ path, what: "one of the outputs" })),
      ...copies.map((c) => ({ path: c.destination, what: "a model config written beside an output" })),
    ]);
    await notHistory.check(options.history, "the history file");
  }
  return copies;
}

function historyEntries(report: RecipeRunReport, compiled: CompiledRecipe, rowIds: InputIdentity[], options: RunRecipeOptions, fileHashes: Map<string, { sha256: string; legacy: string }>): HistoryEntry[] {
  const time = new Date().toISOString();
  const byPath = new Map<string, number>();
  compiled.rows.forEach((c, ci) => c.outputs.forEach((o) => byPath.set(o.path, ci)));
  const describe = (s: CompiledSource): HistoryEntry["inputs"][string] => {
    if (s.kind === "file") return { name: s.file.name, path: s.file.path, ...fileHashes.get(s.file.path)! };
    const c = compiled.rows[s.row]!;
    const id = rowIds[s.row]!;
    return { row: c.index + 1, name: c.row.name, ...(c.outputs[0] ? { path: c.outputs[0].path } : {}), ...(options.recipeMetadata !== false || !id.virtual ? { sha256: id.sha256 } : {}), ...(id.legacy ? { legacy: id.legacy } : {}), saved: c.outputs.length > 0 };
  };
  return report.outputs.map((o) => {
    const ci = byPath.get(o.path);
    const c = ci === undefined ? undefined : compiled.rows[ci]!;
    const row = compiled.recipe.rows[o.row - 1]!;
    const inputs: HistoryEntry["inputs"] = {};
    if (c) for (const s of SLOTS) if (c.inputs[s]) inputs[s] = describe(c.inputs[s]!);
    if (c?.base) inputs.base = describe(c.base);
    const models = c?.models?.map((m) => ({ ...describe(m.source), ...(m.weight !== undefined ? { weight: m.weight } : {}) }));
    return {
      time,
      recipe: options.recipeSource ?? compiled.recipe.name ?? null,
      row: o.row,
      name: row.name,
      method: row.method,
      multiplier: o.multiplier,
      dtype: row.dtype ?? "same",
      format: o.format,
      state: o.state === "skipped" ? "skipped" : "written",
      output: { path: o.path, name: basename(o.path), bytes: o.bytes, ...(o.sha256 ? { sha256: o.sha256, legacy: o.legacy! } : {}) },
      inputs,
      ...(models ? { models } : {}),
      ...(c?.vae ? { vae: { name: c.vae.name, path: c.vae.path, ...fileHashes.get(c.vae.path)! } } : {}),
    };
  });
}

/** Missing-key warnings (lib/keys.ts) for a row whose inputs are files; a row fed by another row inherits A's keys. */
function rowKeyWarnings(c: CompiledRow): string[] {
  const a = c.inputs.a;
  if (a?.kind !== "file") return [];
  const others = (["b", "c"] as const).flatMap((slot) => {
    const src = c.inputs[slot];
    return src?.kind === "file" && c.method.inputs.includes(slot) ? [{ slot, path: src.file.path, has: (n: string) => src.file.model.byName.has(n) }] : [];
  });
  const skip = (n: string) => (c.discard?.(n) ?? false) || (c.replace?.has(n) ?? false);
  return missingKeyWarnings(a.file.model, others, skip).map((w) => `row ${c.index + 1} (${c.row.name}): ${w.message}`);
}

function rowInputOf(src: CompiledSource): RowInput {
  return src.kind === "file" ? { model: src.file.model } : { row: src.row };
}

/** A base + models row's base and models as the planner takes them (each model's weight and own parameter values). */
function manyModelsBoardFields(c: CompiledRow): Pick<BoardRow, "base" | "models"> {
  return {
    ...(c.base ? { base: rowInputOf(c.base) } : {}),
    ...(c.models ? {
      models: c.models.map((m) => {
        const values = { ...(m.params ?? {}), ...(m.weight !== undefined ? { [MODEL_WEIGHT_PARAM]: m.weight } : {}) };
        return { input: rowInputOf(m.source), ...(Object.keys(values).length ? { params: { values } } : {}) };
      }),
    } : {}),
  };
}

/** A base + models row: each model that lacks float keys of the base (they keep the base's values), as merge() says it. */
function modelKeyWarnings(c: CompiledRow, stats: PlanStats | undefined, rows: readonly CompiledRow[]): string[] {
  if (!c.models || !stats?.missingByModel) return [];
  return stats.missingByModel.flatMap((n, i) => {
    if (!(n > 0)) return [];
    const src = c.models![i]!.source;
    const name = src.kind === "file" ? src.file.name : rows[src.row]!.row.name;
    return [`row ${c.index + 1} (${c.row.name}): model ${i + 1} (${name}) lacks ${n} float key${n === 1 ? "" : "s"} of the base: those keep the base's values`];
  });
}
