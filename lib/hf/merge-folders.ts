/**
 * `merge()` with Hugging Face folders: `--a ./Mistral-7B-v0.1 --b ./OpenHermes --out ./merged`.
 * The same methods, parameters and per-key / per-layer values as for single files; the models
 * are opened as folders (lib/hf/folder.ts), checked as language models (architecture.ts) and the
 * result written as a sharded folder (output.ts) with config.json, tokenizer files and a card.
 *
 * A multiplier sweep writes one folder per value (`out` with `<M>` replaced, else `out-<M>`),
 * all in the same passes: pass k writes shard k of every folder, so the inputs are read once.
 *
 * What only makes sense for single files is refused, naming the option: `vae`, `discard`,
 * `prune`, `config` (a `.yaml` beside a checkpoint), `format: "ckpt"`.
 */
import { basename } from "node:path";
import { OUTPUT_DTYPE_TO_DTYPE, type OutputDtype } from "../dtypes";
import { MergeError } from "../errors";
import { formatMultiplier } from "../validate";
import type { MergeOptions, MergeReport } from "../merge";
import type { ModelSlot } from "../methods/define";
import { checkRowParams, perBlockOption, type RowParams } from "../methods/params";
import type { RowInput } from "../plan";
import { blockMapOf, rowParamsOf, type RecipeRow } from "../recipes/types";
import type { MergeMethod } from "../methods/define";
import { assertLlmCompatible, identifyLlm, isLlmLayout, type LlmIdentification } from "./architecture";
import { isModelFolder, openHfFolder, type HfModel } from "./folder";
import { DEFAULT_SHARD_SIZE, parseShardSize, writeHfFolder } from "./output";
import { modelCard, outputConfig, supportFiles } from "./support-files";

export interface FolderMergeInput {
  method: MergeMethod;
  paths: Partial<Record<ModelSlot, string>>;
  /** Methods over a base and models (ties, dare, model-stock): the folders and each model's values. */
  many?: { base: string; models: string[]; modelParams: RowParams[] } | undefined;
  multipliers: number[];
  rowParams: Pick<RecipeRow, "params" | "weights" | "blocks" | "clamp">;
  dtype: OutputDtype | undefined;
  out: string;
  engine: "native" | "js";
  threads: number;
  isa: "auto" | "scalar" | "avx2" | "avx512";
  overwrite: boolean;
  dryRun: boolean;
}

const TORCH_DTYPE: Partial<Record<OutputDtype, string>> = { fp16: "float16", bf16: "bfloat16", fp32: "float32" };

/** Whether a merge's model A (or base) is a folder (then every input must be). */
/** The folder of one value of a sweep: `<M>` in `out` replaced by the value, else `out-<M>` (a folder name has no extension to keep). */
export function sweepFolderPath(out: string, multiplier: number, count: number): string {
  if (out.includes("<M>")) return out.replaceAll("<M>", formatMultiplier(multiplier));
  return count === 1 ? out : `${out.replace(/[\\/]+$/, "")}-${formatMultiplier(multiplier)}`;
}

export async function mergesFolders(input: Pick<FolderMergeInput, "paths" | "many">): Promise<boolean> {
  const first = input.many?.base ?? input.paths.a;
  return first !== undefined && (await isModelFolder(first));
}

function refuseFileOnlyOptions(options: MergeOptions, input: FolderMergeInput): void {
  const refuse = (option: string, why: string) => { throw new MergeError("INVALID_ARGUMENT", `${option}: ${why} (model A is a Hugging Face folder)`); };
  if (options.vae !== undefined) refuse("vae", "baking a VAE applies to Stable Diffusion checkpoints");
  if (options.discard !== undefined) refuse("discard", "not supported for model folders");
  if (options.prune) refuse("prune", "not supported for model folders");
  if (options.config !== undefined && options.config !== "abc") refuse("config", "a folder's config.json is always taken from A");
  if (options.format === "ckpt") refuse("format", "a model folder is written as safetensors shards");
}

export async function mergeHfFolders(options: MergeOptions & { shardSize?: number | string }, input: FolderMergeInput, started: number): Promise<MergeReport> {
  refuseFileOnlyOptions(options, input);
  const shardSize = options.shardSize === undefined ? DEFAULT_SHARD_SIZE : parseShardSize(options.shardSize, "shardSize");
  // The inputs by name as reports show them: A, B, C, or the base and model 1…n.
  const many = input.many;
  const named: { slot: string; path: string }[] = many
    ? [{ slot: "base", path: many.base }, ...many.models.map((path, i) => ({ slot: `model ${i + 1}`, path }))]
    : input.method.inputs.map((s) => ({ slot: s, path: input.paths[s]! }));
  const opened: HfModel[] = [];
  const ids: { label: string; id: LlmIdentification }[] = [];
  for (const { slot, path } of named) {
    if (!(await isModelFolder(path))) throw new MergeError("INVALID_ARGUMENT", `${slot}: ${path} is not a folder; with a Hugging Face folder as ${many ? "the base" : "A"}, every model must be one`, { path });
    const hf = await openHfFolder(path);
    opened.push(hf);
    if (isLlmLayout(hf.model)) ids.push({ label: `${slot.length === 1 ? slot.toUpperCase() : slot} (${path})`, id: identifyLlm(hf.model, hf.config, path) });
  }
  assertLlmCompatible(ids);
  const a = opened[0]!;
  const params = rowParamsOf(input.rowParams, input.rowParams.blocks ? blockMapOf(a.model) : undefined, perBlockOption);
  checkRowParams(input.method, params);
  const inputs: Partial<Record<ModelSlot, RowInput>> = {};
  if (!many) input.method.inputs.forEach((s, i) => { inputs[s] = { model: opened[i]!.model }; });
  const aId = ids[0]?.id;
  const outDtype = input.dtype ? TORCH_DTYPE[input.dtype] : aId?.torchDtype;
  const recipeOf = (multiplier: number) => ({ method: input.method.name, models: Object.fromEntries(named.map((n) => [n.slot, basename(n.path)])), multiplier, ...input.rowParams, ...(many ? { modelParams: many.modelParams.map((p) => p.values ?? {}) } : {}), ...(input.dtype ? { dtype: input.dtype } : {}) });
  const row = {
    name: basename(input.out), method: input.method, inputs,
    ...(many ? { base: { model: a.model }, models: opened.slice(1).map((hf, i) => ({ input: { model: hf.model }, params: many.modelParams[i]! })) } : {}),
    ...(params ? { params } : {}), ...(input.rowParams.clamp ? { clamp: true } : {}), ...(input.dtype ? { dtype: input.dtype } : {}),
  };
  // A sweep: one single-valued row per multiplier (only those can be cut into shards), one folder each.
  const outs = input.multipliers.map((m) => sweepFolderPath(input.out, m, input.multipliers.length));
  const variants = input.multipliers.map((m, i) => {
    const recipe = recipeOf(m);
    return {
      out: outs[i]!, row: i,
      metadata: { ...(options.metadata ?? {}), ...(options.recipeMetadata === false ? {} : { tensormerge_merge: JSON.stringify(recipe) }) },
      card: modelCard({ name: basename(outs[i]!), method: input.method.name, models: named.map((n) => n.path), recipe: JSON.stringify(recipe, null, 2), dtype: input.dtype ? OUTPUT_DTYPE_TO_DTYPE[input.dtype] : "A's dtypes" }),
    };
  });
  const report = await writeHfFolder({
    rows: input.multipliers.map((m, i) => ({ ...row, name: input.multipliers.length > 1 ? `${basename(outs[i]!)}` : row.name, multipliers: [m] })),
    out: input.out,
    variants,
    shardSize,
    ...(a.config ? { config: outputConfig(a.config, outDtype ? { torch_dtype: outDtype } : {}) } : {}),
    copies: await supportFiles(a.folder),
    inputs: named.map((n) => n.path),
    overwrite: input.overwrite,
    dryRun: input.dryRun,
    engine: input.engine,
    threads: input.threads,
    isa: input.isa,
    ...(options.inputCache ? { inputCache: options.inputCache } : {}),
    ...(options.onProgress ? { onProgress: (p) => options.onProgress!({ phase: "merging", ...p }) } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const perFolder = report.bytesWritten / outs.length;
  return {
    dryRun: report.dryRun,
    inputs: named.map((n, i) => ({
      ...(many ? (i === 0 ? { slot: "base" as const } : { slot: "model" as const, index: i - 1 }) : { slot: input.method.inputs[i]! }),
      path: n.path, bytes: opened[i]!.model.size,
    })),
    outputs: outs.map((path, i) => ({ path, multiplier: input.multipliers[i]!, bytes: perFolder })),
    method: input.method.name as MergeReport["method"],
    engine: input.engine,
    isa: report.isa,
    threads: report.threads,
    seconds: (Date.now() - started) / 1000,
    bytesRead: report.bytesRead,
    bytesWritten: report.bytesWritten,
    stats: report.stats,
    configs: [],
    ...(report.disk ? { disk: report.disk } : {}),
    renamedKeys: [],
    missingKeys: [],
    nonFinite: [],
    warnings: [...ids.length === 0 ? [`${input.paths.a}: not a transformers decoder layout (model.layers.N): merged key by key without the language-model checks`] : [], ...report.warnings],
    shards: report.shards,
  };
}
