/**
 * Back-to-back A/B of the native engine's cold input reader (prefetch.h merge_input_reader):
 * one add-difference of 3 SD 1.5 fp32 models → fp32 (--method add-difference), or a SLERP of
 * 2 → fp16 (--method slerp), private copies in --dir (so no other process caches them), inputs evicted before every merge, variants (environments: knobs, or an older
 * addon via TENSORMERGE_NATIVE) taken in turn round after round, each round also timing the
 * floor (bench/floor.c) with buffered reads + drop-behind and with O_DIRECT reads: ratios are
 * to the round's best floor, CPU seconds (user + system) are per merge.
 *
 *   node dist/bench/reader-ab.js --dir DIR [--method add-difference|slerp] [--shrink 2] [--rounds 3] [--out-json FILE]
 *     --variant 'label:K=V,K=V' ...
 * Without --variant: the reader forced with drop-behind (the >RAM/2 regime), buffered vs direct.
 */
import { rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { evictFiles, runFloor, type FloorResult, type FloorTechnique } from "./floor";
import { defaultLayoutsDir, ensureModels, GB, modelSize, type ModelSpec } from "./models";
import { runMergeChild } from "./run";

interface Variant { label: string; env: Record<string, string> }

function parseVariant(text: string): Variant {
  const colon = text.indexOf(":");
  const label = colon < 0 ? text : text.slice(0, colon);
  const env: Record<string, string> = {};
  for (const kv of (colon < 0 ? "" : text.slice(colon + 1)).split(",").filter(Boolean)) {
    const eq = kv.indexOf("=");
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return { label, env };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: "string" }, shrink: { type: "string", default: "2" }, rounds: { type: "string", default: "3" },
      variant: { type: "string", multiple: true }, "out-json": { type: "string" }, "no-floor": { type: "boolean", default: false },
      method: { type: "string", default: "add-difference" },
    },
  });
  if (!values.dir) throw new Error("--dir DIR");
  const dir = values.dir, shrink = Number(values.shrink), rounds = Number(values.rounds);
  const forced = { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_RELEASE_INPUTS: "3" };
  const variants: Variant[] = values.variant?.length
    ? values.variant.map(parseVariant)
    : [{ label: "buffered", env: { ...forced, TENSORMERGE_DIRECT_READS: "0" } }, { label: "direct", env: { ...forced, TENSORMERGE_DIRECT_READS: "1" } }];
  const layoutsDir = defaultLayoutsDir();
  const slerp = values.method === "slerp";
  const specs: ModelSpec[] = (slerp ? [1, 2] : [1, 2, 3]).map((seed) => ({ layout: "sd15", seed, ...(shrink > 1 ? { shrink } : {}) }));
  const inputs = await ensureModels(specs, { dir, layoutsDir, keep: [], budgetBytes: 8 * GB, reserveBytes: modelSize(layoutsDir, specs[0]!), minFreeBytes: 25 * GB, log: (l) => process.stderr.write(`${l}\n`) });
  const out = join(dir, "reader-ab-out.safetensors");
  const outBytes = slerp ? Math.ceil(modelSize(layoutsDir, specs[0]!) / 2) : modelSize(layoutsDir, specs[0]!); // fp16 output: about half
  const cores = availableParallelism();
  const floors: FloorTechnique[] = [
    { read: "read", write: "direct", readers: cores, ahead: 0, dropBehind: true },
    { read: "direct", write: "direct", readers: 4, ahead: 0, dropBehind: false },
  ];
  const runs: Record<string, unknown>[] = [];
  const floorRuns: (FloorResult & { round: number; load1: number })[] = [];
  for (let round = 0; round < rounds; round++) {
    if (!values["no-floor"])
      for (const t of floors) {
        evictFiles(inputs);
        const load1 = loadavg()[0]!;
        const f = runFloor({ inputs, outPath: join(dir, "reader-ab-floor.out"), outBytes, technique: t });
        rmSync(join(dir, "reader-ab-floor.out"), { force: true });
        floorRuns.push({ ...f, round, load1 });
        process.stderr.write(`round ${round + 1} floor ${t.read}${t.dropBehind ? "+drop" : ""}x${t.readers}: ${f.seconds.toFixed(2)} s, cpu ${f.cpuSeconds.toFixed(2)} s, load ${load1.toFixed(1)}\n`);
      }
    for (const v of variants) {
      rmSync(out, { force: true });
      evictFiles(inputs);
      const load1 = loadavg()[0]!;
      const options = slerp
        ? { a: inputs[0]!, b: inputs[1]!, method: "slerp" as const, multiplier: 0.3, dtype: "fp16" as const }
        : { a: inputs[0]!, b: inputs[1]!, c: inputs[2]!, method: "add-difference" as const, multiplier: 0.3, dtype: "fp32" as const };
      const r = await runMergeChild({ ...options, out, engine: "native", threads: cores, recipeMetadata: false }, v.env);
      rmSync(out, { force: true });
      const es = r.engineStats ?? {};
      const run = { variant: v.label, round, load1, seconds: r.seconds, cpuUser: r.cpuSeconds.user, cpuSystem: r.cpuSeconds.system, peakAnon: r.peak.anon, engineStats: es };
      runs.push(run);
      process.stderr.write(`round ${round + 1} ${v.label}: ${r.seconds.toFixed(2)} s, cpu ${r.cpuSeconds.user.toFixed(2)} + ${r.cpuSeconds.system.toFixed(2)} s, wait read ${(es.secondsWaitRead ?? 0).toFixed(2)} s, direct ${((es.bytesDirectRead ?? 0) / GB).toFixed(2)} GB, buffered ${((es.bytesBufferedRead ?? 0) / GB).toFixed(2)} GB, load ${load1.toFixed(1)}\n`);
    }
  }
  const inputBytes = specs.reduce((s, spec) => s + modelSize(layoutsDir, spec), 0);
  const lines = [`${inputs.length} inputs, ${(inputBytes / GB).toFixed(2)} GB, ${rounds} rounds, median of rounds`];
  const floorBest: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const fs = floorRuns.filter((f) => f.round === round).map((f) => f.seconds);
    floorBest.push(fs.length ? Math.min(...fs) : NaN);
  }
  for (const t of floors) {
    const fs = floorRuns.filter((f) => f.read === t.read && f.dropBehind === t.dropBehind);
    if (fs.length) lines.push(`floor ${t.read}${t.dropBehind ? "+drop-behind" : ""} x${t.readers}: ${median(fs.map((f) => f.seconds)).toFixed(2)} s, cpu ${median(fs.map((f) => f.cpuSeconds)).toFixed(2)} s`);
  }
  for (const v of variants) {
    const rs = runs.filter((r) => r.variant === v.label) as { round: number; seconds: number; cpuUser: number; cpuSystem: number; load1: number }[];
    const ratios = rs.map((r) => r.seconds / floorBest[r.round]!);
    lines.push(`${v.label}: ${median(rs.map((r) => r.seconds)).toFixed(2)} s, ratio to the round's best floor ${median(ratios).toFixed(2)}, cpu user ${median(rs.map((r) => r.cpuUser)).toFixed(2)} s + system ${median(rs.map((r) => r.cpuSystem)).toFixed(2)} s, load ${median(rs.map((r) => r.load1)).toFixed(1)}`);
  }
  process.stdout.write(lines.join("\n") + "\n");
  if (values["out-json"]) writeFileSync(values["out-json"], JSON.stringify({ date: new Date().toISOString(), variants, floors: floorRuns, runs, summary: lines }, null, 1) + "\n");
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
});
