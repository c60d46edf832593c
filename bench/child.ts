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
import { merge, type MergeOptions } from "../lib/merge";
import { captureEngineStats, measure, runChild } from "./child-measure";

/** Storage bytes read and written on behalf of this process so far (every thread). */
function storageIo(): { readBytes: number; writeBytes: number } {
  const text = readFileSync("/proc/self/io", "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { readBytes: field("read_bytes"), writeBytes: field("write_bytes") };
}

runChild(async () => {
  const cgroup = process.env.TENSORMERGE_BENCH_CGROUP;
  if (cgroup) writeFileSync(join(cgroup, "cgroup.procs"), String(process.pid));
  const options = JSON.parse(process.argv[2] ?? "{}") as MergeOptions;
  const engineStats = captureEngineStats("last");
  // Load the addon before the clock starts (a one-time cost per process, not part of a merge).
  if (options.engine === "native") engine.nativeAvailable();
  const io0 = storageIo();
  const m = await measure(() => merge(options));
  const io1 = storageIo();
  const io = { readBytes: io1.readBytes - io0.readBytes, writeBytes: io1.writeBytes - io0.writeBytes };
  return { seconds: m.seconds, cpuSeconds: { user: m.cpuUser, system: m.cpuSystem }, report: m.result, engineStats: engineStats(), baseline: m.baseline, peak: m.peak, io };
});
