/**
 * `merge()`: the library's main entry point. Validates options, reads the models' headers,
 * plans the job, runs it on the native engine (or the TS one), and commits the outputs.
 */
import { createHash } from "node:crypto";
import { basename, extname } from "node:path";
import { GuardedCallback, cancellable } from "./callback";
import { OUTPUT_DTYPES, type OutputDtype } from "./dtypes";
import { defaultThreads, discardPreparedOutput, prepareNativeOutput, resolveEngine, type EngineName } from "./engine";
import { MergeError } from "./errors";
import { openModel } from "./formats";
import { outputFormatForPath, type OutputFormat } from "./formats/output";
import { resolveMethod, type MethodName } from "./methods/registry";
import type { ModelSlot } from "./methods/define";
import type { ModelFile } from "./model";
import { executePlan, nonFiniteWarnings, preflight, sideFileNeeds } from "./board";
import { assertCompatible } from "./library/compat";
import { configCandidates, copyModelConfig, type ConfigSource } from "./library/config";
import { planKeyEdits, type VaeBakeReport } from "./library/edits";
import { resolveModel } from "./library/resolve";
import { HashCache, getFileHashes } from "./library/hash-cache";
import { outputMetadata, type InputIdentity } from "./recipes/metadata";
import { blockMapOf, rowParamsOf, type RecipeRow } from "./recipes/types";
import { checkParamName, checkRowParams, perBlockOption } from "./methods/params";
import { ProtectedFiles, checkTargets, diskNeeds, planConfigCopies, type ConfigCopy } from "./outputs";
import { missingKeyWarnings, type MissingKeysWarning } from "./keys";
import { INPUT_CACHE_MODES, type InputCache } from "./native/job";
import { planBoard, type BoardPlan, type PlanStats } from "./plan";
import { mergeHfFolders, mergesFolders } from "./hf/merge-folders";
import { manyMethodNames, mergeMany, validateManyInputs } from "./merge-many";
import {
  formatMultiplier, optionalBoolean, optionalFunction, optionalSignal, optionalString, optionalStringList, optionalStringRecord,
  checkSweepSize, parseMultipliers, rejectUnknownKeys, requireInteger, requireNumberInRange, requireOneOf, requireString,
} from "./validate";

export interface MergeProgress {
  /**
   * "hashing": an input (`path`) is being hashed for the recipe metadata, bytes are of that
   * file; "merging": bytes are those written to all outputs.
   */
  phase?: "hashing" | "merging";
  /** The input being hashed. */
  path?: string;
  bytesDone: number;
  bytesTotal: number;
  /** 0..1 */
  fraction: number;
  elapsedSeconds: number;
  /** The pass running (1-based) and how many there are (a board's rows may need several). */
  pass?: number;
  passes?: number;
  /** What a progress line should call this pass when the run knows better than "merging" (a model folder: the shard being written). */
  label?: string;
}

export interface MergeOptions {
  /** Model A: the base (path), for the classic A/B/C methods. */
  a?: string;
  /** Model B (path), for every method but no-interpolation. */
  b?: string;
  /** Model C (path), for add-difference. */
  c?: string;
  method: MethodName;
  /**
   * M. A list (or a string such as "0.1:0.5:0.1" or "0.144,0.148") makes a sweep: one output
   * per value, all written in one pass over the inputs.
   */
  multiplier?: number | number[] | string;
  /** Another name for `multiplier` (the method's α); give one or the other. */
  alpha?: number | number[] | string;
  /** The method's β (triple-sum, sum-twice, multiply-difference, ...); default: the method's. */
  beta?: number;
  /**
   * Per-key α: for each tensor, the first pattern (a regular expression searched in the key)
   * that matches sets α, over the block value and the multiplier. A sweep varies the
   * multiplier only: keys a pattern matches keep its value in every output.
   */
  weights?: { pattern: string; value: number }[];
  /** Per-key β, as `weights`. */
  betaWeights?: { pattern: string; value: number }[];
  /**
   * α per block of A's architecture: a SuperMerger list ("0.5,1,…", 26 values for SD, 20 for
   * SDXL), a preset ("GRAD_V") or the values (lib/blocks, README "Block weights"). Keys in no
   * block stay A; `weights` patterns win over block values.
   */
  blocks?: string | number[];
  /** β per block, as `blocks`. */
  betaBlocks?: string | number[];
  /**
   * Per-key values of the method's named parameters (those of `params`), by name, as `weights`
   * for α: `{ density: [{ pattern: "cond_stage_model\\.", value: 0.1 }] }` (CLI `--density-weight`).
   * A pattern's value holds for every model of a base + models row.
   */
  paramWeights?: Record<string, { pattern: string; value: number }[]>;
  /**
   * Block values of the method's named parameters, by name, as `blocks` for α:
   * `{ density: "GRAD_V" }` (CLI `--density-blocks`). They win over `params` and `modelParams`.
   */
  paramBlocks?: Record<string, string | number[]>;
  /** Clamp every merged value to [min(A,B), max(A,B)] (methods that read A and B). */
  clamp?: boolean;
  /** Float output type; "same" (default) keeps each tensor's type from A. */
  dtype?: OutputDtype | "same";
  /**
   * Output path. For a sweep, `<M>` in the path is replaced by each multiplier; without it,
   * `-<M>` is added before the extension.
   */
  out: string;
  /** Output format; default from the extension (.ckpt/.pt → ckpt, else safetensors). */
  format?: OutputFormat;
  /** Replace existing outputs (default false: an existing file is an error). */
  overwrite?: boolean;
  engine?: EngineName;
  /** Worker threads of the native engine (default: all cores). */
  threads?: number;
  /** Force a kernel set of the native engine ("auto" by default). */
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  /**
   * What the native engine does with the page cache when it reads inputs that are not cached:
   * "keep" leaves them cached for the next merge of the same models (unless they are more than
   * half the RAM), "bypass" reads them with O_DIRECT and leaves nothing cached, "auto" (default)
   * bypasses on a virtual machine, where each fresh page-cache page costs a host fault, and keeps
   * on bare metal. The bytes written are the same either way.
   */
  inputCache?: InputCache;
  /** Extra safetensors metadata for the outputs. */
  metadata?: Record<string, string>;
  /**
   * Write the recipe into each output (A1111's `sd_merge_recipe` / `sd_merge_models`, keyed by
   * the inputs' sha256, plus tensormerge's own complete recipe); default true. Inputs not in the
   * hash cache are hashed first. False keeps recipes private.
   */
  recipeMetadata?: boolean;
  /**
   * Methods over a base and a list of models (ties, dare, dare-ties, model-stock): the base
   * (path), whose keys, order and dtypes the result has.
   */
  base?: string;
  /** The models merged onto `base` (paths, in order: a model's position keys its DARE mask). */
  models?: string[];
  /** Per-model weights, one per entry of `models` (mergekit's `weight`); default 1 each. */
  modelWeights?: number[];
  /**
   * The method's named parameters (density, drop-rate, seed, lambda…, see `tensormerge methods`)
   * for the whole row; per-model values go in `modelParams`.
   */
  params?: Record<string, number>;
  /** Per-model values of per-model parameters (density…), one object per entry of `models`. */
  modelParams?: Record<string, number>[];
  /** Folders where models given by name or hash (not by path) are looked up. */
  modelDirs?: string[];
  /** A VAE file to bake in: replaces A's `first_stage_model.*` tensors. */
  vae?: string;
  /** Regular expressions: matching keys are left out of the output. */
  discard?: string | string[];
  /** Leave out EMA weights, scheduler buffers and training-only keys. */
  prune?: boolean;
  /** Copy `<model>.yaml` beside the output from the first of these inputs that has one (default "abc"). */
  config?: ConfigSource;
  /**
   * Plan only: check everything, report inputs, outputs, bytes and disk space (`disk`); read no
   * tensor, hash nothing, write nothing.
   */
  dryRun?: boolean;
  /**
   * Progress, a few times a second and once at the end (before the outputs get their names). If
   * it throws, the merge is cancelled and rejects with that error; nothing is left behind.
   */
  onProgress?: (progress: MergeProgress) => void;
  signal?: AbortSignal;
  /**
   * Hugging Face model folders (A is a folder, lib/hf): the largest output shard, bytes or
   * "5GB", "500MB", "2GiB" (default 5GB); the output `out` is then a folder.
   */
  shardSize?: number | string;
}

export interface MergeReport {
  /** True for a plan (`dryRun`): nothing was written, `isa` is empty. */
  dryRun: boolean;
  /** The inputs: A, B, C; or, for a base + models method, the base then each model (`index` from 0). */
  inputs: { slot: ModelSlot | "base" | "model"; index?: number; path: string; bytes: number }[];
  outputs: { path: string; multiplier: number; bytes: number }[];
  method: MethodName;
  engine: "native" | "js";
  isa: string;
  threads: number;
  seconds: number;
  bytesRead: number;
  bytesWritten: number;
  stats: PlanStats;
  /** Model configs (`.yaml`) copied beside the outputs (in a dry run: that would be). */
  configs: string[];
  /** Dry run: space each output folder needs and has (free is null when unknown). */
  disk?: { dir: string; needed: number; free: number | null }[];
  /** What baking in the VAE did. */
  vae?: VaeBakeReport;
  /** Temporary files of killed merges into the same targets, removed before this one. */
  removedTemps?: string[];
  /** Inputs whose 2022-era SD 1.x key names were normalised on load, as the classic tool does. */
  renamedKeys: { slot: ModelSlot | "base" | "model"; index?: number; path: string; keys: number }[];
  /** B or C lacking a large share of A's float keys or a whole component (lib/keys.ts). */
  missingKeys: MissingKeysWarning[];
  /**
   * Per output: the NaNs and infinities the merge produced, counted on the stored bits of the
   * output dtype: every non-finite value a method computed (an overflow, 0/0, Inf−Inf, or a NaN
   * of an input passed through the formula: that tensor is the merge's), and in a tensor copied
   * with a dtype conversion, values finite in the input that the narrower dtype cannot hold
   * (fp32 70000 as fp16). Tensors copied byte for byte count nothing: a NaN A already holds in a
   * key left unmerged is not here. Empty in a dry run. A non-zero count adds a line to `warnings`.
   */
  nonFinite: { path: string; nan: number; inf: number }[];
  /** For people: one line per problem worth a look (the CLI prints them on stderr). */
  warnings: string[];
  /** A Hugging Face folder output (lib/hf): its shards. */
  shards?: { name: string; tensors: number; bytes: number }[];
}

const OPTION_KEYS = ["a", "b", "c", "method", "multiplier", "alpha", "beta", "weights", "betaWeights", "blocks", "betaBlocks", "paramWeights", "paramBlocks", "clamp", "dtype", "out", "format", "overwrite", "engine", "threads", "isa", "inputCache", "metadata", "recipeMetadata", "base", "models", "modelWeights", "params", "modelParams", "modelDirs", "vae", "discard", "prune", "config", "dryRun", "onProgress", "signal", "shardSize"] as const;

/** Output path for one multiplier of a sweep. */
export function sweepOutputPath(out: string, multiplier: number, count: number): string {
  if (out.includes("<M>")) return out.replaceAll("<M>", formatMultiplier(multiplier));
  if (count === 1) return out;
  const ext = extname(out);
  return `${out.slice(0, out.length - ext.length)}-${formatMultiplier(multiplier)}${ext}`;
}

function normaliseMultipliers(value: MergeOptions["multiplier"]): number[] {
  if (value === undefined) return [0.5];
  if (typeof value === "string") return parseMultipliers(value);
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) throw new MergeError("INVALID_ARGUMENT", "Expected at least one multiplier");
  checkSweepSize(list.length, "multiplier");
  return list.map((m, i) => requireNumberInRange(list.length > 1 ? `multiplier[${i}]` : "multiplier", m, -1e6, 1e6));
}

/**
 * Merges checkpoints tensor by tensor and writes the result(s).
 *
 * @example
 * const report = await merge({ a: "base.safetensors", b: "style.safetensors", c: "sd15.safetensors",
 *   method: "add-difference", multiplier: 0.3, dtype: "fp16", out: "mix.safetensors" });
 */
export async function merge(options: MergeOptions): Promise<MergeReport> {
  const started = Date.now();
  const stack = new Error().stack; // the caller's stack, restored on async failures
  try {
    return await mergeInner(options, started);
  } catch (e) {
    if (e instanceof MergeError && stack) e.stack = `${e.name} [${e.code}]: ${e.message}\n${stack.split("\n").slice(1).join("\n")}`;
    throw e;
  }
}

/** The options, checked and normalised before any work (every mistake names its option). */
function validateOptions(options: MergeOptions) {
  if (options === null || typeof options !== "object") throw new MergeError("INVALID_ARGUMENT", "merge() expects an options object");
  rejectUnknownKeys("options", options, OPTION_KEYS);
  const method = resolveMethod(requireString("method", options.method));
  const paths: Partial<Record<ModelSlot, string>> = {};
  const many = method.many ? validateManyInputs(options, method) : undefined;
  if (!many) {
    if (options.base !== undefined || options.models !== undefined || options.modelWeights !== undefined || options.modelParams !== undefined) {
      throw new MergeError("INVALID_ARGUMENT", `${method.name} takes models a, b, c; base, models, modelWeights and modelParams are for methods over a base and several models (${manyMethodNames()})`);
    }
    paths.a = requireString("a", options.a);
    const b = optionalString("b", options.b);
    const c = optionalString("c", options.c);
    if (b !== undefined) paths.b = b;
    if (c !== undefined) paths.c = c;
    for (const slot of method.inputs) {
      if (!paths[slot]) throw new MergeError("INVALID_ARGUMENT", `${slot} is required: ${method.name} needs model ${slot.toUpperCase()}`);
    }
  }
  if (options.alpha !== undefined && options.multiplier !== undefined) throw new MergeError("INVALID_ARGUMENT", "alpha and multiplier are the same option: give one");
  const given = options.alpha ?? options.multiplier;
  const multipliers = method.usesMultiplier ? (given === undefined && many ? [method.defaults[0]!] : normaliseMultipliers(given)) : [0];
  const [lo, hi] = method.multiplierRange;
  multipliers.forEach((m) => requireNumberInRange("multiplier", m, lo, hi));
  const rowParams = rowParamsFromOptions(options);
  if (rowParams.blocks?.alpha !== undefined && multipliers.length > 1) throw new MergeError("INVALID_ARGUMENT", "blocks set α for every block, so a multiplier sweep would write the same model several times: sweep without blocks");
  checkRowParams(method, rowParamsOf(rowParams as RecipeRow));
  // Block values are parsed once A's block map is known; their names are checked now.
  for (const name of Object.keys(rowParams.blocks ?? {})) checkParamName(method, name, name === "alpha" ? "blocks" : name === "beta" ? "betaBlocks" : `paramBlocks.${name}`);
  if (optionalBoolean("clamp", options.clamp) && !method.clampable) throw new MergeError("INVALID_ARGUMENT", `clamp needs models A and B; ${method.name} does not read B`);
  const checked = {
    method,
    paths,
    many,
    multipliers,
    rowParams,
    dtype: options.dtype === undefined || options.dtype === "same" ? undefined : requireOneOf("dtype", options.dtype, OUTPUT_DTYPES),
    out: requireString("out", options.out),
    engine: resolveEngine(options.engine === undefined ? "auto" : requireOneOf("engine", options.engine, ["auto", "native", "js"] as const)),
    threads: options.threads === undefined ? defaultThreads() : requireInteger("threads", options.threads, 1, 1024),
    isa: options.isa === undefined ? "auto" as const : requireOneOf("isa", options.isa, ["auto", "scalar", "avx2", "avx512"] as const),
    inputCache: options.inputCache === undefined ? undefined : requireOneOf("inputCache", options.inputCache, INPUT_CACHE_MODES),
    format: options.format === undefined ? undefined : requireOneOf("format", options.format, ["safetensors", "ckpt"] as const),
    overwrite: optionalBoolean("overwrite", options.overwrite) === true,
    dryRun: optionalBoolean("dryRun", options.dryRun) === true,
    configSource: options.config === undefined ? "abc" as const : requireOneOf("config", options.config, ["abc", "a", "b", "c", "none"] as const),
    vae: optionalString("vae", options.vae),
  };
  optionalStringRecord("metadata", options.metadata);
  optionalBoolean("recipeMetadata", options.recipeMetadata);
  optionalBoolean("prune", options.prune);
  optionalStringList("modelDirs", options.modelDirs);
  optionalStringList("discard", options.discard, true);
  optionalFunction("onProgress", options.onProgress);
  optionalSignal("signal", options.signal);
  return checked;
}

/** `beta`, `params`, the per-key and per-block options as recipe-row fields (also what the metadata records). */
function rowParamsFromOptions(options: MergeOptions): Pick<RecipeRow, "params" | "weights" | "blocks" | "clamp"> {
  const list = (name: string, v: unknown) => {
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw new MergeError("INVALID_ARGUMENT", `${name} must be a list of { pattern, value }`);
    return v.map((w: { pattern?: unknown; value?: unknown }, i) => {
      if (w === null || typeof w !== "object") throw new MergeError("INVALID_ARGUMENT", `${name}[${i}] must be { pattern, value }`);
      return { pattern: requireString(`${name}[${i}].pattern`, w.pattern), value: requireNumberInRange(`${name}[${i}].value`, w.value, -1e6, 1e6) };
    });
  };
  const alpha = list("weights", options.weights), beta = list("betaWeights", options.betaWeights);
  const named = (option: "paramWeights" | "paramBlocks", forms: string) => {
    const v = options[option];
    if (v === undefined) return [];
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new MergeError("INVALID_ARGUMENT", `${option} must be an object by parameter name, such as { density: ${forms} }`);
    for (const name of Object.keys(v)) {
      if (name === "alpha") throw new MergeError("INVALID_ARGUMENT", `${option}.alpha: α per key is weights, per block blocks`);
      if (name === "beta") throw new MergeError("INVALID_ARGUMENT", `${option}.beta: β per key is betaWeights, per block betaBlocks`);
    }
    return Object.keys(v);
  };
  const namedWeights = named("paramWeights", '[{ pattern: "cond_stage_model\\.", value: 0.1 }]')
    .map((name) => [name, list(`paramWeights.${name}`, options.paramWeights![name])] as const).filter(([, l]) => l.length);
  const namedBlocks = named("paramBlocks", '"GRAD_V"').map((name) => [name, blockSpec(`paramBlocks.${name}`, options.paramBlocks![name])] as const);
  if (options.params !== undefined && (options.params === null || typeof options.params !== "object" || Array.isArray(options.params))) {
    throw new MergeError("INVALID_ARGUMENT", "params must be an object of parameter values by name, such as { density: 0.2 }");
  }
  const rowValues = Object.fromEntries(Object.entries(options.params ?? {}).map(([k, v]) => [k, requireNumberInRange(`params.${k}`, v, -1e16, 1e16)]));
  const params = { ...rowValues, ...(options.beta !== undefined ? { beta: requireNumberInRange("beta", options.beta, -1e6, 1e6) } : {}) };
  // One recipe form for all: weights and blocks by parameter name (α, β, then the named ones).
  const weights = { ...(alpha.length ? { alpha } : {}), ...(beta.length ? { beta } : {}), ...Object.fromEntries(namedWeights) };
  const blocks = {
    ...(options.blocks !== undefined ? { alpha: blockSpec("blocks", options.blocks) } : {}),
    ...(options.betaBlocks !== undefined ? { beta: blockSpec("betaBlocks", options.betaBlocks) } : {}),
    ...Object.fromEntries(namedBlocks),
  };
  return {
    ...(Object.keys(params).length ? { params } : {}),
    ...(Object.keys(weights).length ? { weights } : {}),
    ...(Object.keys(blocks).length ? { blocks } : {}),
    ...(options.clamp === true ? { clamp: true } : {}),
  };
}

function blockSpec(name: string, v: unknown): string | number[] {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x === "number")) return [...v];
  throw new MergeError("INVALID_ARGUMENT", `${name} must be block values as text ("0.5,1,…" or a preset name) or a list of numbers`);
}

async function mergeInner(caller: MergeOptions, started: number): Promise<MergeReport> {
  const checked = validateOptions(caller);
  if (caller.signal?.aborted) throw new MergeError("ABORTED", "the merge was cancelled before it started");
  // From here on, `options.onProgress` never throws (a throw cancels the merge through `signal`
  // and becomes its error) and `signal` is the caller's or that cancellation.
  const { signal, cancel } = cancellable(caller.signal);
  const progress = caller.onProgress ? new GuardedCallback(caller.onProgress, cancel) : undefined;
  const options: MergeOptions = { ...caller, signal, ...(progress ? { onProgress: progress.call } : {}) };
  try {
    // Hugging Face model folders (sharded language models) are written as folders (lib/hf).
    if (await mergesFolders(checked)) return await mergeHfFolders(options, checked, started);
    return await mergeChecked(options, checked, started);
  } catch (e) {
    progress?.check();
    throw e;
  } finally {
    discardPreparedOutput(checked.engine);
  }
}

async function mergeChecked(options: MergeOptions, checked: ReturnType<typeof validateOptions>, started: number): Promise<MergeReport> {
  if (checked.many) return mergeMany(options, { ...checked, many: checked.many }, started);
  const { method, paths, multipliers, rowParams, dtype, out, engine, threads, isa, format, overwrite, dryRun, configSource } = checked;
  const targets = multipliers.map((m) => sweepOutputPath(out, m, multipliers.length));
  await checkTargets(targets, [], overwrite); // a folder, an existing file: before finding models
  // One hash cache for the whole merge: hash references resolve from it, recipe metadata reads it.
  const cache = await HashCache.open();
  const resolveOptions = { cache, ...(options.modelDirs ? { dirs: options.modelDirs } : {}), ...(options.signal ? { signal: options.signal } : {}) };
  for (const slot of method.inputs) paths[slot] = await resolveModel(paths[slot]!, resolveOptions);
  // The output windows are faulted in on a worker while the rest of this function plans the job.
  if (!dryRun) await prepareNativeOutput(engine, method.inputs.map((s) => paths[s]!));
  const vaePath = checked.vae === undefined ? undefined : await resolveModel(checked.vae, resolveOptions);

  const inputPaths = method.inputs.map((s) => paths[s]!);
  const readFiles = await ProtectedFiles.of([
    ...method.inputs.map((s) => ({ path: paths[s]!, what: `input ${s.toUpperCase()}` })),
    ...(vaePath ? [{ path: vaePath, what: "the VAE" }] : []),
  ]);
  await checkTargets(targets, readFiles, overwrite);
  const candidates = configCandidates(configSource, { a: paths.a!, ...(paths.b ? { b: paths.b } : {}), ...(paths.c ? { c: paths.c } : {}) });
  const configs = candidates.length ? await planConfigCopies([{ from: candidates, outputs: targets }], [...inputPaths, ...(vaePath ? [vaePath] : [])], overwrite) : [];

  const inputs: Partial<Record<ModelSlot, { model: ModelFile }>> = {};
  for (const slot of method.inputs) inputs[slot] = { model: await openModel(paths[slot]!) };
  const opened = method.inputs.map((s) => inputs[s]!.model);
  assertCompatible(opened); // labelled A, B, C (method.inputs are in that order) with file names
  const edits = planKeyEdits({
    a: opened[0]!,
    ...(vaePath ? { vae: await openModel(vaePath) } : {}),
    ...(options.discard !== undefined ? { discard: options.discard } : {}),
    ...(options.prune ? { prune: true } : {}),
  });
  const rowName = stemOf(out);
  const planParams = rowParamsOf(rowParams, rowParams.blocks ? blockMapOf(opened[0]!) : undefined, perBlockOption);
  checkRowParams(method, planParams);
  const metadataFor = await recipeMetadataFor(options, cache, { rowName, method: method.name as MethodName, paths, models: inputs, multipliers, rowParams, dtype, vaePath, dryRun });
  const plan = planBoard({
    rows: [{
      name: rowName,
      method,
      inputs,
      multipliers,
      ...(planParams ? { params: planParams } : {}),
      ...(rowParams.clamp ? { clamp: true } : {}),
      ...(dtype ? { dtype } : {}),
      discard: edits.discard,
      replace: edits.replace,
      outputs: targets.map((path, i) => {
        const f = format ?? outputFormatForPath(path);
        return { path, format: f, metadata: metadataFor(multipliers[i]!, f) };
      }),
    }],
  });
  const renamedKeys = method.inputs.flatMap((slot, i) => (opened[i]!.renamedKeys ? [{ slot, path: opened[i]!.path, keys: opened[i]!.renamedKeys! }] : []));
  const missingKeys = missingKeyWarnings(
    opened[0]!,
    method.inputs.slice(1).map((slot, i) => ({ slot: slot as "b" | "c", path: opened[i + 1]!.path, has: (n: string) => opened[i + 1]!.byName.has(n) })),
    (n) => edits.discard(n) || edits.replace.has(n),
  );
  const outputs = plan.passes.flatMap((p) => p.outputs);
  const base = {
    dryRun,
    inputs: method.inputs.map((s) => ({ slot: s, path: paths[s]!, bytes: inputs[s]!.model.size })),
    outputs: outputs.map((o) => ({ path: o.path, multiplier: o.multiplier, bytes: o.layout.size })),
    method: method.name as MethodName,
    engine,
    bytesRead: plan.bytesToRead,
    bytesWritten: plan.bytesToWrite,
    stats: plan.stats[0]!,
    ...(edits.vae ? { vae: edits.vae } : {}),
    renamedKeys,
    missingKeys,
    warnings: missingKeys.map((w) => w.message),
  };
  return finishMerge(base, plan, configs, options, { engine, threads, isa, overwrite, dryRun }, started);
}

/** What a merge reports before it runs (finishMerge adds the run's figures). */
export type PlannedReport = Omit<MergeReport, "isa" | "threads" | "seconds" | "configs" | "disk" | "nonFinite" | "removedTemps">;

/**
 * The end every merge shares (classic and base + models rows): a dry run reports the disk it
 * needs; otherwise clear stale temps, run the plan, copy the model configs beside the outputs.
 */
export async function finishMerge(
  report: PlannedReport,
  plan: BoardPlan,
  configs: readonly ConfigCopy[],
  options: MergeOptions,
  run: { engine: "native" | "js"; threads: number; isa: NonNullable<MergeOptions["isa"]>; overwrite: boolean; dryRun: boolean },
  started: number,
): Promise<MergeReport> {
  const outputs = plan.passes.flatMap((p) => p.outputs);
  if (run.dryRun) {
    const disk = await diskNeeds([...outputs.map((o) => ({ path: o.path, bytes: o.layout.size })), ...sideFileNeeds(plan)]);
    return { ...report, isa: "", threads: run.threads, seconds: (Date.now() - started) / 1000, configs: configs.map((c) => c.destination), disk, nonFinite: [] };
  }
  const removedTemps = await preflight(plan, run.overwrite);
  const result = await executePlan(plan, {
    engine: run.engine, threads: run.threads, isa: run.isa, overwrite: run.overwrite,
    ...(options.inputCache ? { inputCache: options.inputCache } : {}),
    ...(options.onProgress ? { onProgress: (p: MergeProgress) => options.onProgress!({ phase: "merging", ...p }) } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  }, started);
  const copied: string[] = [];
  for (const c of configs) {
    const done = await copyModelConfig(c.model, c.output);
    if (done) copied.push(done.destination);
  }
  return {
    ...report,
    isa: result.isa,
    threads: result.threads,
    seconds: (Date.now() - started) / 1000,
    configs: copied,
    ...(removedTemps.length ? { removedTemps } : {}),
    nonFinite: result.nonFinite,
    warnings: [...report.warnings, ...nonFiniteWarnings(result.nonFinite)],
  };
}

/** Builds each output's metadata: the user's, plus the recipe (unless turned off). */
async function recipeMetadataFor(
  options: MergeOptions,
  cache: HashCache,
  row: { rowName: string; method: MethodName; paths: Partial<Record<ModelSlot, string>>; models: Partial<Record<ModelSlot, { model: ModelFile }>>; multipliers: number[]; rowParams: Pick<RecipeRow, "params" | "weights" | "blocks" | "clamp">; dtype: OutputDtype | undefined; vaePath: string | undefined; dryRun: boolean },
): Promise<(multiplier: number, format: OutputFormat) => Record<string, string>> {
  const user = options.metadata ?? {};
  if (options.recipeMetadata === false) return (_, format) => (format === "ckpt" ? { ...user } : { format: "pt", ...user });
  const identity = async (path: string, metadata: Record<string, string>): Promise<InputIdentity> => {
    // A dry run hashes nothing: stand-ins of the same length (one per file) give the same sizes.
    const started = Date.now();
    const onProgress = options.onProgress && ((bytesDone: number, bytesTotal: number) => options.onProgress!({
      phase: "hashing", path, bytesDone, bytesTotal, fraction: bytesTotal ? bytesDone / bytesTotal : 1, elapsedSeconds: (Date.now() - started) / 1000,
    }));
    const h = row.dryRun ? placeholderHashes(path) : await getFileHashes(path, { cache, ...(options.signal ? { signal: options.signal } : {}), ...(onProgress ? { onProgress } : {}) });
    return { sha256: h.sha256, legacy: h.legacy, name: basename(path), metadata, virtual: false };
  };
  const inputs: Partial<Record<ModelSlot, InputIdentity>> = {};
  const recipeInputs: RecipeRow["inputs"] = {};
  for (const [slot, entry] of Object.entries(row.models) as [ModelSlot, { model: ModelFile }][]) {
    inputs[slot] = await identity(row.paths[slot]!, entry.model.metadata);
    recipeInputs[slot] = { kind: "model", ref: basename(row.paths[slot]!), sha256: inputs[slot]!.sha256, legacy: inputs[slot]!.legacy! };
  }
  const vae = row.vaePath ? await identity(row.vaePath, {}) : undefined;
  const conv = (slot: ModelSlot) => row.models[slot]?.model.byName.get("model.diffusion_model.input_blocks.0.0.weight")?.shape[1];
  const recipeRow: RecipeRow = {
    name: row.rowName, method: row.method, inputs: recipeInputs, multipliers: row.multipliers, ...row.rowParams,
    ...(row.dtype ? { dtype: row.dtype } : {}), format: "safetensors", save: true,
    ...(options.discard !== undefined ? { discard: typeof options.discard === "string" ? [options.discard] : options.discard } : {}),
    ...(options.prune ? { prune: true } : {}),
    ...(options.config !== undefined && options.config !== "abc" ? { config: options.config } : {}),
    ...(vae ? { vae: { kind: "model", ref: basename(row.vaePath!), sha256: vae.sha256, legacy: vae.legacy! } } : {}),
    ...(options.metadata ? { metadata: options.metadata } : {}),
  };
  // .ckpt outputs stay exactly `{"state_dict": …}`, as the classic tool writes them.
  return (multiplier, format) => format === "ckpt" ? { ...user } : outputMetadata(
    {
      row: { ...recipeRow, format }, multiplier, format, inputs, ...(vae ? { vae } : {}), isInpainting: conv("a") === 9 && conv("b") === 4, isInstructPix2Pix: conv("a") === 8 && conv("b") === 4,
      ...(recipeRow.blocks && row.models.a ? { blockMap: blockMapOf(row.models.a.model) } : {}),
    },
    { recipe: true },
  );
}

function placeholderHashes(path: string): { sha256: string; legacy: string } {
  const sha256 = createHash("sha256").update(`tensormerge dry run ${path}`).digest("hex");
  return { sha256, legacy: sha256.slice(0, 8) };
}

/** The output file name stem for reports: "mix-0.3" for "/x/mix-0.3.safetensors". */
export function stemOf(path: string): string {
  return basename(path, extname(path));
}
