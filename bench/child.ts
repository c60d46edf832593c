/**
 * Runs one merge in a fresh process and prints one JSON line: wall and CPU time of merge(), its report,
 * the engine's own timings, and memory (baseline before the merge, peaks during it). A fresh
 * process per run keeps peaks honest: VmHWM would otherwise remember earlier runs.
 *
 * usage: node dist/bench/child.js '<MergeOptions as JSON>'
 *
 * TENSORMERGE_BENCH_CGROUP=<cgroup folder>: the child first moves itself into that (memory)
 * cgroup, so the page cache its merge fills is capped (bench/sweep.ts). The line also carries
 * the bytes the process made the kernel read from and write to storage (/proc/self/io).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as engine from "../lib/engine";
import { MemorySampler, sampleMemory } from "../lib/bench/memory";
import { merge, type MergeOptions } from "../lib/merge";
import type { Job, JobResult } from "../lib/native/job";

/** Storage bytes read and written on behalf of this process so far (every thread). */
function storageIo(): { readBytes: number; writeBytes: number } {
  const text = readFileSync("/proc/self/io", "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { readBytes: field("read_bytes"), writeBytes: field("write_bytes") };
}

async function main(): Promise<void> {
  const cgroup = process.env.TENSORMERGE_BENCH_CGROUP;
  if (cgroup) writeFileSync(join(cgroup, "cgroup.procs"), String(process.pid));
  const options = JSON.parse(process.argv[2] ?? "{}") as MergeOptions;
  // Capture the engine's stats (not part of MergeReport): runJob is looked up on the module
  // object at call time, so wrapping the export is enough.
  let engineStats: Record<string, number> | undefined;
  const mod = engine as unknown as { runJob: (job: Job, e: "native" | "js") => Promise<JobResult> };
  const original = mod.runJob;
  try {
    mod.runJob = async (job, e) => {
      const r = await original(job, e);
      engineStats = r.stats;
      return r;
    };
  } catch {
    // A frozen module namespace: run without engine stats.
  }
  // Load the addon before the clock starts (a one-time cost per process, not part of a merge).
  if (options.engine === "native") engine.nativeAvailable();
  const baseline = sampleMemory();
  const sampler = new MemorySampler("self", 10);
  sampler.start();
  const io0 = storageIo();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const report = await merge(options);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0); // every thread of the process: less sensitive to other load than wall time
  const peak = sampler.stop();
  const io1 = storageIo();
  const io = { readBytes: io1.readBytes - io0.readBytes, writeBytes: io1.writeBytes - io0.writeBytes };
  const cpuSeconds = { user: cpu.user / 1e6, system: cpu.system / 1e6 };
  process.stdout.write(JSON.stringify({ seconds, cpuSeconds, report, engineStats, baseline, peak, io }) + "\n");
}

main().catch((e: unknown) => {
  const err = e as { code?: string; message?: string };
  process.stdout.write(JSON.stringify({ error: { code: err.code ?? "INTERNAL", message: err.message ?? String(e) } }) + "\n");
  process.exitCode = 1;
});
