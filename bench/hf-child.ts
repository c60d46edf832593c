/**
 * Runs one `tensormerge mergekit` merge (runMergekit, the function behind the CLI command) in a
 * fresh process and prints one JSON line: wall and CPU time, the report, and memory (the Node
 * baseline before the merge, peaks during it: RssAnon sampled every 10 ms, VmHWM). A fresh
 * process per run keeps the peaks honest.
 *
 *   node dist/bench/hf-child.js '{"config": "ties.yml", "out": "./out", "shardSize": "5GB", "threads": 2}'
 */
import * as engine from "../lib/engine";
import type { Job, JobResult } from "../lib/native/job";
import { MemorySampler, sampleMemory } from "../lib/bench/memory";
import { runMergekit, type MergekitOptions } from "../lib/hf/mergekit";
import { readFileSync } from "node:fs";

/** Bytes this process made the kernel read from storage so far (/proc/self/io read_bytes; 0 if unknown). */
function storageReadBytes(): number {
  try {
    const m = /^read_bytes:\s*(\d+)/m.exec(readFileSync("/proc/self/io", "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? "{}") as MergekitOptions;
  // runJob is looked up on the module object at call time, so wrapping the export is enough.
  let engineStats: Record<string, number> | undefined;
  const mod = engine as unknown as { runJob: (job: Job, e: "native" | "js") => Promise<JobResult> };
  const original = mod.runJob;
  try {
    mod.runJob = async (job, e) => {
      const r = await original(job, e);
      const sum: Record<string, number> = engineStats ?? { jobs: 0 };
      sum.jobs = (sum.jobs ?? 0) + 1;
      for (const [k, v] of Object.entries(r.stats ?? {})) sum[k] = (sum[k] ?? 0) + v;
      engineStats = sum;
      return r;
    };
  } catch {
    // A frozen module namespace: run without engine stats.
  }
  engine.nativeAvailable(); // load the addon before the clock starts
  const baseline = sampleMemory();
  const sampler = new MemorySampler("self", 10);
  sampler.start();
  const read0 = storageReadBytes();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const report = await runMergekit({ ...options, engine: "native" });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const peak = sampler.stop();
  const diskReadBytes = storageReadBytes() - read0;
  const { stats: _stats, ...rest } = report as typeof report & { stats?: unknown };
  process.stdout.write(JSON.stringify({ seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, cpuUser: cpu.user / 1e6, cpuSystem: cpu.system / 1e6, diskReadBytes, report: rest, engineStats, baseline, peak }) + "\n");
}

main().catch((e: unknown) => {
  const err = e as { code?: string; message?: string };
  process.stdout.write(JSON.stringify({ error: { code: err.code ?? "INTERNAL", message: err.message ?? String(e) } }) + "\n");
  process.exitCode = 1;
});
