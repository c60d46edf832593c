/**
 * `tensormerge bench`: how fast the native engine, the TS engine and the plain I/O floor are on
 * the user's own machine and models, in about a minute. Outputs go to a temporary folder that
 * is removed afterwards; the inputs are only read. A run that would take longer than the time
 * budget is stopped and its total time extrapolated from its progress.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { DTYPE_SIZE, OUTPUT_DTYPE_TO_DTYPE, isMathDtype, type OutputDtype } from "../dtypes";
import { nativeAvailable } from "../engine";
import { MergeError } from "../errors";
import { openModel } from "../formats";
import { merge, type MergeOptions, type MergeReport } from "../merge";
import { resolveMethod, type MethodName } from "../methods/registry";
import { numelOf } from "../model";
import { ioFloor, warmFiles } from "./floor";
import { MemorySampler } from "./memory";
import { gbPerSecond, textTable, formatMiB } from "./stats";

export interface UserBenchOptions {
  a: string;
  b?: string;
  c?: string;
  /** Default: add-difference with C, weighted-sum with B, else no-interpolation. */
  method?: MethodName;
  multiplier?: number;
  /** Default fp16 (the usual "save as float16" merge). */
  dtype?: OutputDtype | "same";
  /** Default: native (when available) and js. */
  engines?: ("native" | "js")[];
  /** Time budget per measurement, seconds (default 20). */
  seconds?: number;
  threads?: number;
  /** Parent of the temporary folder (default: the system temp folder). */
  tmp?: string;
  /** Read the inputs before each measurement so every one starts with the same warm cache (default true when they fit in half the RAM). */
  warm?: boolean;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface UserBenchRow {
  name: "native" | "ts" | "floor";
  /** Full-job seconds: measured, or extrapolated when the time budget stopped the run. */
  seconds: number;
  measuredSeconds: number;
  complete: boolean;
  /** (input + output bytes) per second, decimal GB. */
  gbPerSecond: number;
  /** seconds / floor seconds. */
  ratio: number;
  peakRss?: number;
  peakAnon?: number;
  detail: string;
}

export interface UserBenchResult {
  method: MethodName;
  bytesRead: number;
  bytesWritten: number;
  warm: boolean;
  rows: UserBenchRow[];
}

/** Output bytes of the merge, from A's header (used when no engine finished). */
async function estimateOutputBytes(a: string, dtype: OutputDtype | "same"): Promise<number> {
  const model = await openModel(a);
  let bytes = model.headerLength;
  for (const t of model.tensors) {
    bytes += dtype !== "same" && isMathDtype(t.dtype) ? numelOf(t.shape) * DTYPE_SIZE[OUTPUT_DTYPE_TO_DTYPE[dtype]] : t.byteLength;
  }
  return bytes;
}

interface TimedMerge {
  report?: MergeReport;
  seconds: number;
  measuredSeconds: number;
  complete: boolean;
  peakRss?: number;
  peakAnon?: number;
}

async function timedMerge(options: MergeOptions, budgetSeconds: number, signal?: AbortSignal): Promise<TimedMerge> {
  const budget = new AbortController();
  const timer = setTimeout(() => budget.abort(), budgetSeconds * 1000);
  const onOuter = () => budget.abort();
  signal?.addEventListener("abort", onOuter, { once: true });
  let fraction = 0;
  const sampler = new MemorySampler("self", 20);
  sampler.start();
  const t0 = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9;
  try {
    const report = await merge({ ...options, signal: budget.signal, onProgress: (p) => (fraction = p.fraction) });
    const s = elapsed();
    const peak = sampler.stop();
    return { report, seconds: s, measuredSeconds: s, complete: true, ...(peak.rss !== undefined ? { peakRss: peak.rss } : {}), ...(peak.anon !== undefined ? { peakAnon: peak.anon } : {}) };
  } catch (e) {
    const s = elapsed();
    const peak = sampler.stop();
    if (signal?.aborted || !(e instanceof MergeError && e.code === "ABORTED")) throw e;
    return { seconds: fraction > 0 ? s / fraction : Infinity, measuredSeconds: s, complete: false, ...(peak.rss !== undefined ? { peakRss: peak.rss } : {}), ...(peak.anon !== undefined ? { peakAnon: peak.anon } : {}) };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onOuter);
  }
}

/**
 * Measures native vs TS engine vs the I/O floor on the user's models.
 *
 * @example
 * const r = await runUserBench({ a: "base.safetensors", b: "style.safetensors", log: console.log });
 * console.log(formatUserBench(r));
 */
export async function runUserBench(options: UserBenchOptions): Promise<UserBenchResult> {
  const log = options.log ?? (() => undefined);
  const methodName: MethodName = options.method ?? (options.c ? "add-difference" : options.b ? "weighted-sum" : "no-interpolation");
  const method = resolveMethod(methodName);
  const slots = { a: options.a, b: options.b, c: options.c };
  const inputs = method.inputs.map((s) => {
    const p = slots[s];
    if (!p) throw new MergeError("INVALID_ARGUMENT", `${method.name} needs model ${s.toUpperCase()} (option ${s})`);
    return p;
  });
  const dtype = options.dtype ?? "fp16";
  const budget = options.seconds ?? 20;
  const engines = options.engines ?? (nativeAvailable() ? ["native", "js"] : ["js"]);
  const models = await Promise.all(inputs.map((p) => openModel(p)));
  const bytesInput = models.reduce((s, m) => s + m.size, 0);
  const warm = options.warm ?? bytesInput <= totalmem() / 2;
  const dir = await mkdtemp(join(options.tmp ?? tmpdir(), "tensormerge-bench-"));
  const prepare = async () => {
    if (warm) await warmFiles(inputs);
  };
  log(`${method.name} of ${inputs.length} model(s), ${(bytesInput / 1e9).toFixed(2)} GB of input, ${warm ? "warm page cache (inputs read before each run)" : "inputs larger than half the RAM: reads come from disk"}; up to ${budget} s per run, outputs in ${dir}`);
  try {
    const base: MergeOptions = {
      a: options.a, method: method.name as MethodName, dtype,
      ...(options.b && method.inputs.includes("b") ? { b: options.b } : {}),
      ...(options.c && method.inputs.includes("c") ? { c: options.c } : {}),
      ...(options.multiplier !== undefined ? { multiplier: options.multiplier } : {}),
      ...(options.threads !== undefined ? { threads: options.threads } : {}),
      out: "",
      // No recipe metadata: it would hash uncached inputs inside the first timed merge.
      recipeMetadata: false,
    };
    const merges: { name: "native" | "ts"; run: TimedMerge }[] = [];
    let bytesWritten: number | undefined, bytesRead: number | undefined;
    let preallocated: string | undefined; // a finished output the floor may write over
    const runEngine = async (engine: "native" | "js") => {
      await prepare();
      log(`running the ${engine === "js" ? "TS" : "native"} engine...`);
      const out = join(dir, `${engine}.safetensors`);
      const run = await timedMerge({ ...base, engine, out }, budget, options.signal);
      if (run.complete && !preallocated) preallocated = out;
      else await rm(out, { force: true });
      if (run.report) {
        bytesWritten ??= run.report.bytesWritten;
        bytesRead ??= run.report.bytesRead;
      }
      merges.push({ name: engine === "js" ? "ts" : "native", run });
    };
    if (engines.includes("native")) await runEngine("native");

    bytesWritten ??= await estimateOutputBytes(options.a, dtype);
    await prepare();
    log("measuring the I/O floor (same bytes read and written, no math)...");
    const floor = await ioFloor({
      inputs, outPath: preallocated ?? join(dir, "floor.bin"), outBytes: bytesWritten, maxSeconds: budget,
      ...(preallocated ? { overwrite: true } : {}), ...(options.signal ? { signal: options.signal } : {}),
    });
    preallocated = undefined;
    if (engines.includes("js")) await runEngine("js");
    bytesRead ??= bytesInput;

    const moved = bytesRead + bytesWritten;
    const rows: UserBenchRow[] = [];
    for (const { name, run } of merges) {
      rows.push({
        name, seconds: run.seconds, measuredSeconds: run.measuredSeconds, complete: run.complete, gbPerSecond: gbPerSecond(moved, run.seconds), ratio: run.seconds / floor.seconds,
        ...(run.peakRss !== undefined ? { peakRss: run.peakRss } : {}), ...(run.peakAnon !== undefined ? { peakAnon: run.peakAnon } : {}),
        detail: run.report ? `${run.report.isa}, ${run.report.threads} thread${run.report.threads > 1 ? "s" : ""}` : "",
      });
    }
    rows.push({
      name: "floor", seconds: floor.seconds, measuredSeconds: floor.measuredSeconds, complete: floor.complete, gbPerSecond: gbPerSecond(moved, floor.seconds), ratio: 1,
      detail: `read ${(floor.readBytesPerSecond / 1e9).toFixed(2)} GB/s, write ${(floor.writeBytesPerSecond / 1e9).toFixed(2)} GB/s${floor.directIo ? " (O_DIRECT)" : ""}`,
    });
    return { method: method.name as MethodName, bytesRead, bytesWritten, warm, rows };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatUserBench(r: UserBenchResult): string {
  const table = [["", "time", "GB/s (in+out)", "× floor", "peak RSS", "peak private", "notes"]];
  for (const row of r.rows) {
    table.push([
      row.name === "ts" ? "TS engine" : row.name === "native" ? "native engine" : "I/O floor",
      `${row.complete ? "" : "~"}${row.seconds.toFixed(2)} s`,
      row.gbPerSecond.toFixed(2),
      row.ratio.toFixed(2),
      formatMiB(row.peakRss),
      formatMiB(row.peakAnon),
      `${row.detail}${row.complete ? "" : `${row.detail ? "; " : ""}stopped after ${row.measuredSeconds.toFixed(0)} s, extrapolated`}`,
    ]);
  }
  return `${textTable(table, [false, true, true, true, true, true, false])}\n` +
    `read ${(r.bytesRead / 1e9).toFixed(2)} GB, wrote ${(r.bytesWritten / 1e9).toFixed(2)} GB per run; peak memory is the whole process (Node included)\n`;
}
