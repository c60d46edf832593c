/**
 * Native engine benchmark (not a test): a synthetic add-difference job, three fp32 inputs of
 * `--gib` GiB each merged into one fp16 output, compared with the raw I/O floor
 * (`cat inputs > /dev/null` and `dd` writing the output size with fsync).
 *
 *   node dist/test/native/bench.js --gib 2 --dir /var/tmp/tm-bench [--threads 2] [--isa auto] [--keep]
 *        [--cold] (evict the inputs from the page cache first) [--no-floor] (skip cat/dd)
 *
 * Engine knobs (env): TENSORMERGE_WINDOW_MIB, TENSORMERGE_DIRECT_IO, TENSORMERGE_PREFETCH,
 * TENSORMERGE_RELEASE_INPUTS. Memory is sampled from /proc/self/status while the job runs:
 * RssAnon is private memory; RssFile is page cache mapped into the process.
 */
import { execSync } from "node:child_process";
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync, closeSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { runNativeJob } from "../../lib/native/binding";
import type { Job } from "../../lib/native/job";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const gib = Number(arg("gib", "2"));
const dir = arg("dir", "/var/tmp/tm-bench");
const threads = Number(arg("threads", String(cpus().length)));
const isa = arg("isa", "auto") as Job["isa"];
const keep = process.argv.includes("--keep");
const cold = process.argv.includes("--cold");
const floor = !process.argv.includes("--no-floor");
const inputBytes = Math.round(gib * 2 ** 30 / 4) * 4;
const n = inputBytes / 4;

function makeInput(path: string, seed: number): void {
  if (existsSync(path) && statSync(path).size === inputBytes) return;
  const block = new Float32Array(16 << 20); // 64 MiB pattern, shifted per block
  let s = seed;
  for (let i = 0; i < block.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    block[i] = (s / 2 ** 32 - 0.5) * 0.1;
  }
  const bytes = new Uint8Array(block.buffer);
  const fd = openSync(path, "w");
  let written = 0;
  let shift = 0;
  while (written < inputBytes) {
    const len = Math.min(bytes.length - shift * 4, inputBytes - written);
    writeSync(fd, bytes, shift * 4, len);
    written += len;
    shift = (shift + 1) % 1024;
  }
  closeSync(fd);
}

function memory(): { anon: number; file: number } {
  const status = readFileSync("/proc/self/status", "utf8");
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
  return { anon: kb("RssAnon"), file: kb("RssFile") };
}

function time(cmd: string): number {
  const t0 = process.hrtime.bigint();
  execSync(cmd, { stdio: "ignore", shell: "/bin/bash" });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function main(): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const inputs = ["a", "b", "c"].map((x) => join(dir, `${x}.f32`));
  inputs.forEach((p, i) => makeInput(p, 17 + i));
  const out = join(dir, "out.f16");
  rmSync(out, { force: true });
  const outSize = n * 2;
  const job: Job = {
    inputs: inputs.map((path) => ({ path, size: inputBytes })),
    outputs: [{ path: out, size: outSize, literals: [] }],
    pieces: [{
      name: "synthetic",
      n,
      ops: [{ kernel: 2, args: inputs.map((_, i) => ({ kind: "input" as const, file: i, offset: 0, dtype: 11 })), params: [Math.fround(0.5)], round: 11 }],
      writes: [{ output: 0, offset: 0, dtype: 7, source: { kind: "op", index: 0 } }],
    }],
    threads,
    isa,
    control: new Float64Array(3),
  };
  // GNU dd with count=0 and iflag=nocache drops the file's pages from the cache.
  const evict = () => inputs.forEach((p) => execSync(`dd if=${p} iflag=nocache count=0 status=none`));
  if (cold) evict();
  const base = memory();
  let peak = { anon: 0, file: 0 };
  const sampler = setInterval(() => {
    const m = memory();
    peak = { anon: Math.max(peak.anon, m.anon), file: Math.max(peak.file, m.file) };
  }, 20);
  const t0 = process.hrtime.bigint();
  const result = await runNativeJob(job);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(sampler);
  rmSync(out, { force: true });

  let catSeconds = NaN, ddSeconds = NaN;
  if (floor) {
    if (cold) evict();
    catSeconds = time(`cat ${inputs.join(" ")} > /dev/null`);
    ddSeconds = time(`dd if=/dev/zero of=${out}.dd bs=32M count=${Math.ceil(outSize / (32 << 20))} conv=fsync status=none`);
    rmSync(`${out}.dd`, { force: true });
  }
  const mib = (x: number) => (x / 2 ** 20).toFixed(0);
  const moved = 3 * inputBytes + outSize;
  console.log(JSON.stringify({
    gibPerInput: gib, threads, isa: result.isa, cold,
    nativeSeconds: +seconds.toFixed(3), nativeGBps: +(moved / seconds / 1e9).toFixed(2),
    catSeconds: +catSeconds.toFixed(3), ddSeconds: +ddSeconds.toFixed(3), ioFloorSeconds: +(catSeconds + ddSeconds).toFixed(3),
    peakRssAnonMiB: mib(peak.anon), baseRssAnonMiB: mib(base.anon), peakRssFileMiB: mib(peak.file),
    stats: Object.fromEntries(Object.entries(result.stats ?? {}).map(([k, v]) => [k, +v.toFixed(3)])),
  }));
  if (!keep) inputs.forEach((p) => rmSync(p, { force: true }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
