/**
 * Runs one `tensormerge mergekit` merge (runMergekit, the function behind the CLI command) in a
 * fresh process and prints one JSON line: wall and CPU time, the report, and memory (the Node
 * baseline before the merge, peaks during it: RssAnon sampled every 10 ms, VmHWM). A fresh
 * process per run keeps the peaks honest.
 *
 *   node dist/bench/hf-child.js '{"config": "ties.yml", "out": "./out", "shardSize": "5GB", "threads": 2}'
 */
import * as engine from "../lib/engine";
import { runMergekit, type MergekitOptions } from "../lib/hf/mergekit";
import { captureEngineStats, measure, runChild } from "./child-measure";

runChild(async () => {
  const options = JSON.parse(process.argv[2] ?? "{}") as MergekitOptions;
  const engineStats = captureEngineStats("sum"); // one job per output shard group: summed
  engine.nativeAvailable(); // load the addon before the clock starts
  const m = await measure(() => runMergekit({ ...options, engine: "native" }));
  const { stats: _stats, ...rest } = m.result as typeof m.result & { stats?: unknown };
  return { seconds: m.seconds, cpuSeconds: m.cpuUser + m.cpuSystem, cpuUser: m.cpuUser, cpuSystem: m.cpuSystem, diskReadBytes: m.diskReadBytes, report: rest, engineStats: engineStats(), baseline: m.baseline, peak: m.peak };
});
