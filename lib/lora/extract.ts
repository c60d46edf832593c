/**
 * `extractLora()`: a kohya-format LoRA from a fine-tune and its base, as kohya-ss sd-scripts
 * `networks/extract_lora_from_models.py` makes it: per target module (lib/lora/targets.ts)
 * ΔW = W_tuned − W_base, its rank-r truncated SVD, `up = U_r·diag(S_r)`, `down = V_rᵀ`,
 * r = min(rank, rows, cols) (`--conv-rank` for 3×3 convs, which are only extracted with it),
 * alpha = r (so scale 1), both factors clamped to ±(the 0.99 quantile of their values together),
 * and the text encoder left out when no text-encoder weight differs by more than `teThreshold`
 * (kohya's `min_diff`, 0.01). kohya does that with one log line; here the report and the CLI say
 * so, with the largest difference found. Our SVD is randomized with a fixed seed (svd.ts), in
 * double, run in a worker thread; the report gives each module's kept energy Σ S_r² / ‖ΔW‖²_F.
 */
import { open } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { basename } from "node:path";
import { Worker } from "node:worker_threads";
import { join } from "node:path";
import { DTYPE_SIZE, isMathDtype } from "../dtypes";
import { MergeError, fsError } from "../errors";
import { openModel } from "../formats";
import { HashCache, getFileHashes } from "../library/hash-cache";
import { ARCHITECTURES, identifyModel } from "../library/identify";
import { layoutSafetensors, type HeaderEntry } from "../formats/safetensors";
import type { ModelFile } from "../model";
import { ProtectedFiles, checkTargets, commitFile, removeQuietly, tempPathFor } from "../outputs";
import { optionalBoolean, optionalFunction, optionalSignal, rejectUnknownKeys, requireInteger, requireNumberInRange, requireOneOf, requireString } from "../validate";
import type { ExtractJob, ExtractMessage, ExtractModuleJob, ProbeJob } from "./extract-worker";
import { extractTargets, type ExtractTarget } from "./targets";

export interface ExtractOptions {
  tuned: string;
  base: string;
  /** Rank of linear and 1×1 modules (kohya's --dim). */
  rank: number;
  /** Rank of 3×3 convs; without it they are not extracted (kohya's --conv_dim). */
  convRank?: number;
  out: string;
  /** Saved dtype of the factors (default fp32, as kohya's default save precision "float"). */
  dtype?: "fp32" | "fp16" | "bf16";
  /** Text encoder kept only if some weight differs by more than this (default 0.01). */
  teThreshold?: number;
  /** Clamp quantile (default 0.99, kohya's); 1 turns the clamp off. */
  clampQuantile?: number;
  overwrite?: boolean;
  /** Write kohya's ss_* metadata and the base's hash (default true). */
  recipeMetadata?: boolean;
  /** Modules extracted at once, each in its own worker thread (default: every core). The output does not depend on it. */
  threads?: number;
  onProgress?: (p: { done: number; total: number; module: string; fraction: number }) => void;
  signal?: AbortSignal;
}

export interface ExtractReport {
  out: string;
  bytes: number;
  architecture: string;
  modules: { name: string; rank: number; rows: number; cols: number; keptEnergy: number }[];
  textEncoder: { included: boolean; maxDifference: number; threshold: number };
  seconds: number;
  warnings: string[];
}

const OPTION_KEYS = ["tuned", "base", "rank", "convRank", "out", "dtype", "teThreshold", "clampQuantile", "overwrite", "recipeMetadata", "threads", "onProgress", "signal"] as const;
const DTYPES = { fp32: "F32", fp16: "F16", bf16: "BF16" } as const;

/** The largest |W_tuned − W_base| over the targets' rows (kohya's text-encoder test), in the worker. */
async function maxAbsDifference(tuned: ModelFile, base: ModelFile, targets: ExtractTarget[], options: ExtractOptions): Promise<number> {
  const ranges = targets.map((t) => {
    const tt = tuned.byName.get(t.tensor.name)!;
    const cols = t.tensor.shape.slice(1).reduce((a, b) => a * b, 1);
    return { n: t.rowCount * cols, tunedOffset: tt.offset + t.rowStart * cols * DTYPE_SIZE[tt.dtype], tunedDtype: tt.dtype, baseOffset: t.tensor.offset + t.rowStart * cols * DTYPE_SIZE[t.tensor.dtype], baseDtype: t.tensor.dtype };
  });
  const [max] = await runInWorker({ probe: { tunedPath: tuned.path, basePath: base.path, ranges } }, options);
  return max!;
}

export async function extractLora(options: ExtractOptions): Promise<ExtractReport> {
  const started = Date.now();
  if (options === null || typeof options !== "object") throw new MergeError("INVALID_ARGUMENT", "extractLora() expects an options object");
  rejectUnknownKeys("options", options, OPTION_KEYS);
  const tunedPath = requireString("tuned", options.tuned), basePath = requireString("base", options.base), out = requireString("out", options.out);
  const rank = requireInteger("rank", options.rank, 1, 4096);
  const convRank = options.convRank === undefined ? undefined : requireInteger("convRank", options.convRank, 1, 4096);
  const dtype = DTYPES[options.dtype === undefined ? "fp32" : requireOneOf("dtype", options.dtype, ["fp32", "fp16", "bf16"] as const)];
  const teThreshold = options.teThreshold === undefined ? 0.01 : requireNumberInRange("teThreshold", options.teThreshold, 0, 1e6);
  const clampQuantile = options.clampQuantile === undefined ? 0.99 : requireNumberInRange("clampQuantile", options.clampQuantile, 0.5, 1);
  const overwrite = optionalBoolean("overwrite", options.overwrite) === true;
  optionalFunction("onProgress", options.onProgress);
  optionalSignal("signal", options.signal);
  const threads = options.threads === undefined ? availableParallelism() : requireInteger("threads", options.threads, 1, 256);

  await checkTargets([out], await ProtectedFiles.of([{ path: tunedPath, what: "the tuned model" }, { path: basePath, what: "the base model" }]), overwrite);
  const [tuned, base] = [await openModel(tunedPath), await openModel(basePath)];
  const arch = identifyModel(base).architecture, tunedArch = identifyModel(tuned).architecture;
  if (ARCHITECTURES[arch].family !== ARCHITECTURES[tunedArch].family) {
    throw new MergeError("ARCHITECTURE_MISMATCH", `${tunedPath} is ${ARCHITECTURES[tunedArch].label}, ${basePath} is ${ARCHITECTURES[arch].label}`, { path: tunedPath });
  }
  const all = extractTargets(base, arch, convRank !== undefined);
  if (all.length === 0) throw new MergeError("ARCHITECTURE_MISMATCH", `${basePath}: extracting a LoRA is supported for SD 1.x, SD 2.x and SDXL, not ${ARCHITECTURES[arch].label}`, { path: basePath });
  for (const t of all) {
    const other = tuned.byName.get(t.tensor.name);
    if (!other || other.shape.join() !== t.tensor.shape.join() || !isMathDtype(other.dtype) || !isMathDtype(t.tensor.dtype)) {
      throw new MergeError("SHAPE_MISMATCH", `${t.tensor.name}: ${other ? `[${other.shape}] ${other.dtype} in ${tunedPath}, [${t.tensor.shape}] ${t.tensor.dtype} in ${basePath}` : `missing in ${tunedPath}`}`, { path: tunedPath, tensor: t.tensor.name });
    }
  }
  const te = all.filter((t) => t.textEncoder);
  const maxDifference = te.length ? await maxAbsDifference(tuned, base, te, options) : 0;
  const teIncluded = maxDifference > teThreshold;
  const targets = teIncluded ? all : all.filter((t) => !t.textEncoder);
  const warnings = te.length && !teIncluded
    ? [`text encoder left out: its largest weight difference is ${maxDifference.toPrecision(3)}, not above the threshold ${teThreshold} (kohya's min_diff; kohya drops it the same way with only a log line). Lower --te-threshold to keep it`]
    : [];

  // Header first (shapes are known before any SVD), then the factors at their offsets.
  const entries: HeaderEntry[] = [];
  const shapes = targets.map((t) => {
    const s = t.tensor.shape;
    const cols = s.slice(1).reduce((a, b) => a * b, 1);
    const r = Math.min(t.conv3x3 ? convRank! : rank, t.rowCount, cols);
    const conv = s.length === 4;
    entries.push({ name: `${t.name}.alpha`, dtype, shape: [] });
    entries.push({ name: `${t.name}.lora_down.weight`, dtype, shape: conv ? [r, s[1]!, s[2]!, s[3]!] : [r, cols] });
    entries.push({ name: `${t.name}.lora_up.weight`, dtype, shape: conv ? [t.rowCount, r, 1, 1] : [t.rowCount, r] });
    return { r, cols };
  });
  const metadata: Record<string, string> = {};
  if (options.recipeMetadata !== false) {
    const cache = await HashCache.open();
    const sha = (await getFileHashes(basePath, { cache, ...(options.signal ? { signal: options.signal } : {}) })).sha256;
    Object.assign(metadata, {
      ss_network_module: "networks.lora",
      ss_network_dim: String(rank),
      ss_network_alpha: String(rank),
      ss_network_args: JSON.stringify(convRank !== undefined ? { conv_dim: String(convRank), conv_alpha: String(convRank) } : {}),
      ss_base_model_version: arch === "sdxl" ? "sdxl_base_v1-0" : arch === "sd2" ? "sd_v2" : "sd_v1",
      ss_v2: String(arch === "sd2"),
      ss_sd_model_name: basename(basePath),
      ss_new_sd_model_hash: sha,
      tensormerge_extract: JSON.stringify({ tuned: basename(tunedPath), base: basename(basePath), base_sha256: sha, rank, conv_rank: convRank ?? null, clamp_quantile: clampQuantile, text_encoder: teIncluded }),
    });
  }
  const layout = layoutSafetensors(entries, metadata);
  const modules: ExtractModuleJob[] = targets.map((t, i) => {
    const tt = tuned.byName.get(t.tensor.name)!;
    const { r, cols } = shapes[i]!;
    return {
      name: t.name, rows: t.rowCount, cols, rank: r, textEncoder: t.textEncoder,
      tunedOffset: tt.offset + t.rowStart * cols * DTYPE_SIZE[tt.dtype], tunedDtype: tt.dtype,
      baseOffset: t.tensor.offset + t.rowStart * cols * DTYPE_SIZE[t.tensor.dtype], baseDtype: t.tensor.dtype,
      alphaOffset: layout.offsets[3 * i]!, downOffset: layout.offsets[3 * i + 1]!, upOffset: layout.offsets[3 * i + 2]!,
    };
  });
  const temp = tempPathFor(out);
  const job: ExtractJob = { tunedPath, basePath, outPath: temp, header: layout.header, size: layout.size, modules, dtype, clampQuantile, seed: 0x5eed };
  try {
    const energies = await runInWorkers(job, threads, options);
    await commitFile(temp, out, overwrite);
    return {
      out, bytes: layout.size, architecture: arch,
      modules: modules.map((m, i) => ({ name: m.name, rank: m.rank, rows: m.rows, cols: m.cols, keptEnergy: energies[i]! })),
      textEncoder: { included: teIncluded, maxDifference, threshold: teThreshold },
      seconds: (Date.now() - started) / 1000,
      warnings,
    };
  } finally {
    await removeQuietly(temp);
  }
}

/**
 * Runs the modules in `threads` workers at once (each module's SVD is independent and seeded the
 * same way, so the bytes do not depend on the split): the largest modules first, each to the
 * worker with the least work so far. The temporary output is created here with its header; every
 * worker writes its modules' factors at their offsets.
 */
async function runInWorkers(job: ExtractJob, threads: number, options: ExtractOptions): Promise<number[]> {
  const order = job.modules.map((m, i) => ({ i, cost: m.rows * m.cols * m.rank })).sort((a, b) => b.cost - a.cost || a.i - b.i);
  const groups: number[][] = Array.from({ length: Math.max(1, Math.min(threads, job.modules.length)) }, () => []);
  const load = groups.map(() => 0);
  for (const { i, cost } of order) {
    const w = load.indexOf(Math.min(...load));
    groups[w]!.push(i);
    load[w]! += cost;
  }
  const handle = await open(job.outPath, "wx").catch((e) => { throw fsError(e, job.outPath, "creating"); });
  try {
    await handle.truncate(job.size);
    await handle.write(job.header, 0, job.header.length, 0);
  } finally {
    await handle.close();
  }
  const done = groups.map(() => 0);
  const total = job.modules.length;
  // One worker failing (or the caller's signal) stops them all before the temp file is removed.
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) stop.abort();
  const results = await Promise.all(groups.map((g, w) => runInWorker({ extract: { ...job, modules: g.map((i) => job.modules[i]!), outExists: true } }, {
    ...options,
    signal: stop.signal,
    onProgress: (p) => {
      done[w] = p.done;
      const all = done.reduce((a, b) => a + b, 0);
      options.onProgress?.({ done: all, total, module: p.module, fraction: total ? all / total : 1 });
    },
  }).catch((e: unknown) => {
    stop.abort();
    throw options.signal?.aborted ? new MergeError("ABORTED", "the extraction was cancelled") : e;
  }))).finally(() => options.signal?.removeEventListener("abort", onAbort));
  const energies = new Array<number>(total);
  groups.forEach((g, w) => g.forEach((i, k) => (energies[i] = results[w]![k]!)));
  return energies;
}

function runInWorker(data: { extract: ExtractJob } | { probe: ProbeJob }, options: ExtractOptions): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(join(__dirname, "extract-worker.js"), { workerData: data });
    let settled = false;
    const onAbort = () => { void worker.terminate(); };
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const finish = (f: () => void) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener("abort", onAbort);
      f();
    };
    worker.on("message", (m: ExtractMessage) => {
      if ("progress" in m) {
        try {
          options.onProgress?.({ done: m.progress.done, total: m.progress.total, module: m.progress.name, fraction: m.progress.total ? m.progress.done / m.progress.total : 1 });
        } catch (e) {
          void worker.terminate();
          finish(() => reject(e));
        }
        return;
      }
      if (m.ok) finish(() => resolve(m.energies));
      else finish(() => reject(new MergeError(m.error.code as MergeError["code"], m.error.message, { ...(m.error.path ? { path: m.error.path } : {}), ...(m.error.tensor ? { tensor: m.error.tensor } : {}) })));
    });
    worker.once("error", (e) => finish(() => reject(new MergeError("INTERNAL", `extract worker failed: ${e.message}`, { cause: e }))));
    worker.once("exit", (code) => finish(() => reject(options.signal?.aborted ? new MergeError("ABORTED", "the extraction was cancelled") : new MergeError("INTERNAL", `extract worker exited with code ${code}`))));
  });
}
