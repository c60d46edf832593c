/**
 * Sweeps and "each input is read once": one weighted-sum merge of two full-size SD 1.5 fp32
 * models with several multipliers (one output each, written in the same pass), run with the
 * outputs interleaved (the default) and one after another (TENSORMERGE_INTERLEAVE=0), beside
 * the same merge with a single multiplier. Each run starts with the inputs out of the page cache
 * and reports the bytes the kernel really read from storage for the merge process
 * (/proc/<pid>/io read_bytes), as a multiple of the input bytes.
 *
 * The merge process runs in a memory cgroup capped at --cache-limit-gib (default 3 GiB), which
 * caps the page cache it may fill: the inputs (8.5 GB) cannot all stay cached, as on a user's
 * machine merging SDXL fp32 models (3 × 13 GB) in 16–32 GB of RAM. Without a writable memory
 * cgroup (not root), it runs uncapped and says so; --cache-limit-gib 0 runs uncapped on purpose.
 *
 * usage: see USAGE below.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { formatMiB, formatSummary, summarize, textTable, type Summary } from "../lib/bench/stats";
import { defaultLayoutsDir, ensureModels, GB, GiB, type ModelSpec } from "./models";
import { prepareCache, runMergeChild } from "./run";

const USAGE = `usage: node dist/bench/sweep.js [--dir DIR] [--layouts DIR] [--values 0.2,0.4,0.6] [--runs 3]
                                [--cache-limit-gib 3] [--cold evict|drop]
  --cache-limit-gib N  memory cgroup cap of each merge process, page cache included (0: uncapped)
  --cold evict|drop    before each run, evict the inputs from the page cache (posix_fadvise; the
                       default, dropping every cache as root where that is not enough) or drop it all
`;

interface Mode {
  label: string;
  multipliers: number[];
  env: Record<string, string>;
}

/** A memory cgroup (v1 or v2) capped at `limit` bytes, or undefined when none can be made. */
export function makeMemoryCgroup(limit: number): { path: string; remove: () => void } | undefined {
  const candidates: [string, string][] = [
    ["/sys/fs/cgroup/memory", "memory.limit_in_bytes"], // v1 (or hybrid)
    ["/sys/fs/cgroup", "memory.max"], // v2
  ];
  for (const [root, limitFile] of candidates) {
    const controllers = join(root, "cgroup.controllers");
    if (limitFile === "memory.max" && !(existsSync(controllers) && readFileSync(controllers, "utf8").includes("memory"))) continue;
    const path = join(root, `tensormerge-bench-${process.pid}`);
    try {
      mkdirSync(path);
      writeFileSync(join(path, limitFile), String(limit));
      return { path, remove: () => rmdirSync(path) };
    } catch {
      try {
        rmdirSync(path);
      } catch {
        // never created
      }
    }
  }
  return undefined;
}

export interface SweepBenchOptions {
  dir: string;
  layoutsDir: string;
  /** The multipliers of the sweep (the single merge uses the first). */
  values: number[];
  runs: number;
  /** Cap of the merge process's memory cgroup, bytes (0: uncapped). */
  cacheLimitBytes: number;
  coldMethod: "evict" | "drop";
  log: (line: string) => void;
}

export interface SweepBenchRow {
  label: string;
  outputs: number;
  seconds: Summary;
  /** Storage bytes read by the merge process ÷ input bytes, median. */
  readRatio: number;
  peakAnon: number;
}

export async function runSweepBench(options: SweepBenchOptions): Promise<{ capped: boolean; rows: SweepBenchRow[] }> {
  const { dir, values: sweep, runs, cacheLimitBytes: limit, log } = options;
  const specs: ModelSpec[] = [{ layout: "sd15", seed: 1 }, { layout: "sd15", seed: 2 }];
  const inputs = await ensureModels(specs, { dir, layoutsDir: options.layoutsDir, keep: specs, budgetBytes: 35 * GB, reserveBytes: sweep.length * 2.2 * GB, minFreeBytes: 0, log });
  const inputBytes = inputs.reduce((s, p) => s + statSync(p).size, 0);
  const cgroup = limit > 0 ? makeMemoryCgroup(limit) : undefined;
  if (cgroup) log(`merge processes run in ${cgroup.path}, capped at ${(limit / GiB).toFixed(1)} GiB (page cache included)`);
  else log(limit > 0 ? "no writable memory cgroup: running uncapped (the inputs may stay cached)" : "uncapped: the page cache may keep the inputs");

  const modes: Mode[] = [
    { label: `1 value`, multipliers: [sweep[0]!], env: {} },
    { label: `${sweep.length} values, interleaved`, multipliers: sweep, env: { TENSORMERGE_INTERLEAVE: "1" } },
    { label: `${sweep.length} values, one after another`, multipliers: sweep, env: { TENSORMERGE_INTERLEAVE: "0" } },
  ];
  const results = modes.map(() => ({ seconds: [] as number[], readRatio: [] as number[], anon: [] as number[] }));
  const outDir = join(dir, "sweep-out");
  try {
    for (let r = 0; r < runs; r++) {
      for (const [i, mode] of modes.entries()) {
        await rm(outDir, { recursive: true, force: true });
        mkdirSync(outDir, { recursive: true });
        const resident = prepareCache(inputs, "cold", options.coldMethod);
        const env = { ...mode.env, ...(cgroup ? { TENSORMERGE_BENCH_CGROUP: cgroup.path } : {}) };
        const run = await runMergeChild(
          { a: inputs[0]!, b: inputs[1]!, method: "weighted-sum", multiplier: mode.multipliers, dtype: "fp16", out: join(outDir, "sweep.safetensors"), engine: "native", recipeMetadata: false },
          env,
        );
        const ratio = run.io.readBytes / inputBytes;
        results[i]!.seconds.push(run.seconds);
        results[i]!.readRatio.push(ratio);
        results[i]!.anon.push(run.peak.anon ?? NaN);
        log(`run ${r + 1}/${runs} ${mode.label}: ${run.seconds.toFixed(2)} s, read ${(run.io.readBytes / GB).toFixed(2)} GB (${ratio.toFixed(2)}× the inputs; ${(resident * 100).toFixed(1)}% cached at start), ${(await readdir(outDir)).length} output(s)`);
      }
    }
  } finally {
    await rm(outDir, { recursive: true, force: true });
    cgroup?.remove();
  }
  const rows = modes.map((m, i) => ({
    label: m.label,
    outputs: m.multipliers.length,
    seconds: summarize(results[i]!.seconds),
    readRatio: summarize(results[i]!.readRatio).median,
    peakAnon: Math.max(...results[i]!.anon),
  }));
  return { capped: cgroup !== undefined, rows };
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: "string" }, layouts: { type: "string" }, values: { type: "string" }, runs: { type: "string" }, "cache-limit-gib": { type: "string" },
      cold: { type: "string" }, help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const limit = Number(values["cache-limit-gib"] ?? 3) * GiB;
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const { capped, rows } = await runSweepBench({
    dir: resolve(values.dir ?? join(tmpdir(), "tensormerge-bench")),
    layoutsDir: values.layouts ?? defaultLayoutsDir(),
    values: (values.values ?? "0.2,0.4,0.6").split(",").map(Number),
    runs: Number(values.runs ?? 3),
    cacheLimitBytes: limit,
    coldMethod: values.cold === "drop" ? "drop" : "evict",
    log,
  });
  const table = [[`merge (2 × SD 1.5 fp32 → fp16, cold, ${capped ? `cache capped at ${(limit / GiB).toFixed(1)} GiB` : "uncapped"})`, "time (median, spread)", "read from disk ÷ inputs", "peak private"]];
  for (const r of rows) table.push([r.label, formatSummary(r.seconds), `${r.readRatio.toFixed(2)}×`, formatMiB(r.peakAnon)]);
  log("");
  log(textTable(table, [false, true, true, true]));
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`bench sweep: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
