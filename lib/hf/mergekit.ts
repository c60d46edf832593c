/**
 * `tensormerge mergekit CONFIG OUT`: a mergekit YAML configuration run as a streaming board,
 * written as a Hugging Face folder (lib/hf/output.ts). mergekit's semantics are followed where
 * they are defined (arcee-ai/mergekit: `config.py` parameters and gradients, `plan.py` slices
 * and t, `merge_methods/*.py` formulas); where they differ, README "Language models" says how.
 */
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { OUTPUT_DTYPE_TO_DTYPE, type OutputDtype } from "../dtypes";
import { resolveEngine, type EngineName } from "../engine";
import { MergeError, fsError } from "../errors";
import type { MergeProgress } from "../merge";
import { resolveMethod } from "../methods/registry";
import type { MergeMethod, ModelSlot } from "../methods/define";
import type { ModelFile } from "../model";
import type { BoardRow, RowInput } from "../plan";
import { assertLlmCompatible, identifyLlm, type LlmIdentification } from "./architecture";
import { openHfFolder, type HfModel } from "./folder";
import { evaluateSetting, parseMergekitConfig, type MergekitConfig, type ModelLocator, type OutputSlice, type Scalar } from "./mergekit-config";
import { alignSlices, type AlignedModels } from "./mergekit-layout";
import { linearStep, taskVectorStep } from "./mergekit-methods";
import { DEFAULT_SHARD_SIZE, parseShardSize, writeHfFolder, type HfWriteReport } from "./output";
import { modelCard, outputConfig, supportFiles } from "./support-files";
import { INPUT_CACHE_MODES, type InputCache } from "../native/job";
import { requireOneOf } from "../validate";

export interface MergekitOptions {
  /** Path of the YAML file. */
  config: string;
  /** Output folder. */
  out: string;
  /** Bytes, or "5GB", "500MB", "2GiB" (default 5GB). */
  shardSize?: number | string;
  dryRun?: boolean;
  overwrite?: boolean;
  engine?: EngineName;
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  /** Page cache policy for uncached inputs (MergeOptions.inputCache). */
  inputCache?: InputCache;
  onProgress?: (p: MergeProgress) => void;
  signal?: AbortSignal;
}

export interface MergekitReport extends HfWriteReport {
  method: string;
  models: string[];
  layers: number;
  dtype: OutputDtype;
}

const MAX_CONFIG_BYTES = 1 << 20;

export async function loadMergekitConfig(path: string): Promise<MergekitConfig> {
  const text = await readFile(path, "utf8").catch((e) => { throw fsError(e, path, "reading the mergekit config"); });
  return mergekitConfigFromText(text, path);
}

const isDirectory = (p: string) => { try { return statSync(p).isDirectory(); } catch { return false; } };

/** A config given as text (a model's embedded recipe); `path` names it in errors and anchors relative model paths. */
export function mergekitConfigFromText(text: string, path: string, locate?: ModelLocator): MergekitConfig {
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) throw new MergeError("RECIPE_INVALID", `${path}: a mergekit config larger than 1 MiB is not a config`, { path });
  return parseMergekitConfig(text, path, isDirectory, locate);
}

/** A parameter's value for one output tensor, looked up as mergekit's ConfigReader does. */
class ParameterReader {
  constructor(private readonly config: MergekitConfig, private readonly slices: OutputSlice[], private readonly aligned: AlignedModels) {}

  private ctx(key: string) {
    const c = this.aligned.context.get(key);
    if (!c) throw new MergeError("INTERNAL", `mergekit: no slice for ${key}`);
    return c;
  }

  /** Per-model ("tensor") parameter: the source's own, then the slice's, then the config's; filters see the input name. */
  perModel(name: string, key: string, position: number): Scalar | undefined {
    const c = this.ctx(key);
    const slice = this.slices[c.slice]!;
    const tensorName = c.inputNames[position] ?? key;
    for (const settings of [slice.sources[position]!.parameters, slice.parameters, this.config.parameters]) {
      if (!Object.hasOwn(settings, name)) continue;
      const v = evaluateSetting(tensorName, settings[name]!, c.t);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  /** Global parameter: the slice's, then the config's; filters see the output name. */
  global(name: string, key: string): Scalar | undefined {
    const c = this.ctx(key);
    for (const settings of [this.slices[c.slice]!.parameters, this.config.parameters]) {
      if (!Object.hasOwn(settings, name)) continue;
      const v = evaluateSetting(key, settings[name]!, c.t);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  number(value: Scalar | undefined, what: string, key: string, fallback?: number): number {
    if (value === undefined) {
      if (fallback !== undefined) return fallback;
      throw new MergeError("RECIPE_INVALID", `mergekit config: missing required parameter ${what} for ${key}`, { tensor: key });
    }
    if (typeof value !== "number") throw new MergeError("RECIPE_INVALID", `mergekit config: ${what} must be a number for ${key}, got ${value}`, { tensor: key });
    return value;
  }

  flag(value: Scalar | undefined, what: string, key: string, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (typeof value === "boolean") return value;
    if (value === 0 || value === 1) return value === 1;
    throw new MergeError("RECIPE_INVALID", `mergekit config: ${what} must be true or false for ${key}, got ${value}`, { tensor: key });
  }
}

/** The config's slices; the `models:` form becomes one slice over every layer (the base added when missing), as mergekit's normalize_config does. */
function slicesOf(config: MergekitConfig, layersOf: (path: string) => number): OutputSlice[] {
  if (config.slices) return config.slices;
  const sources = config.models!.map((m) => ({ ...m, layerRange: [0, layersOf(m.model)] as [number, number] }));
  const base = config.baseModel;
  if (base && !sources.some((s) => s.model === base.model) && config.method !== "linear") {
    sources.push({ model: base.model, ref: base.ref, layerRange: [0, layersOf(base.model)], parameters: {} });
  }
  return [{ sources, parameters: {} }];
}

function basePosition(config: MergekitConfig, slices: OutputSlice[]): number | undefined {
  const base = config.baseModel;
  if (!base) return undefined;
  const positions = slices.map((s) => s.sources.findIndex((x) => x.model === base.model));
  if (positions.some((p) => p !== positions[0])) throw new MergeError("RECIPE_INVALID", "mergekit config: base_model must be the same source position in every slice");
  if (positions[0] === -1) {
    if (config.method === "linear") throw new MergeError("RECIPE_INVALID", `mergekit config: base_model: linear does not use a base; "${base.ref}" is not one of the models (mergekit would add it without a weight)`);
    throw new MergeError("RECIPE_INVALID", `mergekit config: base_model: "${base.ref}" is not a source of the slices`);
  }
  return positions[0];
}

function rowOf(name: string, method: MergeMethod, inputs: Partial<Record<ModelSlot, RowInput>>, dtype: OutputDtype, values: Record<string, (key: string) => number>): BoardRow {
  return { name, method, inputs, multipliers: [method.defaults[0] ?? 0], dtype, params: { blockValue: values } };
}

/** The board rows that compute the merged model (the last row's result). */
function mergeRows(config: MergekitConfig, slices: OutputSlice[], aligned: AlignedModels, dtype: OutputDtype): BoardRow[] {
  const P = aligned.positions;
  const read = new ParameterReader(config, slices, aligned);
  const file = (j: number): RowInput => ({ model: P[j]! });
  const n = P.length;
  switch (config.method) {
    case "passthrough": {
      if (n !== 1) throw new MergeError("RECIPE_INVALID", `mergekit config: slices: passthrough takes exactly one source per slice, got ${n}`);
      const scaled = Object.hasOwn(config.parameters, "scale") || slices.some((s) => Object.hasOwn(s.sources[0]!.parameters, "scale") || Object.hasOwn(s.parameters, "scale"));
      const copy: BoardRow = { name: "passthrough", method: resolveMethod("no-interpolation"), inputs: { a: file(0) }, multipliers: [0], dtype };
      if (!scaled) return [copy];
      // mergekit passthrough.py: tensor · scale where the source's scale (a per-model parameter,
      // filters matched against the input name, gradients over the slice) is set, the tensor
      // unchanged where it is not: one fp32 product rounded once to the output dtype, as torch's
      // bf16/fp16 × scalar computes it. A·scale + A·0 is that product (A·0 adds a signed zero).
      const scale = (key: string) => read.number(read.perModel("scale", key, 0), "scale", key, 1);
      return [rowOf("passthrough", linearStep, { a: file(0), b: file(0) }, dtype, { alpha: scale, beta: () => 0 })];
    }
    case "linear": {
      const weight = (key: string, j: number) => read.number(read.perModel("weight", key, j), "weight", key);
      const divisor = (key: string, upTo: number) => {
        if (!read.flag(read.global("normalize", key), "normalize", key, true)) return 1;
        let d = 0;
        for (let i = 0; i <= upTo; i++) d += weight(key, i);
        if (d === 0) throw new MergeError("RECIPE_INVALID", `mergekit config: the weights of the first ${upTo + 1} models sum to 0 for ${key} (normalize divides by them)`, { tensor: key });
        return d;
      };
      if (n === 1) {
        return [rowOf("linear", linearStep, { a: file(0), b: file(0) }, dtype, { alpha: (k) => weight(k, 0) / divisor(k, 0), beta: () => 0 })];
      }
      const rows: BoardRow[] = [];
      for (let k = 1; k < n; k++) {
        const p = k === 1 ? (key: string) => weight(key, 0) / divisor(key, 1) : (key: string) => divisor(key, k - 1) / divisor(key, k);
        const a: RowInput = k === 1 ? file(0) : { row: rows.length - 1 };
        rows.push(rowOf(`linear ${k}`, linearStep, { a, b: file(k) }, k === n - 1 ? dtype : "fp32", { alpha: p, beta: (key) => weight(key, k) / divisor(key, k) }));
      }
      return rows;
    }
    case "task_arithmetic": {
      const b = basePosition(config, slices);
      if (b === undefined) throw new MergeError("RECIPE_INVALID", "mergekit config: base_model: task_arithmetic needs a base model");
      const others = P.map((_, j) => j).filter((j) => j !== b);
      const weight = (key: string, j: number) => read.number(read.perModel("weight", key, j), "weight", key);
      for (const j of others) {
        for (const key of aligned.context.keys()) {
          const density = read.number(read.perModel("density", key, j), "density", key, 1);
          if (density !== 1) throw new MergeError("RECIPE_INVALID", `mergekit config: density: task_arithmetic does not sparsify (mergekit ignores density ${density} there); use dare_linear or ties`, { tensor: key });
        }
      }
      const divisor = (key: string) => {
        if (!read.flag(read.global("normalize", key), "normalize", key, false)) return 1;
        const d = others.reduce((s, j) => s + weight(key, j), 0);
        return Math.abs(d) < 1e-8 ? 1 : d;
      };
      if (others.length === 0) return [{ name: "task_arithmetic", method: resolveMethod("no-interpolation"), inputs: { a: file(b) }, multipliers: [0], dtype }];
      return others.map((j, k) => rowOf(`task_arithmetic ${k + 1}`, taskVectorStep, { a: k === 0 ? file(b) : { row: k - 1 }, b: file(j), c: file(b) }, k === others.length - 1 ? dtype : "fp32", { alpha: (key) => weight(key, j) / divisor(key) }));
    }
    case "slerp": {
      const b = basePosition(config, slices);
      if (b === undefined) throw new MergeError("RECIPE_INVALID", "mergekit config: base_model: slerp needs a base model (t = 0 is the base)");
      if (n !== 2) throw new MergeError("RECIPE_INVALID", `mergekit config: slerp takes exactly two models, the base and one other (got ${n})`);
      const t = (key: string) => read.number(read.global("t", key), "t", key);
      return [rowOf("slerp", resolveMethod("slerp"), { a: file(b), b: file(1 - b) }, dtype, { alpha: t })];
    }
    case "ties":
    case "dare_ties":
    case "dare_linear":
      return [taskMergeRow(config, slices, aligned, read, dtype)];
    case "model_stock": {
      const b = basePosition(config, slices);
      if (b === undefined) throw new MergeError("RECIPE_INVALID", "mergekit config: base_model: model_stock needs a base model");
      for (const key of aligned.context.keys()) {
        if (read.flag(read.global("filter_wise", key), "filter_wise", key, false)) throw new MergeError("RECIPE_INVALID", "mergekit config: parameters.filter_wise: only the default (false, one t per tensor) is supported");
      }
      const others = P.map((_, j) => j).filter((j) => j !== b);
      return [{ name: "model_stock", method: resolveMethod("model-stock"), inputs: {}, base: file(b), models: others.map((j) => ({ input: file(j) })), multipliers: [0], dtype }];
    }
  }
}

/**
 * ties, dare_ties, dare_linear on the many-model methods (lib/methods/many/task-merge.ts):
 * per-model weight and density, global normalize and rescale with mergekit's defaults
 * (registry.py). mergekit's DARE density is the share kept: drop-rate = 1 − density.
 */
function taskMergeRow(config: MergekitConfig, slices: OutputSlice[], aligned: AlignedModels, read: ParameterReader, dtype: OutputDtype): BoardRow {
  const P = aligned.positions;
  const b = basePosition(config, slices);
  if (b === undefined) throw new MergeError("RECIPE_INVALID", `mergekit config: base_model: ${config.method} needs a base model`);
  const others = P.map((_, j) => j).filter((j) => j !== b);
  const dare = config.method !== "ties";
  const method = resolveMethod(config.method === "ties" ? "ties" : config.method === "dare_ties" ? "dare-ties" : "dare");
  const defaults = { normalize: config.method === "ties", rescale: dare };
  const flag = (name: "normalize" | "rescale") => (key: string) => (read.flag(read.global(name, key), name, key, defaults[name]) ? 1 : 0);
  if (!dare) {
    for (const key of aligned.context.keys()) {
      if (flag("rescale")(key) === 1) throw new MergeError("RECIPE_INVALID", "mergekit config: parameters.rescale: ties with rescale is not supported (magnitude pruning keeps values as they are)");
    }
  }
  const density = (key: string, j: number) => {
    const d = read.number(read.perModel("density", key, j), "density", key, 1);
    if (!(d > 0 && d <= 1)) throw new MergeError("RECIPE_INVALID", `mergekit config: density must be in (0, 1], got ${d} for ${key}`, { tensor: key });
    return d;
  };
  const perModel = (j: number) => ({
    blockValue: {
      weight: (key: string) => read.number(read.perModel("weight", key, j), "weight", key),
      ...(dare ? { "drop-rate": (key: string) => Math.min(0.999999, 1 - density(key, j)) } : { density: (key: string) => density(key, j) }),
    },
  });
  return {
    name: config.method, method, inputs: {}, base: { model: P[b]! },
    models: others.map((j) => ({ input: { model: P[j]! }, params: perModel(j) })),
    multipliers: [1], dtype,
    params: { blockValue: { normalize: flag("normalize"), ...(dare ? { rescale: flag("rescale") } : {}) } },
  };
}

const TORCH_DTYPE: Record<OutputDtype, string> = { fp16: "float16", bf16: "bfloat16", fp32: "float32", "fp8-e4m3": "float8_e4m3fn", "fp8-e5m2": "float8_e5m2" };
const DTYPE_OF_TORCH: Record<string, OutputDtype> = { float16: "fp16", bfloat16: "bf16", float32: "fp32" };

/** The output dtype: out_dtype, else dtype (mergekit's output is in its compute dtype), else the base's. */
function outputDtype(config: MergekitConfig, base: { id: LlmIdentification; model: ModelFile }): OutputDtype {
  const chosen = config.outDtype ?? config.dtype ?? (base.id.torchDtype ? DTYPE_OF_TORCH[base.id.torchDtype] : undefined);
  if (chosen) return chosen;
  const float = base.model.tensors.find((t) => t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F32");
  return float?.dtype === "F16" ? "fp16" : float?.dtype === "BF16" ? "bf16" : "fp32";
}

/**
 * Runs (or with `dryRun`, plans) a mergekit configuration.
 *
 * @example
 * await runMergekit({ config: "frankenmerge.yml", out: "./deeper", shardSize: "2GB" });
 */
export async function runMergekit(options: MergekitOptions): Promise<MergekitReport> {
  return runMergekitConfig(await loadMergekitConfig(options.config), options);
}

/** runMergekit on a parsed config (`options.config` unused). */
export async function runMergekitConfig(config: MergekitConfig, options: Omit<MergekitOptions, "config">): Promise<MergekitReport> {
  const shardSize = options.shardSize === undefined ? DEFAULT_SHARD_SIZE : parseShardSize(options.shardSize);
  const engine = resolveEngine(options.engine ?? "auto");
  if (options.inputCache !== undefined) requireOneOf("inputCache", options.inputCache, INPUT_CACHE_MODES);
  const refs = new Map<string, string>();
  for (const s of config.models ?? config.slices!.flatMap((x) => x.sources)) refs.set(s.model, s.ref);
  if (config.baseModel) refs.set(config.baseModel.model, config.baseModel.ref);
  const opened = new Map<string, { hf: HfModel; id: LlmIdentification }>();
  for (const [path, ref] of refs) {
    const hf = await openHfFolder(path);
    opened.set(path, { hf, id: identifyLlm(hf.model, hf.config, ref) });
  }
  const labelled = [...opened.entries()].map(([path, o]) => ({ label: refs.get(path)!, id: o.id }));
  assertLlmCompatible(labelled, config.slices !== undefined);
  const layersOf = (path: string) => opened.get(path)!.id.layers;
  const slices = slicesOf(config, layersOf);
  const aligned = alignSlices(slices, (p) => opened.get(p)!.hf, layersOf);
  const basePath = config.baseModel?.model ?? slices[0]!.sources[0]!.model;
  const base = opened.get(basePath)!;
  const dtype = outputDtype(config, { id: base.id, model: base.hf.model });
  const rows = mergeRows(config, slices, aligned, dtype);
  const tokenizerFolder = config.tokenizerSource === undefined || config.tokenizerSource === "base" ? basePath : config.tokenizerSource;
  const copies = await supportFiles(tokenizerFolder);
  const models = [...refs.values()];
  const report = await writeHfFolder({
    rows,
    out: options.out,
    shardSize,
    metadata: { tensormerge_mergekit_config: config.text },
    ...(base.hf.config ? { config: outputConfig(base.hf.config, { torch_dtype: TORCH_DTYPE[dtype], num_hidden_layers: aligned.layers }) } : {}),
    copies,
    card: modelCard({ name: basename(options.out), method: config.method, models, yaml: config.text, dtype: OUTPUT_DTYPE_TO_DTYPE[dtype] }),
    inputs: [...refs.keys()],
    overwrite: options.overwrite === true,
    dryRun: options.dryRun === true,
    engine,
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.isa ? { isa: options.isa } : {}),
    ...(options.inputCache ? { inputCache: options.inputCache } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return { ...report, method: config.method, models, layers: aligned.layers, dtype };
}
