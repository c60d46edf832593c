/**
 * `bake()`: LoRAs baked into a checkpoint in one streaming pass (lib/lora/plan.ts has the
 * formula). The checkpoint's plain copy is planned as a `no-interpolation` board row (key rules,
 * dtype conversion, output layout and metadata as `merge` has them), then the pieces of the
 * tensors the LoRAs update get their low-rank chains; the LoRA files are extra job inputs.
 *
 * @example
 * await bake({ model: "sd15.safetensors", loras: [{ path: "detail.safetensors", ratio: 0.8 }], dtype: "fp16", out: "baked.safetensors" });
 */
import { basename } from "node:path";
import { GuardedCallback, cancellable } from "../callback";
import { executePlan, nonFiniteWarnings, preflight } from "../board";
import { OUTPUT_DTYPES, type OutputDtype } from "../dtypes";
import { defaultThreads, discardPreparedOutput, prepareNativeOutput, resolveEngine, type EngineName } from "../engine";
import { MergeError } from "../errors";
import { openModel } from "../formats";
import { outputFormatForPath } from "../formats/output";
import { HashCache, getFileHashes } from "../library/hash-cache";
import { identifyModel } from "../library/identify";
import { resolveModel } from "../library/resolve";
import type { MergeProgress } from "../merge";
import { resolveMethod } from "../methods/registry";
import type { ModelFile } from "../model";
import { ProtectedFiles, checkTargets, tempPathFor } from "../outputs";
import { planBoard, type BoardPlan } from "../plan";
import { optionalBoolean, optionalFunction, optionalSignal, optionalStringRecord, rejectUnknownKeys, requireInteger, requireNumberInRange, requireOneOf, requireString } from "../validate";
import { loraBlockWeights } from "./block-weights";
import { bakePieces, matchLoras, type BakeLoraInput, type LoraMatch } from "./plan";
import { openLora, type LoraFile } from "./read";
import { planTucker, type TuckerFactors } from "./tucker";

export interface BakeLoraSpec {
  path: string;
  /** Ratio of the denoiser modules (default 1). */
  ratio?: number;
  /** Ratio of the text-encoder modules (default: ratio × the bake's `te`). */
  te?: number;
  /** The name the bake record gives the file (default: its file name; reproduce passes the recorded one). */
  name?: string;
}

export interface BakeOptions {
  /** The checkpoint (path, or a name / hash found in `models`). */
  model: string;
  /** LoRAs in the order they are added; a string is a path with ratio 1. */
  loras: (BakeLoraSpec | string)[];
  /** Multiplies every LoRA's ratio for text-encoder modules, unless the LoRA sets `te` (default 1). */
  te?: number;
  /** LoRA block weights (12/17 values for SDXL/SD, 20/26 for every block, 61 for FLUX; lib/lora/block-weights.ts), for every LoRA. */
  loraBlocks?: string | number[];
  dtype?: OutputDtype | "same";
  out: string;
  overwrite?: boolean;
  engine?: EngineName;
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  metadata?: Record<string, string>;
  /** Record the bake (checkpoint and LoRAs by sha256, ratios) in the output's metadata; default true. */
  recipeMetadata?: boolean;
  /** The name the bake record gives the checkpoint (default: its file name). */
  modelName?: string;
  models?: string[];
  onProgress?: (progress: MergeProgress) => void;
  signal?: AbortSignal;
}

export interface BakeReport {
  model: { path: string; architecture: string; bytes: number };
  loras: { path: string; ratio: number; te: number; architecture: string; modules: number; matched: number; unmatched: string[] }[];
  output: { path: string; bytes: number };
  /** Checkpoint tensors a LoRA changed. */
  tensorsBaked: number;
  engine: "native" | "js";
  isa: string;
  threads: number;
  seconds: number;
  bytesRead: number;
  bytesWritten: number;
  nonFinite: { path: string; nan: number; inf: number }[];
  warnings: string[];
}

/** Metadata key of the bake record (JSON: checkpoint and LoRAs by sha256, ratios, dtype). */
export const BAKE_METADATA_KEY = "tensormerge_lora_bake";

const OPTION_KEYS = ["model", "loras", "te", "loraBlocks", "dtype", "out", "overwrite", "engine", "threads", "isa", "metadata", "recipeMetadata", "modelName", "models", "onProgress", "signal"] as const;

function validate(options: BakeOptions) {
  if (options === null || typeof options !== "object") throw new MergeError("INVALID_ARGUMENT", "bake() expects an options object");
  rejectUnknownKeys("options", options, OPTION_KEYS);
  if (!Array.isArray(options.loras) || options.loras.length === 0) throw new MergeError("INVALID_ARGUMENT", "loras must be a non-empty list of LoRA files");
  const te = options.te === undefined ? 1 : requireNumberInRange("te", options.te, -1e6, 1e6);
  const loras = options.loras.map((l, i) => {
    const spec: BakeLoraSpec = typeof l === "string" ? { path: l } : l;
    if (spec === null || typeof spec !== "object") throw new MergeError("INVALID_ARGUMENT", `loras[${i}] must be a path or { path, ratio, te }`);
    rejectUnknownKeys(`loras[${i}]`, spec, ["path", "ratio", "te", "name"]);
    const ratio = spec.ratio === undefined ? 1 : requireNumberInRange(`loras[${i}].ratio`, spec.ratio, -1e6, 1e6);
    const name = spec.name === undefined ? undefined : requireString(`loras[${i}].name`, spec.name);
    return { path: requireString(`loras[${i}].path`, spec.path), ratio, te: spec.te === undefined ? ratio * te : requireNumberInRange(`loras[${i}].te`, spec.te, -1e6, 1e6), ...(name !== undefined ? { name } : {}) };
  });
  optionalStringRecord("metadata", options.metadata);
  optionalFunction("onProgress", options.onProgress);
  optionalSignal("signal", options.signal);
  if (options.loraBlocks !== undefined && typeof options.loraBlocks !== "string" && !(Array.isArray(options.loraBlocks) && options.loraBlocks.every((v) => typeof v === "number"))) {
    throw new MergeError("INVALID_ARGUMENT", "loraBlocks must be block values as text (\"1,0,0,…\") or a list of numbers");
  }
  return {
    loras,
    model: requireString("model", options.model),
    out: requireString("out", options.out),
    dtype: options.dtype === undefined || options.dtype === "same" ? undefined : requireOneOf("dtype", options.dtype, OUTPUT_DTYPES),
    engine: resolveEngine(options.engine === undefined ? "auto" : requireOneOf("engine", options.engine, ["auto", "native", "js"] as const)),
    threads: options.threads === undefined ? defaultThreads() : requireInteger("threads", options.threads, 1, 1024),
    isa: options.isa === undefined ? "auto" as const : requireOneOf("isa", options.isa, ["auto", "scalar", "avx2", "avx512"] as const),
    overwrite: optionalBoolean("overwrite", options.overwrite) === true,
    recipe: optionalBoolean("recipeMetadata", options.recipeMetadata) !== false,
    modelName: options.modelName === undefined ? undefined : requireString("modelName", options.modelName),
  };
}

/** Bakes LoRAs into a checkpoint and writes the result (see the module comment). */
export async function bake(options: BakeOptions): Promise<BakeReport> {
  const started = Date.now();
  const stack = new Error().stack;
  try {
    const checked = validate(options);
    if (options.signal?.aborted) throw new MergeError("ABORTED", "the bake was cancelled before it started");
    const { signal, cancel } = cancellable(options.signal);
    const progress = options.onProgress ? new GuardedCallback(options.onProgress, cancel) : undefined;
    try {
      return await bakeChecked({ ...options, signal, ...(progress ? { onProgress: progress.call } : {}) }, checked, started);
    } catch (e) {
      progress?.check();
      throw e;
    } finally {
      discardPreparedOutput(checked.engine);
    }
  } catch (e) {
    if (e instanceof MergeError && stack) e.stack = `${e.name} [${e.code}]: ${e.message}\n${stack.split("\n").slice(1).join("\n")}`;
    throw e;
  }
}

async function bakeChecked(options: BakeOptions, checked: ReturnType<typeof validate>, started: number): Promise<BakeReport> {
  const { out, dtype, engine, threads, isa, overwrite } = checked;
  await checkTargets([out], [], overwrite);
  const cache = await HashCache.open();
  const modelPath = await resolveModel(checked.model, { cache, ...(options.models ? { dirs: options.models } : {}), ...(options.signal ? { signal: options.signal } : {}) });
  // The output windows are faulted in on a worker while the rest of this function plans the job.
  await prepareNativeOutput(engine, [modelPath]);
  const readFiles = await ProtectedFiles.of([{ path: modelPath, what: "the model" }, ...checked.loras.map((l, i) => ({ path: l.path, what: `LoRA ${i + 1}` }))]);
  await checkTargets([out], readFiles, overwrite);
  const base = await openModel(modelPath);
  const arch = identifyModel(base).architecture;
  const loras: LoraFile[] = [];
  for (const l of checked.loras) loras.push(await openLora(l.path));
  const blockWeight = options.loraBlocks === undefined ? undefined : loraBlockWeights(options.loraBlocks, arch);
  const inputs: BakeLoraInput[] = loras.map((lora, i) => ({ lora, ratio: checked.loras[i]!.ratio, teRatio: checked.loras[i]!.te, ...(blockWeight ? { blockWeight } : {}) }));
  const match = matchLoras(base, arch, inputs); // every refusal happens here, before anything is written

  const format = outputFormatForPath(out);
  const metadata = await bakeMetadata(options, checked, base, loras.map((l) => l.model), cache, format === "ckpt");
  const copy = planBoard({
    rows: [{ name: basename(out), method: resolveMethod("no-interpolation"), inputs: { a: { model: base } }, multipliers: [0], ...(dtype ? { dtype } : {}), outputs: [{ path: out, format, metadata }] }],
  });
  const tucker = planTucker([...match.contributions.values()].flat().map((c) => ({ module: c.module, path: loras[c.lora]!.path })), tempPathFor(out));
  const plan = withLoras(copy, loras.map((l) => l.model), match.contributions, base, tucker);
  await preflight(plan, overwrite, tucker ? [{ path: tucker.model.path, size: tucker.model.size }] : []);
  let run;
  try {
    await tucker?.write(options.signal);
    run = await executePlan(plan, {
      engine, threads, isa, overwrite,
      ...(options.onProgress ? { onProgress: (p: MergeProgress) => options.onProgress!({ phase: "merging", ...p }) } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    }, started);
  } finally {
    await tucker?.remove();
  }
  const warnings = match.loras.filter((m) => m.unmatched.length).map((m: LoraMatch) =>
    `${m.lora.path}: ${m.unmatched.length} of ${m.modules} modules match no tensor of the model and were left out (${m.unmatched.slice(0, 3).join(", ")}${m.unmatched.length > 3 ? ", …" : ""})`);
  return {
    model: { path: modelPath, architecture: arch, bytes: base.size },
    loras: match.loras.map((m, i) => ({ path: m.lora.path, ratio: checked.loras[i]!.ratio, te: checked.loras[i]!.te, architecture: m.architecture, modules: m.modules, matched: m.matched, unmatched: m.unmatched })),
    output: { path: out, bytes: plan.bytesToWrite },
    tensorsBaked: match.contributions.size,
    engine, isa: run.isa, threads: run.threads,
    seconds: (Date.now() - started) / 1000,
    bytesRead: plan.bytesToRead, bytesWritten: plan.bytesToWrite,
    nonFinite: run.nonFinite,
    warnings: [...warnings, ...nonFiniteWarnings(run.nonFinite)],
  };
}

/**
 * The copy plan with the LoRA files (and the Tucker factor file, lib/lora/tucker.ts) as extra
 * inputs, after the model and before any side files.
 */
export function withLoras(copy: BoardPlan, loraModels: ModelFile[], contributions: Parameters<typeof bakePieces>[1], base: ModelFile, tucker: TuckerFactors | undefined): BoardPlan {
  const first = copy.inputs.length;
  const extra = [...loraModels, ...(tucker ? [tucker.model] : [])];
  const shift = (file: number) => (file >= first ? file + extra.length : file);
  const side = tucker ? { file: first + loraModels.length, offsets: tucker.offsets } : undefined;
  return {
    ...copy,
    inputs: [...copy.inputs, ...extra],
    passes: copy.passes.map((p) => ({ outputs: p.outputs, get pieces() { return bakePieces(p.pieces, contributions, base, (i) => first + i, shift, side); } })),
    bytesToRead: copy.bytesToRead + extra.reduce((s, m) => s + m.size, 0),
  };
}

async function bakeMetadata(options: BakeOptions, checked: ReturnType<typeof validate>, base: ModelFile, loras: ModelFile[], cache: HashCache, ckpt: boolean): Promise<Record<string, string>> {
  const user = options.metadata ?? {};
  const plain = ckpt ? { ...user } : { format: "pt", ...user };
  if (!checked.recipe) return plain;
  const hash = async (path: string) => (await getFileHashes(path, { cache, ...(options.signal ? { signal: options.signal } : {}) })).sha256;
  const record = {
    model: { name: checked.modelName ?? basename(base.path), sha256: await hash(base.path) },
    loras: await Promise.all(loras.map(async (m, i) => ({ name: checked.loras[i]!.name ?? basename(m.path), sha256: await hash(m.path), ratio: checked.loras[i]!.ratio, te: checked.loras[i]!.te }))),
    ...(options.loraBlocks !== undefined ? { loraBlocks: options.loraBlocks } : {}),
    dtype: checked.dtype ?? "same",
  };
  return { ...plain, [BAKE_METADATA_KEY]: JSON.stringify(record) };
}
