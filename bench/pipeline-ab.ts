/**
 * A/B of the pipeline's two ends (engine_stream.cc window_end, native/core/buffer_pool.h): alternating
 * fresh-process runs (A, B, B, A, ...) of one full-size job, inputs re-read into the page cache
 * before each run, printing the engine's timeline stats, which survive a loaded machine better
 * than wall time: secondsFirstWrite (job start to the first write), secondsDrain (the writes and
 * the fsync left once the last window is computed), secondsWriterIdle, and the CPU seconds.
 *
 * usage: node dist/bench/pipeline-ab.js --dir DIR --job bake|td|md|ws [--pairs 3] [--json FILE]
 *          [--a KNOB=VALUE ...] [--b KNOB=VALUE ...]
 * A defaults to the pipeline before ramp windows and prefaulted buffers
 * (TENSORMERGE_RAMP_KIB=0 TENSORMERGE_PREFAULT_BUFFERS=0), B to the defaults. DIR holds the
 * bench models (sd15-seed1..3, sd15_fp16_pruned-seed1..2; `bake` also the LoRA bench/lora.ts
 * generates, lora_sd15_kohya_r128-seed7) and its hash cache (DIR/hash-cache, as bench/lora.ts).
 */
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";

interface Args { dir: string; job: string; pairs: number; json?: string; a: Record<string, string>; b: Record<string, string> }

function parseArgs(argv: string[]): Args {
  const a: Args = { dir: "", job: "bake", pairs: 3, a: { TENSORMERGE_RAMP_KIB: "0", TENSORMERGE_PREFAULT_BUFFERS: "0" }, b: {} };
  let aSet = false;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    const knob = (s: string): [string, string] => {
      const eq = s.indexOf("=");
      if (eq <= 0) throw new Error(`${k} takes KNOB=VALUE, got ${s}`);
      return [s.slice(0, eq), s.slice(eq + 1)];
    };
    if (k === "--dir") a.dir = v();
    else if (k === "--job") a.job = v();
    else if (k === "--pairs") a.pairs = Number(v());
    else if (k === "--json") a.json = v();
    else if (k === "--a") {
      if (!aSet) a.a = {};
      aSet = true;
      const [n, x] = knob(v());
      a.a[n] = x;
    } else if (k === "--b") {
      const [n, x] = knob(v());
      a.b[n] = x;
    } else throw new Error(`unknown option ${k}`);
  }
  if (!a.dir) throw new Error("--dir is required");
  if (!["bake", "td", "md", "ws"].includes(a.job)) throw new Error("--job is bake, td, md or ws");
  return a;
}

/** The child script, its task, and the files it reads. */
function task(dir: string, job: string, out: string): { script: string; task: object; inputs: string[] } {
  const m = (s: string) => join(dir, `${s}.safetensors`);
  if (job === "bake") {
    const inputs = [m("sd15_fp16_pruned-seed1"), m("lora_sd15_kohya_r128-seed7")];
    return { script: "lora-child.js", task: { bake: { model: inputs[0], loras: [{ path: inputs[1], ratio: 0.8 }], out, overwrite: true, engine: "native" } }, inputs };
  }
  if (job === "ws") {
    const inputs = [m("sd15_fp16_pruned-seed1"), m("sd15_fp16_pruned-seed2")];
    return { script: "child.js", task: { a: inputs[0], b: inputs[1], out, overwrite: true, engine: "native", method: "weighted-sum", multiplier: 0.5 }, inputs };
  }
  const inputs = [m("sd15-seed1"), m("sd15-seed2"), m("sd15-seed3")];
  const base = { a: inputs[0], b: inputs[1], c: inputs[2], out, overwrite: true, engine: "native", dtype: "fp16" };
  const method = job === "td" ? { method: "train-difference", multiplier: 1 } : { method: "multiply-difference", multiplier: 0.5, beta: 0.5 };
  return { script: "child.js", task: { ...base, ...method }, inputs };
}

function main(): void {
  const a = parseArgs(process.argv.slice(2));
  const out = join(a.dir, `pipeline-ab-${a.job}.safetensors`);
  const rows: Record<string, number | string>[] = [];
  for (let i = 0; i < a.pairs; i++)
    for (const name of i % 2 ? ["B", "A"] : ["A", "B"]) {
      const t = task(a.dir, a.job, out);
      for (const f of t.inputs) spawnSync("cat", [f], { stdio: "ignore" }); // warm
      const load = loadavg()[0]!;
      const env = { ...process.env, TENSORMERGE_CACHE_DIR: process.env.TENSORMERGE_CACHE_DIR ?? join(a.dir, "hash-cache"), ...(name === "A" ? a.a : a.b) };
      const r = spawnSync(process.execPath, [join(__dirname, t.script), JSON.stringify(t.task)], { env, encoding: "utf8", maxBuffer: 1 << 26 });
      rmSync(out, { force: true });
      const line = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as {
        error?: { message: string }; seconds: number; cpuSeconds: number | { user: number; system: number };
        engineStats?: Record<string, number>; peak: { anon?: number }; baseline: { anon?: number };
      };
      if (line.error) throw new Error(line.error.message);
      const s = line.engineStats ?? {};
      const cpu = typeof line.cpuSeconds === "number" ? line.cpuSeconds : line.cpuSeconds.user + line.cpuSeconds.system;
      const row = {
        variant: name, load, seconds: line.seconds, cpu, setup: line.seconds - (s.seconds ?? 0), engine: s.seconds ?? 0,
        open: s.secondsOpen ?? 0, firstWrite: s.secondsFirstWrite ?? NaN, drain: s.secondsDrain ?? NaN, sync: s.secondsSync ?? 0,
        writerIdle: s.secondsWriterIdle ?? NaN, waitWriter: s.secondsWaitWriter ?? 0, write: s.secondsWrite ?? 0, compute: s.secondsCompute ?? 0,
        windows: s.windows ?? 0, prefaulted: s.outputBuffersPrefaulted ?? 0, privateMiB: ((line.peak.anon ?? 0) - (line.baseline.anon ?? 0)) / 2 ** 20,
      };
      rows.push(row);
      process.stdout.write(Object.entries(row).map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(3) : v}`).join(" ") + "\n");
    }
  if (a.json) writeFileSync(a.json, JSON.stringify({ job: a.job, a: a.a, b: a.b, rows }, null, 1));
}

main();
