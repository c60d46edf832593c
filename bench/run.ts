/**
 * `npm run bench`: full-size merges against the I/O floor measured in the same run.
 *
 * For each scenario (bench/scenarios.ts), each cache state (warm: inputs read just before;
 * cold: inputs evicted from the page cache) and each repetition, it measures the floor once
 * (bench/floor.c: read the same input bytes, write the same number of output bytes, no math)
 * and then every variant of the merge (native on all cores, native on 1 thread, TS engine),
 * each merge in a fresh process that reports its own time and memory. Ratios pair each merge
 * with the floor of its own repetition. See bench/README.md for the options.
 */
import { execSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { copyFile, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { formatMiB, gbPerSecond, summarize, textTable, type Summary } from "../lib/bench/stats";
import type { MemorySample } from "../lib/bench/memory";
import type { MergeOptions, MergeReport } from "../lib/merge";
import { resolveMethod } from "../lib/methods/registry";
import { buildFloorTool, evictFiles, floorTechniques, residency, runFloor, warmFiles, type FloorResult, type FloorTechnique } from "./floor";
import { claimBenchFolder, cleanModels, defaultLayoutsDir, ensureModels, freeBytes, GB, modelPath, modelSize, type ModelSpec } from "./models";
import { DEFAULT_SCENARIOS, scenarioById, type Scenario } from "./scenarios";
import { writeResultsMarkdown } from "./report";
import { hfBenchMain, isHfScenario } from "./hf-llm";
import { cappedRead, hasTorchWay, torchWay, type CappedRead, type TorchWay } from "./many-extras";

export type CacheState = "warm" | "cold";

export interface Variant {
  id: string;
  engine: "native" | "js";
  threads: number;
}

export interface BenchOptions {
  dir: string;
  layoutsDir: string;
  scenarios: string[];
  runs: number;
  /** Repetitions of the TS engine (it is slow): at most `runs`. */
  jsRuns: number;
  caches: CacheState[];
  /** Thread counts of the native engine. */
  threads: number[];
  js: boolean;
  /** Shrink factor of the layouts (1 = full size; the smoke test uses tiny models). */
  shrink: number;
  budgetBytes: number;
  minFreeBytes: number;
  /** "evict": fadvise(DONTNEED) our files (default); "drop": drop the whole page cache (root). */
  coldMethod: "evict" | "drop";
  /** Extra environment for the merge processes (engine tuning knobs, for A/B runs). */
  engineEnv: Record<string, string>;
  /** The native engine's kernel set (merge option `isa`), for example "avx2" on an AVX-512 CPU; default auto. */
  isa?: NonNullable<MergeOptions["isa"]>;
  /** Restrict the floor to these techniques (default: calibrate over all of them). */
  floorTechniques?: FloorTechnique[];
  /** Many-model scenarios: one more cold merge in a memory cgroup capped at this many GiB (bytes read ÷ inputs). */
  cappedGiB?: number;
  /** ties scenarios: the same TIES the way whole-tensor tools do it (bench/ties_torch_way.py), warm. */
  torchWay?: boolean;
  jsonPath?: string;
  resultsPath?: string;
  label?: string;
  command: string;
  log: (line: string) => void;
}

export interface Measurement {
  scenario: string;
  variant: string;
  cache: CacheState;
  rep: number;
  seconds: number;
  /** CPU time of the whole merge process (user + system, all threads). */
  cpuSeconds: { user: number; system: number };
  floorSeconds: number;
  ratio: number;
  load1: number;
  residency: number;
  baseline: MemorySample;
  peak: MemorySample;
  engineStats?: Record<string, number>;
  report?: Pick<MergeReport, "isa" | "threads" | "bytesRead" | "bytesWritten" | "engine">;
}

export interface FloorMeasurement extends FloorResult {
  scenario: string;
  cache: CacheState;
  rep: number;
  load1: number;
  residency: number;
  calibration: boolean;
}

export interface RowResult {
  scenario: string;
  title: string;
  variant: string;
  engine: "native" | "js";
  threads: number;
  cache: CacheState;
  bytesRead: number;
  bytesWritten: number;
  merge: Summary;
  /** CPU seconds (user + system) of the merge process. */
  cpu: Summary;
  floor: Summary;
  ratio: Summary;
  load: Summary;
  residency: number;
  peakRss: number;
  peakAnon: number;
  baselineAnon: number;
  isa: string;
  floorTechnique: string;
  floorLimit: "read" | "write";
  stats: Record<string, number>;
  limit: string;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryBytes: number;
  flags: string[];
  kernel: string;
  node: string;
  disk: string;
}

/** Which native engine ran: a snapshot of the addon, so a rebuild during the run changes nothing. */
export interface EngineInfo {
  addon: string;
  sha256: string;
  /** `git log -1 -- native` and whether native/ had uncommitted changes when the snapshot was taken. */
  nativeCommit: string;
  nativeDirty: boolean;
}

export interface BenchResults {
  label?: string;
  engine?: EngineInfo;
  command: string;
  date: string;
  machine: MachineInfo;
  options: Omit<BenchOptions, "log" | "command">;
  writeCalibration: FloorResult[];
  floors: FloorMeasurement[];
  measurements: Measurement[];
  rows: RowResult[];
  cappedReads?: CappedRead[];
  torchWays?: TorchWay[];
  seconds: number;
}

const INTERESTING_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16"];

export function machineInfo(dir: string): MachineInfo {
  let flags: string[] = [];
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const line = /^flags\s*:\s*(.*)$/m.exec(info)?.[1] ?? "";
    const all = new Set(line.split(/\s+/));
    flags = INTERESTING_FLAGS.filter((f) => all.has(f));
  } catch {
    // not Linux
  }
  let disk = "";
  try {
    disk = execSync(`df -h --output=source,fstype,size ${JSON.stringify(dir)} | tail -1`, { encoding: "utf8" }).trim().replace(/\s+/g, " ");
  } catch {
    // no df
  }
  return { cpu: cpus()[0]?.model ?? "?", cores: availableParallelism(), memoryBytes: totalmem(), flags, kernel: release(), node: process.version, disk };
}

export function techniqueName(t: FloorTechnique): string {
  return `${t.read}×${t.readers}${t.ahead ? ` ahead ${t.ahead}` : ""}${t.dropBehind ? " drop-behind" : ""} + ${t.write}`;
}

const REPO = join(__dirname, "..", "..");

/** Copies the addon the merges would load into the bench folder and points the children at it. */
async function snapshotAddon(dir: string, env: Record<string, string>): Promise<EngineInfo | undefined> {
  const source = env.TENSORMERGE_NATIVE ?? process.env.TENSORMERGE_NATIVE ?? join(REPO, "build", "Release", "tensormerge.node");
  if (!existsSync(source)) return undefined;
  const addon = join(dir, "tensormerge-snapshot.node");
  await rm(addon, { force: true });
  await copyFile(source, addon);
  env.TENSORMERGE_NATIVE = addon;
  const git = (args: string) => {
    try {
      return execSync(`git ${args}`, { cwd: REPO, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      return "";
    }
  };
  return {
    addon: source,
    sha256: createHash("sha256").update(readFileSync(addon)).digest("hex").slice(0, 16),
    nativeCommit: git("log -1 --format=%h%x20%s -- native"),
    nativeDirty: git("status --porcelain -- native CMakeLists.txt").length > 0,
  };
}

function scaled(spec: ModelSpec, shrink: number): ModelSpec {
  return shrink > 1 ? { ...spec, shrink } : spec;
}

/** Runs one merge in a child process. */
export function runMergeChild(options: MergeOptions, env: Record<string, string>): Promise<{ seconds: number; cpuSeconds: { user: number; system: number }; report: MergeReport; engineStats?: Record<string, number>; baseline: MemorySample; peak: MemorySample; io: { readBytes: number; writeBytes: number } }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(__dirname, "child.js"), JSON.stringify(options)], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      const last = out.trim().split("\n").pop() ?? "";
      let parsed: { error?: { code: string; message: string } } & Record<string, unknown>;
      try {
        parsed = JSON.parse(last) as typeof parsed;
      } catch {
        reject(new Error(`merge child exited with ${code}: ${err || out}`));
        return;
      }
      if (parsed.error) reject(new Error(`merge failed: ${parsed.error.code}: ${parsed.error.message}`));
      else resolvePromise(parsed as never);
    });
  });
}

function meanResidency(paths: string[]): number {
  const r = residency(paths);
  const values = paths.map((p) => r[p] ?? 0);
  return values.reduce((s, v) => s + v, 0) / Math.max(1, values.length);
}

export function dropAllCaches(): void {
  execSync("sync; echo 3 > /proc/sys/vm/drop_caches", { stdio: "ignore" });
}

/** Puts the inputs in the wanted cache state; returns the mean fraction resident afterwards. */
export function prepareCache(paths: string[], cache: CacheState, method: "evict" | "drop"): number {
  if (cache === "warm") {
    warmFiles(paths);
    return meanResidency(paths);
  }
  if (method === "drop") dropAllCaches();
  else evictFiles(paths);
  let r = meanResidency(paths);
  if (r > 0.01 && method === "evict") {
    try {
      dropAllCaches();
      r = meanResidency(paths);
    } catch {
      // not root: report the residency as measured
    }
  }
  return r;
}

function variantsFor(scenario: Scenario, options: BenchOptions): Variant[] {
  const out: Variant[] = [];
  const seen = new Set<number>();
  for (const t of options.threads) {
    if (seen.has(t)) continue;
    seen.add(t);
    out.push({ id: `native-${t}t`, engine: "native", threads: t });
  }
  // the TS engine with the most threads asked for (it shares chunks out to worker threads)
  if (options.js && scenario.js) out.push({ id: "js", engine: "js", threads: Math.max(1, ...options.threads) });
  return out;
}

export function mergeOptionsFor(scenario: Scenario, inputs: string[], out: string, variant: Variant, isa?: MergeOptions["isa"]): MergeOptions {
  const [a, b, c] = inputs;
  const many = resolveMethod(scenario.method).many !== undefined;
  return {
    ...(many ? { base: a!, models: inputs.slice(1) } : { a: a!, ...(b ? { b } : {}), ...(c ? { c } : {}) }),
    ...(scenario.params ? { params: scenario.params } : {}),
    method: scenario.method,
    ...(scenario.multiplier !== undefined ? { multiplier: scenario.multiplier } : {}),
    ...(scenario.beta !== undefined ? { beta: scenario.beta } : {}),
    dtype: scenario.dtype,
    out,
    engine: variant.engine,
    threads: variant.threads,
    ...(isa && variant.engine === "native" ? { isa } : {}),
    // The recipe metadata would hash every input on its first run (cached afterwards): a
    // one-off cost of the library, not of the merge being measured.
    recipeMetadata: false,
  };
}

function outputBytesOf(scenario: Scenario, layoutsDir: string, shrink: number): number {
  // The output keeps A's layout with float tensors converted: compute it from the model size
  // of A and the dtypes (float tensors scale by out/in element size).
  const a = scaled(scenario.models[0]!, shrink);
  const size = modelSize(layoutsDir, a);
  if (scenario.dtype === "same") return size;
  const outElem = scenario.dtype === "fp32" ? 4 : 2;
  const inElem = a.layout === "sdxl" || a.layout === "sd15_fp16_pruned" ? 2 : 4;
  return Math.round((size * outElem) / inElem);
}

/**
 * What bounds a row, from the floor's own read/write split and the engine's timings: the
 * writer busy nearly all the run means the disk's writes; compute threads busy means CPU
 * (warm) or waiting on input page faults (cold).
 */
export function limitOf(row: Omit<RowResult, "limit">): string {
  const floorPart = row.floorLimit === "write" ? "disk write" : row.cache === "cold" ? "disk read" : "page-cache read";
  if (row.engine === "js") return "TS compute";
  if (row.ratio.median <= 1.15) return `at the floor (${floorPart})`;
  const s = row.stats;
  const total = s.seconds ?? row.merge.median;
  const compute = s.secondsCompute ?? 0;
  const write = s.secondsWrite ?? 0;
  const wait = s.secondsWaitWriter ?? 0;
  if (write > 0.85 * total || wait > 0.5 * total) return row.cache === "cold" ? "disk (writes share it with the reads)" : "output writes";
  if (compute > 0.5 * total) return row.cache === "cold" ? "input reads (page faults wait on the disk)" : row.threads === 1 ? "compute (1 thread)" : "compute (CPU)";
  return "mixed";
}

function summarizeRows(options: BenchOptions, scenarios: Scenario[], floors: FloorMeasurement[], measurements: Measurement[]): RowResult[] {
  const rows: RowResult[] = [];
  for (const scenario of scenarios) {
    for (const cache of options.caches) {
      for (const variant of variantsFor(scenario, options)) {
        const ms = measurements.filter((m) => m.scenario === scenario.id && m.cache === cache && m.variant === variant.id);
        if (ms.length === 0) continue;
        const fs = floors.filter((f) => f.scenario === scenario.id && f.cache === cache && !f.calibration);
        const chosen = fs[0];
        const statKeys = new Set(ms.flatMap((m) => Object.keys(m.engineStats ?? {})));
        const stats: Record<string, number> = {};
        for (const k of statKeys) stats[k] = summarize(ms.map((m) => m.engineStats?.[k] ?? NaN)).median;
        const base = {
          scenario: scenario.id,
          title: scenario.title,
          variant: variant.id,
          engine: variant.engine,
          threads: variant.threads,
          cache,
          bytesRead: ms[0]!.report?.bytesRead ?? 0,
          bytesWritten: ms[0]!.report?.bytesWritten ?? 0,
          merge: summarize(ms.map((m) => m.seconds)),
          cpu: summarize(ms.map((m) => m.cpuSeconds.user + m.cpuSeconds.system)),
          floor: summarize(ms.map((m) => m.floorSeconds)),
          ratio: summarize(ms.map((m) => m.ratio)),
          load: summarize(ms.map((m) => m.load1)),
          residency: ms.reduce((s, m) => s + m.residency, 0) / ms.length,
          peakRss: Math.max(...ms.map((m) => m.peak.hwm ?? m.peak.rss ?? NaN)),
          peakAnon: Math.max(...ms.map((m) => m.peak.anon ?? NaN)),
          baselineAnon: Math.max(...ms.map((m) => m.baseline.anon ?? NaN)),
          isa: ms[0]!.report?.isa ?? "",
          floorTechnique: chosen ? techniqueName(chosen) : "",
          floorLimit: (chosen && chosen.readSeconds > chosen.writeSeconds ? "read" : "write") as "read" | "write",
          stats,
        };
        rows.push({ ...base, limit: limitOf(base) });
      }
    }
  }
  return rows;
}

export function formatRows(rows: RowResult[]): string {
  const table: string[][] = [["scenario", "engine", "cache", "merge", "cpu", "floor", "merge/floor", "GB/s", "peak RSS", "peak anon", "limit"]];
  for (const r of rows) {
    table.push([
      r.scenario,
      r.engine === "js" ? `ts ${r.threads}t` : `native ${r.threads}t`,
      r.cache,
      `${r.merge.median.toFixed(2)} s ±${(r.merge.spread * 50).toFixed(0)}%`,
      `${r.cpu.median.toFixed(2)} s`,
      `${r.floor.median.toFixed(2)} s`,
      r.ratio.median.toFixed(2),
      gbPerSecond(r.bytesRead + r.bytesWritten, r.merge.median).toFixed(2),
      formatMiB(r.peakRss),
      formatMiB(r.peakAnon),
      r.limit,
    ]);
  }
  return textTable(table, [false, false, false, true, true, true, true, true, true, true, false]);
}

async function removeOutputs(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith("out-") || name.startsWith("floor-") || name.includes(".tensormerge-") || name === "tensormerge-snapshot.node") await rm(join(dir, name), { force: true });
  }
}

export async function runBench(options: BenchOptions): Promise<BenchResults> {
  await mkdir(options.dir, { recursive: true });
  const release = claimBenchFolder(options.dir);
  try {
    return await runBenchIn(options);
  } finally {
    release();
  }
}

async function runBenchIn(options: BenchOptions): Promise<BenchResults> {
  const started = Date.now();
  const log = options.log;
  await removeOutputs(options.dir);
  buildFloorTool();
  const machine = machineInfo(options.dir);
  const engineEnv = { ...options.engineEnv };
  const engine = await snapshotAddon(options.dir, engineEnv);
  if (engine) log(`engine: ${engine.addon} (sha256 ${engine.sha256}), native/ at ${engine.nativeCommit}${engine.nativeDirty ? " + uncommitted changes" : ""}`);
  const scenarios = options.scenarios.map(scenarioById);
  log(`tensormerge bench: ${scenarios.length} scenario(s), ${options.runs} run(s) each, caches ${options.caches.join("+")}, folder ${options.dir}`);
  log(`machine: ${machine.cpu}, ${machine.cores} cores, ${(machine.memoryBytes / 2 ** 30).toFixed(1)} GiB, ${machine.flags.join(" ")}`);

  // Write technique: O_DIRECT vs buffered, once, on the largest output (capped at 2 GB).
  const probeBytes = Math.min(2e9, Math.max(...scenarios.map((s) => outputBytesOf(s, options.layoutsDir, options.shrink))));
  const writeCalibration: FloorResult[] = [];
  for (const write of ["direct", "buffered"] as const) {
    writeCalibration.push(runFloor({ inputs: [], outPath: join(options.dir, "floor-probe"), outBytes: probeBytes, technique: { read: "read", write, readers: 1, ahead: 0 } }));
  }
  const bestWrite = [...writeCalibration].sort((x, y) => x.seconds - y.seconds)[0]!.write;
  log(`write probe (${(probeBytes / GB).toFixed(2)} GB): ${writeCalibration.map((w) => `${w.write} ${gbPerSecond(w.bytesWritten, w.seconds).toFixed(2)} GB/s`).join(", ")} → ${bestWrite}`);

  const floors: FloorMeasurement[] = [];
  const measurements: Measurement[] = [];
  const cappedReads: CappedRead[] = [];
  const torchWays: TorchWay[] = [];
  for (let si = 0; si < scenarios.length; si++) {
    const scenario = scenarios[si]!;
    const specs = scenario.models.map((m) => scaled(m, options.shrink));
    const keep = scenarios.slice(si + 1).flatMap((s) => s.models.map((m) => scaled(m, options.shrink)));
    const outBytes = outputBytesOf(scenario, options.layoutsDir, options.shrink);
    log(`\n== ${scenario.id}: ${scenario.title}`);
    const inputs = await ensureModels(specs, { dir: options.dir, layoutsDir: options.layoutsDir, keep, budgetBytes: options.budgetBytes, reserveBytes: outBytes, minFreeBytes: options.minFreeBytes, log });
    if (freeBytes(options.dir) < outBytes * 1.05 + options.minFreeBytes / 4) throw new Error(`not enough free space for the ${(outBytes / GB).toFixed(2)} GB output of ${scenario.id}`);
    const variants = variantsFor(scenario, options);
    const out = join(options.dir, `out-${scenario.id}.safetensors`);
    const floorOut = join(options.dir, "floor-out");
    for (const cache of options.caches) {
      let technique: FloorTechnique | undefined;
      let exactOut: number | undefined;
      for (let rep = 0; rep < options.runs; rep++) {
        const repMeasurements: Measurement[] = [];
        for (const variant of variants) {
          if (variant.engine === "js" && rep >= options.jsRuns) continue;
          await rm(out, { force: true });
          const res = prepareCache(inputs, cache, options.coldMethod);
          const load1 = loadavg()[0]!;
          const r = await runMergeChild(mergeOptionsFor(scenario, inputs, out, variant, options.isa), engineEnv);
          await rm(out, { force: true });
          exactOut ??= r.report.bytesWritten;
          const m: Measurement = {
            scenario: scenario.id, variant: variant.id, cache, rep, seconds: r.seconds, cpuSeconds: r.cpuSeconds, floorSeconds: NaN, ratio: NaN, load1, residency: res,
            baseline: r.baseline, peak: r.peak,
            ...(r.engineStats ? { engineStats: r.engineStats } : {}),
            report: { isa: r.report.isa, threads: r.report.threads, bytesRead: r.report.bytesRead, bytesWritten: r.report.bytesWritten, engine: r.report.engine },
          };
          repMeasurements.push(m);
          measurements.push(m);
        }
        // The floor of this repetition, for the same output size (the first one calibrates the read technique).
        const candidates = technique ? [technique] : (options.floorTechniques ?? floorTechniques(machine.cores, cache, bestWrite));
        let best: FloorMeasurement | undefined;
        for (const t of candidates) {
          const res = prepareCache(inputs, cache, options.coldMethod);
          const load1 = loadavg()[0]!;
          const f = runFloor({ inputs, outPath: floorOut, outBytes: exactOut ?? outBytes, technique: t });
          const m: FloorMeasurement = { ...f, scenario: scenario.id, cache, rep, load1, residency: res, calibration: candidates.length > 1 };
          floors.push(m);
          if (!best || m.seconds < best.seconds) best = m;
        }
        if (!technique) {
          technique = { read: best!.read, write: best!.write, readers: best!.readers, ahead: best!.ahead, ...(best!.dropBehind ? { dropBehind: true } : {}) };
          if (candidates.length > 1) {
            floors.push({ ...best!, calibration: false });
            log(`  floor (${cache}) calibration: ${floors.filter((f) => f.scenario === scenario.id && f.cache === cache && f.calibration).map((f) => `${techniqueName(f)} ${f.seconds.toFixed(2)} s`).join(", ")} → ${techniqueName(technique)}`);
          }
        }
        for (const m of repMeasurements) {
          m.floorSeconds = best!.seconds;
          m.ratio = m.seconds / best!.seconds;
          log(`  ${cache} #${rep + 1} ${m.variant.padEnd(10)} ${m.seconds.toFixed(2).padStart(7)} s  cpu ${(m.cpuSeconds.user + m.cpuSeconds.system).toFixed(2)} s  floor ${m.floorSeconds.toFixed(2)} s  ratio ${m.ratio.toFixed(2)}  anon ${formatMiB(m.peak.anon)}  load ${m.load1.toFixed(1)}  cached ${(m.residency * 100).toFixed(0)}%`);
        }
      }
    }
    const many = resolveMethod(scenario.method).many !== undefined;
    const allCores = variants.filter((v) => v.engine === "native").sort((x, y) => y.threads - x.threads)[0];
    if (many && allCores && (options.cappedGiB ?? 0) > 0) {
      const r = await cappedRead(scenario, inputs, mergeOptionsFor(scenario, inputs, out, allCores, options.isa), engineEnv, options.cappedGiB! * 2 ** 30, () => prepareCache(inputs, "cold", options.coldMethod), runMergeChild, log);
      if (r) cappedReads.push(r);
    }
    if (options.torchWay && hasTorchWay(scenario)) {
      prepareCache(inputs, "warm", options.coldMethod);
      const t = await torchWay(scenario, inputs, options.dir, log);
      const ours = measurements.filter((m) => m.scenario === scenario.id && m.cache === "warm" && m.variant === allCores?.id);
      if (t) {
        torchWays.push(t);
        if (ours.length) {
          const s = summarize(ours.map((m) => m.seconds)).median, anon = Math.max(...ours.map((m) => m.peak.anon ?? NaN));
          log(`  ours (warm, ${allCores!.id}) took ${(s / t.seconds).toFixed(3)}× the torch way's time and ${(anon / t.peakAnon).toFixed(3)}× its peak private memory`);
        }
      }
    }
  }
  await removeOutputs(options.dir);

  const rows = summarizeRows(options, scenarios, floors, measurements);
  const { log: _log, command, ...rest } = options;
  const results: BenchResults = {
    ...(options.label ? { label: options.label } : {}),
    ...(engine ? { engine } : {}),
    command,
    date: new Date().toISOString(),
    machine,
    options: rest,
    writeCalibration,
    floors,
    measurements,
    rows,
    ...(cappedReads.length ? { cappedReads } : {}),
    ...(torchWays.length ? { torchWays } : {}),
    seconds: (Date.now() - started) / 1000,
  };
  log(`\n${formatRows(rows)}\n`);
  if (options.jsonPath) await writeFile(options.jsonPath, JSON.stringify(results, null, 1) + "\n");
  if (options.resultsPath) await writeResultsMarkdown(options.resultsPath, results);
  return results;
}

const HELP = `Usage: npm run bench -- [options]

Full-size merges vs the I/O floor (see bench/README.md).

  --dir DIR            model folder (default: ${join(tmpdir(), "tensormerge-bench")})
  --layouts DIR        layout JSON folder (default: ../shared/layouts)
  --scenarios LIST     comma-separated ids (default: ${DEFAULT_SCENARIOS.join(",")});
                       slerp-mistral7b,ties-mistral7b run the language-model bench (bench/hf-llm.ts, --help there)
  --runs N             repetitions per scenario and cache state (default 3)
  --js-runs N          repetitions of the TS engine (default 2)
  --cache LIST         warm,cold (default both)
  --threads LIST       native thread counts, "all" = every core (default 1,all)
  --no-js              skip the TS engine
  --shrink N           shrink the layouts by N (tiny models, for smoke runs)
  --budget-gb N        most GB of models + outputs in the folder (default 35)
  --min-free-gb N      free space to leave on the disk (default 25)
  --cold drop|evict    how to empty the cache: drop the whole page cache or evict our files (default evict)
  --env K=V            environment for the merge processes (engine tuning), repeatable
  --isa NAME           the native engine's kernels: auto (default), scalar, avx2, avx512
  --json FILE          write every measurement as JSON
  --results FILE       update the generated part of a RESULTS.md
  --label TEXT         a label stored with the results
  --capped-gib N       many-model scenarios: one more cold merge in a memory cgroup capped at N GiB
                       (root), reporting the bytes read from disk ÷ the input bytes
  --torch-way          the same merge with PyTorch over whole state dicts, warm, time and peak
                       memory: ties scenarios as mergekit computes TIES (bench/ties_torch_way.py),
                       weighted sum and add difference as AUTOMATIC1111's checkpoint merger
                       (bench/a1111_way.py)
  --clean              delete the models and outputs in the folder, then exit
`;

export async function main(argv: string[]): Promise<number> {
  // The language-model scenarios (Hugging Face folders, mergekit configs) have their own runner.
  const asked = argv.find((a, i) => argv[i - 1] === "--scenarios" || a.startsWith("--scenarios="))?.replace(/^--scenarios=/, "");
  if (asked?.split(",").some(isHfScenario)) return hfBenchMain(argv);
  // `npm run bench -- --lora [options]`: the LoRA bench (bench/lora.ts), its own options.
  if (argv.includes("--lora")) return (await import("./lora")).loraMain(argv.filter((a) => a !== "--lora"));
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: "string" }, layouts: { type: "string" }, scenarios: { type: "string" }, runs: { type: "string" }, "js-runs": { type: "string" },
      cache: { type: "string" }, threads: { type: "string" }, "no-js": { type: "boolean" }, shrink: { type: "string" }, "budget-gb": { type: "string" },
      "min-free-gb": { type: "string" }, cold: { type: "string" }, env: { type: "string", multiple: true }, isa: { type: "string" }, json: { type: "string" }, results: { type: "string" },
      label: { type: "string" }, clean: { type: "boolean" }, help: { type: "boolean", short: "h" }, "capped-gib": { type: "string" }, "torch-way": { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const dir = resolve(values.dir ?? join(tmpdir(), "tensormerge-bench"));
  if (values.clean) {
    const n = await cleanModels(dir);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    process.stdout.write(`removed ${n} file(s) and ${dir}\n`);
    return 0;
  }
  const num = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  const cores = availableParallelism();
  const engineEnv: Record<string, string> = {};
  for (const kv of values.env ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`--env expects KEY=VALUE, got ${kv}`);
    engineEnv[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const runs = num(values.runs, 3);
  const isas = ["auto", "scalar", "avx2", "avx512"] as const;
  const isa = isas.find((name) => name === values.isa);
  if (values.isa !== undefined && !isa) throw new Error(`--isa expects one of ${isas.join(", ")}, got ${values.isa}`);
  await runBench({
    dir,
    layoutsDir: resolve(values.layouts ?? defaultLayoutsDir()),
    scenarios: (values.scenarios ?? DEFAULT_SCENARIOS.join(",")).split(",").filter(Boolean),
    runs,
    jsRuns: Math.min(runs, num(values["js-runs"], 2)),
    caches: (values.cache ?? "warm,cold").split(",").filter(Boolean) as CacheState[],
    threads: (values.threads ?? "1,all").split(",").map((t) => (t === "all" ? cores : Number(t))),
    js: !values["no-js"],
    shrink: num(values.shrink, 1),
    budgetBytes: num(values["budget-gb"], 35) * GB,
    minFreeBytes: num(values["min-free-gb"], 25) * GB,
    coldMethod: values.cold === "drop" ? "drop" : "evict",
    engineEnv,
    ...(isa ? { isa } : {}),
    ...(values["capped-gib"] ? { cappedGiB: Number(values["capped-gib"]) } : {}),
    ...(values["torch-way"] ? { torchWay: true } : {}),
    ...(values.json ? { jsonPath: resolve(values.json) } : {}),
    ...(values.results ? { resultsPath: resolve(values.results) } : {}),
    ...(values.label ? { label: values.label } : {}),
    command: `npm run bench -- ${argv.join(" ")}`.trim(),
    log: (line) => process.stdout.write(`${line}\n`),
  });
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`bench: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}

export { modelPath };
