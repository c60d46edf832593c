/**
 * Extra rows for the many-model scenarios of issue 11 (bench/run.ts `--capped-gib`, `--torch-way`):
 *  - bytes read from disk under a memory cap: one cold native merge (all cores) in a memory
 *    cgroup capped at N GiB, page cache included (bench/sweep.ts makeMemoryCgroup; root only),
 *    so the inputs cannot all stay cached; the merge process's storage reads (/proc/<pid>/io
 *    read_bytes) ÷ the input bytes says whether each input byte came from the disk once;
 *  - the same merge the way whole-state-dict tools do it, warm, its time and peak memory beside
 *    our warm merge: TIES as mergekit computes it (bench/ties_torch_way.py), and the classic
 *    weighted sum and add difference as AUTOMATIC1111's checkpoint merger runs them
 *    (bench/a1111_way.py); real PyTorch, every input's whole state dict in RAM.
 */
import { spawn } from "node:child_process";
import { statSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { MemorySampler, type MemorySample } from "../lib/bench/memory";
import type { MergeOptions } from "../lib/merge";
import { makeMemoryCgroup } from "./sweep";
import type { Scenario } from "./scenarios";
import { GiB } from "./models";

export interface CappedRead {
  scenario: string;
  capBytes: number;
  seconds: number;
  inputBytes: number;
  readBytes: number;
  readRatio: number;
  peak: MemorySample;
  residencyAtStart: number;
}

export interface TorchWay {
  scenario: string;
  seconds: number;
  secondsLoad: number;
  secondsMerge: number;
  secondsWrite: number;
  /** Peak private memory (RssAnon sampled every 10 ms) and peak RSS (ru_maxrss). */
  peakAnon: number;
  peakRss: number;
  threads: number;
}

type ChildRun = (options: MergeOptions, env: Record<string, string>) => Promise<{ seconds: number; peak: MemorySample; io: { readBytes: number } }>;

/** One cold merge in a capped memory cgroup; undefined when no cgroup can be made (not root). */
export async function cappedRead(scenario: Scenario, inputs: string[], options: MergeOptions, env: Record<string, string>, capBytes: number, evict: () => number, runChild: ChildRun, log: (s: string) => void): Promise<CappedRead | undefined> {
  const cgroup = makeMemoryCgroup(capBytes);
  if (!cgroup) {
    log(`  capped read: no writable memory cgroup (root needed), skipped`);
    return undefined;
  }
  try {
    await rm(options.out as string, { force: true });
    const residencyAtStart = evict();
    const r = await runChild(options, { ...env, TENSORMERGE_BENCH_CGROUP: cgroup.path });
    await rm(options.out as string, { force: true });
    const inputBytes = inputs.reduce((s, p) => s + statSync(p).size, 0);
    const row = { scenario: scenario.id, capBytes, seconds: r.seconds, inputBytes, readBytes: r.io.readBytes, readRatio: r.io.readBytes / inputBytes, peak: r.peak, residencyAtStart };
    log(`  cold, memory capped at ${(capBytes / GiB).toFixed(1)} GiB: ${r.seconds.toFixed(2)} s, read ${(r.io.readBytes / 1e9).toFixed(2)} GB from disk = ${row.readRatio.toFixed(3)}× the ${(inputBytes / 1e9).toFixed(2)} GB of inputs, peak anon ${((r.peak.anon ?? NaN) / 2 ** 20).toFixed(0)} MiB`);
    return row;
  } finally {
    cgroup.remove();
  }
}

/** The scenarios `--torch-way` has a whole-state-dict counterpart for. */
export function hasTorchWay(scenario: Scenario): boolean {
  return scenario.method === "ties" || scenario.method === "weighted-sum" || scenario.method === "add-difference";
}

/**
 * The scenario's merge the way whole-state-dict tools do it: bench/ties_torch_way.py (base first,
 * the scenario's density and λ) for TIES, bench/a1111_way.py (A, B[, C], the multiplier, "save as
 * float16" when the scenario writes fp16) for the classic methods.
 */
export async function torchWay(scenario: Scenario, inputs: string[], dir: string, log: (s: string) => void): Promise<TorchWay | undefined> {
  if (!hasTorchWay(scenario)) return undefined;
  const ties = scenario.method === "ties";
  const scriptName = ties ? "ties_torch_way.py" : "a1111_way.py";
  const script = resolve(__dirname, "..", "..", "bench", scriptName);
  const out = join(dir, "out-torch-way.safetensors");
  await rm(out, { force: true });
  const args = ties
    ? [String(scenario.params?.density ?? 1), String(scenario.multiplier ?? 1)]
    : [scenario.method, String(scenario.multiplier ?? 0.5), scenario.dtype === "fp16" ? "1" : "0"];
  const py = spawn("/usr/bin/python3", [script, out, ...args, ...inputs], { stdio: ["ignore", "pipe", "inherit"] });
  const sampler = new MemorySampler(py.pid!, 10);
  sampler.start();
  let stdout = "";
  py.stdout.on("data", (d) => (stdout += d));
  const code = await new Promise<number>((res) => py.on("exit", (c) => res(c ?? 1)));
  const peak = sampler.stop();
  await rm(out, { force: true });
  if (code !== 0) {
    log(`  the torch way (bench/${scriptName}) failed (exit ${code}; python3-torch missing, or out of memory?)`);
    return undefined;
  }
  const r = JSON.parse(stdout.trim().split("\n").pop()!) as { seconds: number; secondsLoad: number; secondsMerge: number; secondsWrite: number; peakRss: number; threads: number };
  const row = { scenario: scenario.id, ...r, peakAnon: peak.anon ?? NaN };
  log(`  the torch way (bench/${scriptName}: whole state dicts, PyTorch ${r.threads} threads): ${r.seconds.toFixed(1)} s (load ${r.secondsLoad.toFixed(1)}, merge ${r.secondsMerge.toFixed(1)}, write ${r.secondsWrite.toFixed(1)}), peak anon ${(row.peakAnon / 2 ** 20).toFixed(0)} MiB, peak RSS ${(r.peakRss / 2 ** 20).toFixed(0)} MiB`);
  return row;
}
