/**
 * The language-model bench: two Mistral-7B-size Hugging Face folders (bf16, sharded like the
 * real repo, ~14.5 GB each; bench/hf-models.ts) merged from a mergekit configuration by
 * `tensormerge mergekit` into a bf16 sharded folder, against the I/O floor measured in the same
 * run (bench/floor.c: read the same input shards, write the same output bytes, no arithmetic),
 * then the same merge done mergekit's way (bench/hf_mergekit_way.py: real PyTorch, tensor by
 * tensor, output shards collected in RAM), in the same run: time, CPU and peak private memory.
 *
 * Cache state: cold (our input files evicted before every run). Warm runs are only made when the
 * inputs fit comfortably in RAM (below half of it): 2 × 14.5 GB do not fit a 24 GB machine, so at
 * full size every run streams from the disk, the honest case for these users.
 *
 *   npm run bench -- --scenarios slerp-mistral7b,ties-mistral7b [--shrink 8] [--dir DIR] [--runs 1]
 *     [--reference-timeout-min 15] [--no-reference] [--json FILE] [--delete-models]
 * (run.ts hands these scenario ids to this runner; `node dist/bench/hf-llm.js …` is the same.)
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { formatMiB, gbPerSecond, textTable } from "../lib/bench/stats";
import { MemorySampler, type MemorySample } from "../lib/bench/memory";
import { buildFloorTool, evictFiles, residency, runFloor, warmFiles, type FloorResult, type FloorTechnique, type WriteTechnique } from "./floor";
import { ensureHfFolder, mistral7bLayout, type GeneratedFolder } from "./hf-models";
import { claimBenchFolder, defaultLayoutsDir, freeBytes, GB } from "./models";

export interface HfScenario {
  id: string;
  title: string;
  /** The method argument of bench/hf_mergekit_way.py. */
  reference: "slerp" | "ties";
  yaml: (base: string, other: string) => string;
}

export const HF_SCENARIOS: HfScenario[] = [
  {
    id: "slerp-mistral7b",
    title: "slerp, 2 × Mistral-7B bf16 → bf16 (t: [0, 0.5, 1] over the layers)",
    reference: "slerp",
    yaml: (a, b) => `merge_method: slerp\nbase_model: ${a}\nmodels:\n  - model: ${a}\n  - model: ${b}\nparameters:\n  t: [0, 0.5, 1]\ndtype: float32\nout_dtype: bfloat16\n`,
  },
  {
    id: "ties-mistral7b",
    title: "ties, base + 1 × Mistral-7B bf16 → bf16 (weight 1, density 0.5)",
    reference: "ties",
    yaml: (a, b) => `merge_method: ties\nbase_model: ${a}\nmodels:\n  - model: ${b}\n    parameters: {weight: 1, density: 0.5}\ndtype: float32\nout_dtype: bfloat16\n`,
  },
];

export function isHfScenario(id: string): boolean {
  return HF_SCENARIOS.some((s) => s.id === id);
}

type Cache = "warm" | "cold";

interface OurRun {
  scenario: string;
  cache: Cache;
  rep: number;
  seconds: number;
  cpuSeconds: number;
  cpuUser?: number;
  cpuSystem?: number;
  bytesRead: number;
  diskReadBytes?: number; // the merge process's storage reads (/proc/self/io read_bytes)
  bytesWritten: number;
  shards: number;
  peak: MemorySample;
  baseline: MemorySample;
  /** The native engine's stats summed over the merge's jobs (bench/hf-child.ts): bufferedReads, bytesDirectRead... */
  engineStats?: Record<string, number>;
  load1: number;
  residency: number;
  floor?: FloorResult & { load1: number };
  ratio?: number;
}

interface ReferenceRun {
  scenario: string;
  finished: boolean;
  seconds: number;
  /** Share of the input bytes processed (1 when finished). */
  fraction: number;
  /** seconds / fraction: the whole merge at the rate reached (equals seconds when finished). */
  projectedSeconds: number;
  cpuSeconds?: number;
  peak: MemorySample;
  load1: number;
  note?: string;
}


function folderBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

function meanResidency(paths: string[]): number {
  const r = residency(paths);
  return paths.reduce((s, p) => s + (r[p] ?? 0), 0) / Math.max(1, paths.length);
}

function prepare(paths: string[], cache: Cache): number {
  if (cache === "warm") warmFiles(paths);
  else evictFiles(paths);
  return meanResidency(paths);
}

function runOurs(config: string, out: string, shardSize: string, threads: number): Promise<{ seconds: number; diskReadBytes?: number; cpuSeconds: number; cpuUser?: number; cpuSystem?: number; engineStats?: Record<string, number>; report: { bytesRead: number; bytesWritten: number; shards: unknown[] }; baseline: MemorySample; peak: MemorySample }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [join(__dirname, "hf-child.js"), JSON.stringify({ config, out, shardSize, threads })], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.on("error", rej);
    child.on("close", (code) => {
      try {
        const parsed = JSON.parse(stdout.trim().split("\n").pop() ?? "") as { error?: { code: string; message: string } };
        if (parsed.error) rej(new Error(`tensormerge mergekit failed: ${parsed.error.code}: ${parsed.error.message}`));
        else res(parsed as never);
      } catch {
        rej(new Error(`merge child exited with ${code}: ${stderr || stdout}`));
      }
    });
  });
}

/** bench/hf_mergekit_way.py with its memory sampled; stopped (and reported as such) past `timeoutSeconds`. */
function runReference(method: string, a: string, b: string, out: string, shardBytes: number, timeoutSeconds: number): Promise<Omit<ReferenceRun, "scenario" | "load1">> {
  const script = resolve(__dirname, "..", "..", "bench", "hf_mergekit_way.py");
  return new Promise((res, rej) => {
    const started = Date.now();
    const py = spawn("/usr/bin/python3", [script, method, a, b, out, String(shardBytes)], { stdio: ["ignore", "pipe", "pipe"] });
    const sampler = new MemorySampler(py.pid!, 10);
    sampler.start();
    let stdout = "", lastProgress = "", stderrTail = "";
    py.stdout.on("data", (d: Buffer) => (stdout += d));
    py.stderr.on("data", (d: Buffer) => {
      const text = d.toString();
      const lines = text.split("\n").filter((l) => l.startsWith("progress "));
      if (lines.length) lastProgress = lines.at(-1)!;
      stderrTail = (stderrTail + text).slice(-2000);
    });
    let timedOut = false;
    const timer = timeoutSeconds > 0 ? setTimeout(() => { timedOut = true; py.kill("SIGKILL"); }, timeoutSeconds * 1000) : undefined;
    py.on("error", rej);
    py.on("close", (code) => {
      if (timer) clearTimeout(timer);
      const peak = sampler.stop();
      const seconds = (Date.now() - started) / 1000;
      const [, done = "0", total = "1"] = lastProgress.split(" ");
      const fraction = Number(done) / Number(total);
      if (code === 0) {
        const end = JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as { cpuSeconds?: number };
        res({ finished: true, seconds, fraction: 1, projectedSeconds: seconds, ...(end.cpuSeconds !== undefined ? { cpuSeconds: end.cpuSeconds } : {}), peak });
      } else if (timedOut) {
        res({ finished: false, seconds, fraction, projectedSeconds: fraction > 0 ? seconds / fraction : NaN, peak, note: `stopped at the ${timeoutSeconds / 60}-minute limit` });
      } else {
        res({ finished: false, seconds, fraction, projectedSeconds: NaN, peak, note: `exit ${code}: ${stderrTail.split("\n").filter((l) => !l.startsWith("progress ")).join(" ").slice(-300)}` });
      }
    });
  });
}

/** The floor's read techniques tried on the first run (cold at 7B: each try reads 29 GB, so few). */
function floorCandidates(cores: number, cache: Cache, write: WriteTechnique): FloorTechnique[] {
  const readers = Math.max(1, cores);
  if (cache === "warm") return [{ read: "mmap", write, readers, ahead: 0 }, { read: "read", write, readers, ahead: 32 }];
  return [{ read: "mmap", write, readers, ahead: 32 }, { read: "direct", write, readers: Math.max(4, readers), ahead: 0 }];
}

function techniqueName(t: FloorTechnique): string {
  return `${t.read}×${t.readers}${t.ahead ? ` ahead ${t.ahead}` : ""}${t.dropBehind ? " drop-behind" : ""} + ${t.write}`;
}

export interface HfBenchOptions {
  dir: string;
  layoutsDir: string;
  scenarios: string[];
  shrink: number;
  shardSize: string;
  runs: number;
  threads: number;
  reference: boolean;
  referenceTimeoutMinutes: number;
  deleteModels: boolean;
  jsonPath?: string;
  command: string;
  log: (line: string) => void;
}

export async function runHfBench(o: HfBenchOptions): Promise<void> {
  await mkdir(o.dir, { recursive: true });
  const release = claimBenchFolder(o.dir);
  try {
    await runHfBenchIn(o);
  } finally {
    release();
  }
}

async function runHfBenchIn(o: HfBenchOptions): Promise<void> {
  const started = Date.now();
  const stamp = () => new Date().toISOString().slice(11, 19);
  const log = (line: string) => o.log(`[${stamp()} load ${loadavg()[0]!.toFixed(1)}] ${line}`);
  const scenarios = o.scenarios.map((id) => {
    const s = HF_SCENARIOS.find((x) => x.id === id);
    if (!s) throw new Error(`unknown language-model scenario "${id}" (known: ${HF_SCENARIOS.map((x) => x.id).join(", ")})`);
    return s;
  });
  await mkdir(o.dir, { recursive: true });
  buildFloorTool();
  const layout = mistral7bLayout(o.layoutsDir, o.shrink);
  const dataBytes = layout.tensors.reduce((n, [, shape]) => n + shape.reduce((a, d) => a * d, 2), 0);
  log(`language-model bench: ${scenarios.map((s) => s.id).join(", ")}; Mistral-7B layout${o.shrink > 1 ? ` shrunk ${o.shrink}×` : ""} from ${layout.source}: ${layout.tensors.length} tensors, ${layout.shards.length} shards, ${(dataBytes / GB).toFixed(2)} GB per model; folder ${o.dir}`);
  const a = join(o.dir, "mistral7b-A"), b = join(o.dir, "mistral7b-B");
  const need = [a, b].filter((d) => !existsSync(join(d, "model.safetensors.index.json"))).length * dataBytes + dataBytes * 1.05;
  if (freeBytes(o.dir) < need + 5 * GB) throw new Error(`not enough free space in ${o.dir}: ${(freeBytes(o.dir) / GB).toFixed(1)} GB free, the models and one output need ${(need / GB).toFixed(1)} GB + 5 GB to spare`);
  const models: GeneratedFolder[] = [];
  for (const [dir, seed] of [[a, 1], [b, 2]] as const) {
    const g = await ensureHfFolder(dir, layout, seed);
    models.push(g);
    log(g.reused ? `reusing ${dir} (${(g.bytes / GB).toFixed(2)} GB)` : `generated ${dir}: ${(g.bytes / GB).toFixed(2)} GB in ${g.seconds.toFixed(1)} s (${gbPerSecond(g.bytes, g.seconds).toFixed(2)} GB/s)`);
  }
  const inputs = models.flatMap((m) => m.shardPaths);
  const inputBytes = models.reduce((n, m) => n + m.bytes, 0);
  const caches: Cache[] = inputBytes < totalmem() / 2 ? ["warm", "cold"] : ["cold"];
  if (!caches.includes("warm")) log(`warm runs skipped: the inputs (${(inputBytes / GB).toFixed(1)} GB) do not fit the page cache (${(totalmem() / 2 ** 30).toFixed(1)} GiB of RAM): every run streams from the disk`);

  const probeBytes = Math.min(2e9, dataBytes);
  const probes = (["direct", "buffered"] as const).map((write) => runFloor({ inputs: [], outPath: join(o.dir, "floor-probe"), outBytes: probeBytes, technique: { read: "read", write, readers: 1, ahead: 0 } }));
  await rm(join(o.dir, "floor-probe"), { force: true });
  const bestWrite = [...probes].sort((x, y) => x.seconds - y.seconds)[0]!.write;
  log(`write probe (${(probeBytes / GB).toFixed(2)} GB): ${probes.map((p) => `${p.write} ${gbPerSecond(p.bytesWritten, p.seconds).toFixed(2)} GB/s`).join(", ")} → ${bestWrite}`);

  const ours: OurRun[] = [];
  const technique = new Map<Cache, FloorTechnique>();
  for (const s of scenarios) {
    const config = join(o.dir, `${s.id}.yml`);
    await writeFile(config, s.yaml(a, b));
    for (const cache of caches) {
      for (let rep = 0; rep < o.runs; rep++) {
        const out = join(o.dir, `out-${s.id}`);
        await rm(out, { recursive: true, force: true });
        const res = prepare(inputs, cache);
        const load1 = loadavg()[0]!;
        const r = await runOurs(config, out, o.shardSize, o.threads);
        const written = folderBytes(out);
        await rm(out, { recursive: true, force: true });
        const run: OurRun = {
          scenario: s.id, cache, rep, seconds: r.seconds, cpuSeconds: r.cpuSeconds, cpuUser: r.cpuUser, cpuSystem: r.cpuSystem, bytesRead: r.report.bytesRead, ...(r.diskReadBytes !== undefined ? { diskReadBytes: r.diskReadBytes } : {}), bytesWritten: written,
          shards: r.report.shards.length, peak: r.peak, baseline: r.baseline, ...(r.engineStats ? { engineStats: r.engineStats } : {}), load1, residency: res,
        };
        ours.push(run);
        const es = r.engineStats;
        const disk = r.diskReadBytes !== undefined ? `, ${(r.diskReadBytes / GB).toFixed(2)} GB from disk` : "";
        const reads = disk + (es ? `, reader ${es.bufferedReads ? `on (${((es.bytesDirectRead ?? 0) / GB).toFixed(1)} GB direct, ${((es.bytesBufferedRead ?? 0) / GB).toFixed(1)} GB buffered)` : "off"}` : "");
        log(`${s.id} ${cache} #${rep + 1}: tensormerge ${r.seconds.toFixed(1)} s, cpu ${r.cpuSeconds.toFixed(1)} s${reads}, ${run.shards} shards, ${(written / GB).toFixed(2)} GB written, peak private ${formatMiB(r.peak.anon)} (Node before: ${formatMiB(r.baseline.anon)}), cached before ${(res * 100).toFixed(0)}%`);
        // The floor of this run: the same input shards read, the same output bytes written.
        const candidates = technique.has(cache) ? [technique.get(cache)!] : floorCandidates(availableParallelism(), cache, bestWrite);
        let best: (FloorResult & { load1: number }) | undefined;
        for (const t of candidates) {
          prepare(inputs, cache);
          const fl = loadavg()[0]!;
          const f = runFloor({ inputs, outPath: join(o.dir, "floor-out"), outBytes: written, technique: t });
          await rm(join(o.dir, "floor-out"), { force: true });
          if (candidates.length > 1) log(`  floor calibration (${cache}): ${techniqueName(t)} ${f.seconds.toFixed(1)} s`);
          if (!best || f.seconds < best.seconds) best = { ...f, load1: fl };
        }
        if (!technique.has(cache)) technique.set(cache, { read: best!.read, write: best!.write, readers: best!.readers, ahead: best!.ahead, ...(best!.dropBehind ? { dropBehind: true } : {}) });
        run.floor = best!;
        run.ratio = run.seconds / best!.seconds;
        log(`  floor ${best!.seconds.toFixed(1)} s (${techniqueName(technique.get(cache)!)}; read ${best!.readSeconds.toFixed(1)} s, write ${best!.writeSeconds.toFixed(1)} s): merge/floor ${run.ratio.toFixed(2)}`);
      }
    }
  }

  const references: ReferenceRun[] = [];
  if (o.reference) {
    for (const s of scenarios) {
      const out = join(o.dir, `out-${s.id}-mergekit-way`);
      await rm(out, { recursive: true, force: true });
      prepare(inputs, "cold");
      const load1 = loadavg()[0]!;
      log(`${s.id}: mergekit's way (PyTorch, shards of ${o.shardSize} collected in RAM)${o.referenceTimeoutMinutes > 0 ? `, stopped after ${o.referenceTimeoutMinutes} min` : ""}…`);
      const r = await runReference(s.reference, a, b, out, parseShardBytes(o.shardSize), o.referenceTimeoutMinutes * 60);
      await rm(out, { recursive: true, force: true });
      references.push({ scenario: s.id, load1, ...r });
      log(`${s.id}: mergekit's way ${r.finished ? `${r.seconds.toFixed(1)} s` : `not finished: ${(r.fraction * 100).toFixed(0)}% of the inputs in ${r.seconds.toFixed(0)} s (${r.note}), ~${r.projectedSeconds.toFixed(0)} s at that rate`}${r.cpuSeconds !== undefined ? `, cpu ${r.cpuSeconds.toFixed(1)} s` : ""}, peak private ${formatMiB(r.peak.anon)}`);
    }
  }
  if (o.deleteModels) {
    for (const m of models) await rm(m.dir, { recursive: true, force: true });
    log("models deleted");
  }

  const table: string[][] = [["scenario", "cache", "tensormerge", "cpu", "floor", "merge/floor", "peak private", "mergekit's way", "its peak private", "time ×", "memory ×"]];
  for (const r of ours) {
    const ref = references.find((x) => x.scenario === r.scenario);
    const refTime = ref ? (ref.finished ? `${ref.seconds.toFixed(1)} s` : `>${ref.seconds.toFixed(0)} s (~${ref.projectedSeconds.toFixed(0)})`) : "–";
    table.push([
      r.scenario, r.cache, `${r.seconds.toFixed(1)} s`, `${r.cpuSeconds.toFixed(1)} s`, `${r.floor!.seconds.toFixed(1)} s`, r.ratio!.toFixed(2), formatMiB(r.peak.anon),
      refTime, ref ? formatMiB(ref.peak.anon) : "–",
      ref ? `${(ref.projectedSeconds / r.seconds).toFixed(1)}${ref.finished ? "" : "~"}` : "–", ref ? `${((ref.peak.anon ?? NaN) / (r.peak.anon ?? NaN)).toFixed(0)}` : "–",
    ]);
  }
  o.log(`\n${textTable(table, [false, false, true, true, true, true, true, true, true, true, true])}\n(time ×, memory ×: mergekit's way ÷ tensormerge; ~ = projected from the share it reached before the limit; load ${loadavg().map((l) => l.toFixed(1)).join(" ")})`);
  if (o.jsonPath) {
    const { log: _l, ...options } = o;
    await writeFile(o.jsonPath, JSON.stringify({ date: new Date().toISOString(), options, layout: { source: layout.source, tensors: layout.tensors.length, shards: layout.shards.map((s) => s.name), dataBytes }, models, caches, writeProbe: probes, ours, references, seconds: (Date.now() - started) / 1000 }, null, 1) + "\n");
  }
}

function parseShardBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)?$/i.exec(text.trim());
  if (!m) throw new Error(`--shard-size: expected a size such as 5GB, got ${text}`);
  return Math.round(Number(m[1]) * ({ B: 1, KB: 1e3, MB: 1e6, GB: 1e9 } as Record<string, number>)[(m[2] ?? "B").toUpperCase()]!);
}

const HELP = `Usage: npm run bench -- --scenarios slerp-mistral7b,ties-mistral7b [options]

Two Mistral-7B-size Hugging Face folders (bf16, ~14.5 GB each) merged from a mergekit config,
against the I/O floor and mergekit's way (PyTorch, shards in RAM) in the same run.

  --dir DIR                     folder for the models and outputs (default ./bench-hf-llm)
  --layouts DIR                 layout JSON folder (default ../shared/layouts; without it the published config)
  --shrink N                    divide every dimension above 16 by N (1/N² of the bytes; smoke runs)
  --shard-size SIZE             output shards (default 5GB, transformers' and mergekit's default)
  --runs N                      runs of each merge (default 1)
  --threads N                   merge threads (default: every core)
  --no-reference                skip mergekit's way
  --reference-timeout-min N     stop mergekit's way after N minutes and project its time (default 0: no limit)
  --delete-models               delete the generated models at the end
  --json FILE                   write every measurement as JSON
`;

export async function hfBenchMain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenarios: { type: "string" }, dir: { type: "string" }, layouts: { type: "string" }, shrink: { type: "string" }, "shard-size": { type: "string" },
      runs: { type: "string" }, threads: { type: "string" }, "no-reference": { type: "boolean" }, "reference-timeout-min": { type: "string" },
      "delete-models": { type: "boolean" }, json: { type: "string" }, help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const num = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  await runHfBench({
    dir: resolve(values.dir ?? "bench-hf-llm"),
    layoutsDir: resolve(values.layouts ?? defaultLayoutsDir()),
    scenarios: (values.scenarios ?? HF_SCENARIOS.map((s) => s.id).join(",")).split(",").filter(Boolean),
    shrink: num(values.shrink, 1),
    shardSize: values["shard-size"] ?? "5GB",
    runs: num(values.runs, 1),
    threads: num(values.threads, availableParallelism()),
    reference: !values["no-reference"],
    referenceTimeoutMinutes: num(values["reference-timeout-min"], 0),
    deleteModels: values["delete-models"] === true,
    ...(values.json ? { jsonPath: resolve(values.json) } : {}),
    command: `npm run bench -- ${argv.join(" ")}`,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  return 0;
}

if (require.main === module) {
  hfBenchMain(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`bench: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
