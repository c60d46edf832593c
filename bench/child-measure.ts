/**
 * What every bench child process (child.ts, lora-child.ts, hf-child.ts) does around its one job:
 * capture the engine's own stats (phase times, not part of any report), measure wall and CPU
 * time and memory (baseline before the job, peaks during it: RssAnon sampled every 10 ms,
 * VmHWM), and print one JSON line, or an `error` line and exit code 1. A fresh process per run
 * keeps the peaks honest: VmHWM would otherwise remember earlier runs.
 */
import { readFileSync } from "node:fs";
import * as engine from "../lib/engine";
import type { Job, JobResult } from "../lib/native/job";
import { MemorySampler, sampleMemory, type MemorySample } from "../lib/bench/memory";

export type EngineStats = Record<string, number>;

/**
 * Wraps engine.runJob (looked up on the module object at call time, so wrapping the export is
 * enough) and returns a getter of the stats: the last job's ("last"), or every job's summed with
 * a `jobs` count ("sum", for commands that run several jobs). A frozen module namespace leaves
 * the stats undefined.
 */
export function captureEngineStats(mode: "last" | "sum"): () => EngineStats | undefined {
  let stats: EngineStats | undefined;
  const mod = engine as unknown as { runJob: (job: Job, e: "native" | "js") => Promise<JobResult> };
  const original = mod.runJob;
  try {
    mod.runJob = async (job, e) => {
      const r = await original(job, e);
      if (mode === "last") {
        stats = r.stats;
      } else {
        const sum: EngineStats = stats ?? { jobs: 0 };
        sum.jobs = (sum.jobs ?? 0) + 1;
        for (const [k, v] of Object.entries(r.stats ?? {})) sum[k] = (sum[k] ?? 0) + v;
        stats = sum;
      }
      return r;
    };
  } catch {
    // A frozen module namespace: run without engine stats.
  }
  return () => stats;
}

export interface Measured<T> {
  result: T;
  seconds: number;
  /** CPU of every thread of the process, in seconds: less sensitive to other load than wall time. */
  cpuUser: number;
  cpuSystem: number;
  /** Bytes the process made the kernel read from storage during `work` (/proc/self/io read_bytes; 0 if unknown). */
  diskReadBytes: number;
  baseline: MemorySample;
  peak: ReturnType<MemorySampler["stop"]>;
}

function storageReadBytes(): number {
  try {
    const m = /^read_bytes:\s*(\d+)/m.exec(readFileSync("/proc/self/io", "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Runs `work` with the clock, the CPU counters and the memory sampler around it. */
export async function measure<T>(work: () => Promise<T>): Promise<Measured<T>> {
  const baseline = sampleMemory();
  const sampler = new MemorySampler("self", 10);
  sampler.start();
  const read0 = storageReadBytes();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const result = await work();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const peak = sampler.stop();
  return { result, seconds, cpuUser: cpu.user / 1e6, cpuSystem: cpu.system / 1e6, diskReadBytes: storageReadBytes() - read0, baseline, peak };
}

/** Runs a child's main: its JSON line on success, `{"error": {code, message}}` and exit code 1 on failure. */
export function runChild(main: () => Promise<Record<string, unknown>>): void {
  main().then(
    (line) => {
      process.stdout.write(JSON.stringify(line) + "\n");
    },
    (e: unknown) => {
      const err = e as { code?: string; message?: string };
      process.stdout.write(JSON.stringify({ error: { code: err.code ?? "INTERNAL", message: err.message ?? String(e) } }) + "\n");
      process.exitCode = 1;
    },
  );
}
