/**
 * Runs one bake or LoRA extraction in a fresh process (so peak memory is this run's) and prints
 * one JSON line: wall and CPU time, the report, memory (baseline before, peaks during: VmHWM and
 * private anonymous RssAnon sampled every 10 ms).
 *
 * usage: node dist/bench/lora-child.js '{"bake": <BakeOptions>}' | '{"extract": <ExtractOptions>}'
 */
import * as engine from "../lib/engine";
import type { Job, JobResult } from "../lib/native/job";
import { MemorySampler, sampleMemory } from "../lib/bench/memory";
import { bake, type BakeOptions } from "../lib/lora/bake";
import { extractLora, type ExtractOptions } from "../lib/lora/extract";

async function main(): Promise<void> {
  const task = JSON.parse(process.argv[2] ?? "{}") as { bake?: BakeOptions; extract?: ExtractOptions };
  // The engine's own stats (phase times, not part of BakeReport), as bench/child.ts captures them.
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
  if (task.bake?.engine !== "js") engine.nativeAvailable(); // load the addon before the clock starts
  const baseline = sampleMemory();
  const sampler = new MemorySampler("self", 10);
  sampler.start();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const report = task.bake ? await bake(task.bake) : await extractLora(task.extract!);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const peak = sampler.stop();
  process.stdout.write(JSON.stringify({ seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, userSeconds: cpu.user / 1e6, systemSeconds: cpu.system / 1e6, report, engineStats, baseline, peak }) + "\n");
}

main().catch((e: unknown) => {
  const err = e as { code?: string; message?: string };
  process.stdout.write(JSON.stringify({ error: { code: err.code ?? "INTERNAL", message: err.message ?? String(e) } }) + "\n");
  process.exitCode = 1;
});
