#!/usr/bin/env node
/**
 * `npm run fuzz`: builds the libFuzzer targets of native/fuzz (clang, ASan + UBSan), runs each
 * for N executions or T seconds, then the TS parser mutation fuzzers (test/fuzz/), and reports
 * executions and findings per target. Exit status 1 when anything was found.
 *
 *   npm run fuzz                                  # 1,000,000 executions per target
 *   npm run fuzz -- --runs 50000 --seconds 60     # whichever comes first
 *   npm run fuzz -- --targets job_validate,pickle # a subset (names as in the report)
 *   npm run fuzz -- --corpus-only --runs 3000     # the bounded CI run: committed corpus, scratch copy
 *   npm run fuzz -- --json report.json            # also write the report as JSON
 *   npm run fuzz -- --minimize-corpus             # after a run: fold what it found into native/fuzz/corpus
 *
 * One worker per target (no -fork/-jobs): the runs are meant to share a machine. The
 * libFuzzer corpus grows in build/fuzz/corpus/<target> (the committed seeds in
 * native/fuzz/corpus/<target> are read, never written, except by --minimize-corpus); crashes
 * land in build/fuzz/findings/<target>/. The engine target's scratch files go to $TMPDIR, else
 * /dev/shm when it exists (then some outputs go to the disk temp folder, for O_DIRECT), else the
 * system temp folder. Needs a built dist/ (`npm run build:ts`).
 */
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const buildDir = path.join(root, "build", "fuzz");
const NATIVE_TARGETS = ["job_validate", "engine_files"];

function parseArgs(argv) {
  const opts = { runs: 1_000_000, seconds: undefined, targets: undefined, corpusOnly: false, json: undefined, minimize: false, work: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--runs") opts.runs = Number(value());
    else if (a === "--seconds") opts.seconds = Number(value());
    else if (a === "--targets") opts.targets = value().split(",").filter(Boolean);
    else if (a === "--corpus-only") opts.corpusOnly = true;
    else if (a === "--json") opts.json = path.resolve(value());
    else if (a === "--work") opts.work = path.resolve(value());
    else if (a === "--minimize-corpus") opts.minimize = true;
    else throw new Error(`unknown option ${a} (see the comment at the top of scripts/fuzz.js)`);
  }
  if (!Number.isSafeInteger(opts.runs) || opts.runs < 1) throw new Error("--runs must be a positive integer");
  if (opts.seconds !== undefined && !(opts.seconds > 0)) throw new Error("--seconds must be positive");
  return opts;
}

function which(cmd) {
  const r = spawnSync("/bin/sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Configures and builds build/fuzz with clang++ (CMake option TENSORMERGE_BUILD_FUZZERS). */
function buildNative(targets) {
  const clang = process.env.TM_FUZZ_CXX || which("clang++");
  if (!clang) throw new Error("clang++ not found: install clang and libclang-rt-14-dev (apt-get install -y clang libclang-rt-14-dev)");
  if (!fs.existsSync(path.join(buildDir, "CMakeCache.txt"))) {
    const generator = which("ninja") ? ["-G", "Ninja"] : [];
    const cfg = spawnSync("cmake", ["-S", root, "-B", buildDir, ...generator, `-DCMAKE_CXX_COMPILER=${clang}`, "-DTENSORMERGE_BUILD_FUZZERS=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], { encoding: "utf8" });
    if (cfg.status !== 0) throw new Error(`cmake configure failed:\n${cfg.stdout}\n${cfg.stderr}`);
  }
  const jobs = String(Math.min(2, os.availableParallelism()));
  const built = spawnSync("cmake", ["--build", buildDir, "-j", jobs, "--target", ...targets.map((t) => `fuzz_${t}`)], { encoding: "utf8" });
  if (built.status !== 0) throw new Error(`building the fuzzers failed (a missing libclang-rt-14-dev gives "cannot find libclang_rt.fuzzer"):\n${built.stdout.slice(-4000)}\n${built.stderr.slice(-4000)}`);
}

/** Scratch files: $TMPDIR, else /dev/shm (fast), else the system temp folder. */
function scratchDir() {
  if (process.env.TMPDIR) return process.env.TMPDIR;
  try {
    fs.accessSync("/dev/shm", fs.constants.W_OK);
    return "/dev/shm";
  } catch {
    return os.tmpdir();
  }
}

/** One libFuzzer run; returns { target, executions, seconds, findings: [paths], outcomes, log }. */
function runNative(target, opts, work) {
  const seeds = path.join(root, "native", "fuzz", "corpus", target);
  const corpus = path.join(work, "corpus", target);
  const findingsDir = path.join(work, "findings", target);
  fs.mkdirSync(corpus, { recursive: true });
  fs.mkdirSync(findingsDir, { recursive: true });
  if (opts.corpusOnly) {
    // The bounded run starts from the committed seeds only, in a scratch copy.
    fs.rmSync(corpus, { recursive: true, force: true });
    fs.mkdirSync(corpus, { recursive: true });
  }
  const args = [`-runs=${opts.runs}`, "-print_final_stats=1", `-artifact_prefix=${findingsDir}${path.sep}`, "-rss_limit_mb=2048", "-timeout=20", "-close_fd_mask=1"];
  if (opts.seconds !== undefined) args.push(`-max_total_time=${Math.ceil(opts.seconds)}`);
  args.push(corpus);
  if (fs.existsSync(seeds)) args.push(seeds);
  const bin = path.join(buildDir, `fuzz_${target}`);
  const started = Date.now();
  const scratch = scratchDir();
  // tmpfs refuses O_DIRECT: then some runs write their outputs to the (disk) temp folder.
  const disk = scratch === "/dev/shm" ? { TM_FUZZ_DISK_DIR: os.tmpdir() } : {};
  const r = spawnSync(bin, args, { encoding: "utf8", env: { ...process.env, TMPDIR: scratch, ...disk }, maxBuffer: 1 << 30 });
  const log = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  const logFile = path.join(work, `${target}.log`);
  fs.writeFileSync(logFile, log);
  const executions = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(log)?.[1] ?? /Done (\d+) runs/.exec(log)?.[1] ?? 0);
  const outcomes = {};
  for (const m of (/^outcomes:(.*)$/m.exec(log)?.[1] ?? "").matchAll(/(\w+)=(\d+)/g)) outcomes[m[1]] = Number(m[2]);
  const findings = [...log.matchAll(/Test unit written to (\S+)/g)].map((m) => m[1]);
  if (r.status !== 0 && findings.length === 0) findings.push(`exit ${r.status ?? r.signal}: see ${logFile}`);
  return { target, kind: "libFuzzer", executions, seconds: (Date.now() - started) / 1000, outcomes, findings, log: logFile };
}

/**
 * Replaces the committed seeds with a small set drawn from seeds + the grown corpus: first the
 * inputs that add edge coverage (libFuzzer -merge=1 without hit counters), then, of those, the
 * few smallest per outcome (accepted, and each refusal code), which keeps the corpus at a few
 * KB while every check stays one mutation away.
 */
function minimizeCorpus(target, work, perOutcome = 10) {
  const bin = path.join(buildDir, `fuzz_${target}`);
  const seeds = path.join(root, "native", "fuzz", "corpus", target);
  const merged = path.join(work, "minimized", target);
  fs.rmSync(merged, { recursive: true, force: true });
  fs.mkdirSync(merged, { recursive: true });
  fs.mkdirSync(seeds, { recursive: true });
  const env = { ...process.env, TMPDIR: scratchDir() };
  const m = spawnSync(bin, ["-merge=1", "-use_counters=0", "-use_value_profile=0", merged, seeds, path.join(work, "corpus", target)], { encoding: "utf8", env });
  if (m.status !== 0) throw new Error(`-merge=1 failed for ${target}:\n${m.stderr.slice(-2000)}`);
  const files = fs.readdirSync(merged).map((f) => path.join(merged, f));
  const r = spawnSync(bin, files, { encoding: "utf8", env: { ...env, TM_FUZZ_PRINT_OUTCOME: "1" }, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`replaying the corpus of ${target} failed:\n${r.stderr.slice(-2000)}`);
  const byOutcome = new Map();
  let current;
  for (const line of r.stderr.split("\n")) {
    const running = /^Running: (.+)$/.exec(line);
    if (running) current = running[1];
    const outcome = /^outcome: (\w+)$/.exec(line);
    if (outcome && current) {
      if (!byOutcome.has(outcome[1])) byOutcome.set(outcome[1], []);
      byOutcome.get(outcome[1]).push(current);
      current = undefined;
    }
  }
  const keep = new Set();
  for (const list of byOutcome.values()) {
    list.sort((a, b) => fs.statSync(a).size - fs.statSync(b).size);
    for (const f of list.slice(0, perOutcome)) keep.add(f);
  }
  fs.rmSync(seeds, { recursive: true, force: true });
  fs.mkdirSync(seeds, { recursive: true });
  let bytes = 0;
  for (const f of keep) {
    fs.copyFileSync(f, path.join(seeds, path.basename(f)));
    bytes += fs.statSync(f).size;
  }
  const outcomes = [...byOutcome.keys()].join(", ");
  console.log(`corpus ${target}: ${keep.size} files, ${bytes} bytes (from ${files.length} covering inputs; outcomes ${outcomes})`);
}

async function runTs(name, opts, work) {
  let runner, targets;
  try {
    runner = require(path.join(root, "dist", "test", "fuzz", "runner.js"));
    targets = require(path.join(root, "dist", "test", "fuzz", "targets.js"));
  } catch (e) {
    throw new Error(`dist/test/fuzz is missing: run \`npm run build:ts\` first (${e.message})`);
  }
  const target = targets.TS_TARGETS.find((t) => t.name === name);
  const r = await runner.runFuzzTarget(target, { runs: opts.runs, seconds: opts.seconds, seed: 1, keepGoing: true });
  const findingsDir = path.join(work, "findings", name);
  const findings = r.findings.map((f) => {
    fs.mkdirSync(findingsDir, { recursive: true });
    const file = path.join(findingsDir, `seed1-iteration${f.iteration}.bin`);
    fs.writeFileSync(file, f.input);
    return `${file}: ${f.message.split("\n")[0].slice(0, 300)}`;
  });
  // findings: the first input of each distinct finding; outcomes.finding counts every hit.
  return { target: name, kind: "TS mutation", executions: r.executions, seconds: r.seconds, outcomes: r.outcomes, findings };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const work = opts.work ?? buildDir;
  const tsNames = require(path.join(root, "dist", "test", "fuzz", "targets.js")).TS_TARGETS.map((t) => t.name);
  const all = [...NATIVE_TARGETS, ...tsNames];
  const selected = opts.targets ?? all;
  for (const t of selected) if (!all.includes(t)) throw new Error(`unknown target ${t} (targets: ${all.join(", ")})`);
  const natives = selected.filter((t) => NATIVE_TARGETS.includes(t));
  if (natives.length > 0) buildNative(natives);
  if (opts.minimize) {
    for (const t of natives) minimizeCorpus(t, work);
    return;
  }
  const results = [];
  for (const t of selected) {
    const r = NATIVE_TARGETS.includes(t) ? runNative(t, opts, work) : await runTs(t, opts, work);
    results.push(r);
    const codes = Object.entries(r.outcomes).map(([k, v]) => `${k}=${v}`).join(" ");
    console.log(`${t.padEnd(20)} ${r.kind.padEnd(12)} ${String(r.executions).padStart(10)} executions in ${r.seconds.toFixed(0).padStart(5)} s, ${r.findings.length} findings  (${codes})`);
    for (const f of r.findings) console.log(`    finding: ${f}`);
  }
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify({ date: new Date().toISOString(), runs: opts.runs, seconds: opts.seconds ?? null, results }, null, 2) + "\n");
  if (results.some((r) => r.findings.length > 0)) process.exitCode = 1;
}

main().catch((e) => {
  console.error(`fuzz: ${e.message}`);
  process.exit(2);
});
