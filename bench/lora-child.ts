/**
 * Runs one bake or LoRA extraction in a fresh process (so peak memory is this run's) and prints
 * one JSON line: wall and CPU time, the report, memory (baseline before, peaks during: VmHWM and
 * private anonymous RssAnon sampled every 10 ms).
 *
 * usage: node dist/bench/lora-child.js '{"bake": <BakeOptions>}' | '{"extract": <ExtractOptions>}'
 */
import * as engine from "../lib/engine";
import { bake, type BakeOptions, type BakeReport } from "../lib/lora/bake";
import { extractLora, type ExtractOptions, type ExtractReport } from "../lib/lora/extract";
import { captureEngineStats, measure, runChild } from "./child-measure";

runChild(async () => {
  const task = JSON.parse(process.argv[2] ?? "{}") as { bake?: BakeOptions; extract?: ExtractOptions };
  const engineStats = captureEngineStats("last"); // phase times, not part of BakeReport
  if (task.bake?.engine !== "js") engine.nativeAvailable(); // load the addon before the clock starts
  const m = await measure<BakeReport | ExtractReport>(() => (task.bake ? bake(task.bake) : extractLora(task.extract!)));
  return { seconds: m.seconds, cpuSeconds: m.cpuUser + m.cpuSystem, userSeconds: m.cpuUser, systemSeconds: m.cpuSystem, report: m.result, engineStats: engineStats(), baseline: m.baseline, peak: m.peak };
});
