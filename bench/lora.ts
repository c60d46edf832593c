/**
 * The LoRA bench (issue 12): `npm run bench:lora` (or `npm run bench -- --lora`).
 *
 * Bake: one rank-128 LoRA (the kohya-ss SD 1.5 layout of ../shared/layouts/lora_sd15_kohya_r32.json
 * with its rank 32 made 128, seeded values, generated here) into SD 1.5 fp16
 * (sd15_fp16_pruned-seed1), each run in a fresh process (bench/lora-child.ts), warm and cold,
 * beside the I/O floor of the same run: bench/floor.c reading the model and the LoRA and writing
 * the output's bytes, fastest technique kept. Rows: the native engine with every core (auto ISA,
 * and forced scalar: the code before the SIMD product), with 1 thread, and the TS engine once.
 *
 * Extract: rank 64 from sd15_fp16_pruned-seed2 (as the tune) over seed1 (as the base), time and
 * peak memory, beside kohya's pattern in the same run (bench/kohya_extract_way.py, Debian's
 * PyTorch: torch.linalg.svd of each ΔW), with each module's kept energy Σ S_r² / Σ S², ours vs theirs.
 *
 * Options: --dir DIR (models and outputs; pre-generated models may be symlinked in), --only bake|extract,
 * --cache warm,cold, --runs N, --shrink N (tiny models, a smoke test), --no-kohya, --no-js, --no-scalar
 * (skips the 60 CPU-second scalar row), --json FILE,
 * --kohya-blas reference|openblas (the LAPACK kohya's child runs on; default Debian's reference)
 * --kohya-budget SECONDS (kohya's pattern starts no module after that: on Debian's reference LAPACK
 * its full SVDs take about an hour for SD 1.5; the modules it did are compared, the rest listed).
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { openModel } from "../lib/formats";
import { HashCache, defaultHashCachePath, getFileHashes } from "../lib/library/hash-cache";
import { extractTargets } from "../lib/lora/targets";
import { shrinkLayout, writeSyntheticModel, type LayoutEntry } from "../lib/synthetic";
import { evictFiles, floorTechniques, runFloor, warmFiles, type FloorResult } from "./floor";
import { defaultLayoutsDir, loadLayout, modelFileName } from "./models";
import { machineInfo, techniqueName } from "./run";

const MiB = 1024 ** 2;

interface Args { dir: string; only?: "bake" | "extract"; caches: ("warm" | "cold")[]; runs: number; shrink: number; kohya: boolean; kohyaBudget?: number; kohyaBlas: "reference" | "openblas"; scalar: boolean; js: boolean; json?: string }

function parseArgs(argv: string[]): Args {
  const a: Args = { dir: join(tmpdir(), "tensormerge-bench-lora"), caches: ["warm", "cold"], runs: 1, shrink: 1, kohya: true, kohyaBlas: "reference", scalar: true, js: true };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!, v = () => argv[++i] ?? "";
    if (k === "--dir") a.dir = v();
    else if (k === "--only") a.only = v() as Args["only"];
    else if (k === "--cache") a.caches = v().split(",") as Args["caches"];
    else if (k === "--runs") a.runs = Number(v());
    else if (k === "--shrink") a.shrink = Number(v());
    else if (k === "--no-kohya") a.kohya = false;
    else if (k === "--kohya-budget") a.kohyaBudget = Number(v());
    else if (k === "--kohya-blas") {
      const blas = v();
      if (blas !== "reference" && blas !== "openblas") throw new Error(`--kohya-blas takes reference or openblas, not ${blas}`);
      a.kohyaBlas = blas;
    }
    else if (k === "--no-js") a.js = false;
    else if (k === "--no-scalar") a.scalar = false;
    else if (k === "--json") a.json = v();
    else if (k !== "--lora") throw new Error(`unknown option ${k}`);
  }
  return a;
}

const log = (s: string) => process.stderr.write(`${s}\n`);
const load1 = () => Number(loadavg()[0]!.toFixed(2));

interface ChildResult { seconds: number; cpuSeconds: number; report: Record<string, unknown>; baseline: { anon?: number; hwm?: number }; peak: { anon?: number; hwm?: number } }

function runChild(task: object, env: NodeJS.ProcessEnv = process.env): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(__dirname, "lora-child.js"), JSON.stringify(task)], { stdio: ["ignore", "pipe", "inherit"], env });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", () => {
      try {
        const r = JSON.parse(out.trim().split("\n").pop() ?? "{}") as ChildResult & { error?: { code: string; message: string } };
        if (r.error) reject(new Error(`${r.error.code}: ${r.error.message}`));
        else resolve(r);
      } catch (e) {
        reject(new Error(`lora-child printed no result: ${out.slice(0, 500)} (${String(e)})`));
      }
    });
  });
}

/** The rank-128 kohya SD 1.5 LoRA layout: rank dims 32 → 128 (down [32, …] and up [out, 32, …]). */
function loraLayout(layoutsDir: string, rank: number, shrink: number): LayoutEntry[] {
  const base = JSON.parse(readFileSync(join(layoutsDir, "lora_sd15_kohya_r32.json"), "utf8")) as LayoutEntry[];
  const ranked = base.map(([n, s, d]): LayoutEntry => {
    if (n.endsWith(".lora_down.weight")) return [n, [rank, ...s.slice(1)], d];
    if (n.endsWith(".lora_up.weight")) return [n, [s[0]!, rank, ...s.slice(2)], d];
    return [n, s, d];
  });
  return shrink > 1 ? shrinkLayout(ranked, shrink) : ranked;
}

async function ensureModel(path: string, layout: () => LayoutEntry[], seed: number): Promise<void> {
  if (existsSync(path)) return;
  log(`generating ${path}`);
  const temp = `${path}.partial-${process.pid}`;
  await writeSyntheticModel(temp, layout(), { seed });
  execFileSync("mv", [temp, path]);
}

function bestFloor(inputs: string[], outPath: string, outBytes: number, cache: "warm" | "cold"): FloorResult {
  let best: FloorResult | undefined;
  for (const write of ["buffered", "direct"] as const) {
    for (const t of floorTechniques(availableParallelism(), cache, write)) {
      if (cache === "warm") warmFiles(inputs);
      else evictFiles(inputs);
      const r = runFloor({ inputs, outPath, outBytes, technique: t });
      rmSync(outPath, { force: true });
      log(`  floor ${cache} ${techniqueName(t)}: ${r.seconds.toFixed(2)} s`);
      if (!best || r.seconds < best.seconds) best = r;
    }
  }
  return best!;
}

const privateMiB = (r: ChildResult) => ((r.peak.anon ?? 0) - (r.baseline.anon ?? 0)) / MiB;

async function benchBake(a: Args, layoutsDir: string): Promise<Record<string, unknown>> {
  const model = join(a.dir, modelFileName({ layout: "sd15_fp16_pruned", seed: 1, shrink: a.shrink }));
  const lora = join(a.dir, `lora_sd15_kohya_r128${a.shrink > 1 ? `-x${a.shrink}` : ""}-seed7.safetensors`);
  await ensureModel(model, () => loadLayout(layoutsDir, "sd15_fp16_pruned", a.shrink), 1);
  await ensureModel(lora, () => loraLayout(layoutsDir, 128, a.shrink), 7);
  const out = join(a.dir, "baked.safetensors");
  const inputs = [model, lora];
  // The bake records both files by sha256 (a once-per-file cost, kept in the hash cache). The
  // children use a cache of this bench's own, filled here before any timed run: the shared
  // ~/.cache one is rewritten by every other tensormerge process, and a lost entry made a
  // timed run hash the 2.1 GB model again (3.8 CPU-s, the first run of the 15:31 quiet check).
  const hashCacheDir = process.env.TENSORMERGE_CACHE_DIR ?? join(a.dir, "hash-cache");
  const childEnv = { ...process.env, TENSORMERGE_CACHE_DIR: hashCacheDir };
  const cache = await HashCache.open(defaultHashCachePath(childEnv));
  for (const f of inputs) await getFileHashes(f, { cache });
  const variants: { name: string; engine: "native" | "js"; isa: "auto" | "scalar"; threads: number; caches: string[] }[] = [
    { name: "native, auto ISA, all cores", engine: "native", isa: "auto", threads: 0, caches: a.caches },
    ...(a.scalar ? [{ name: "native, scalar (before: no SIMD product), all cores", engine: "native" as const, isa: "scalar" as const, threads: 0, caches: ["warm"] }] : []),
    { name: "native, auto ISA, 1 thread", engine: "native", isa: "auto", threads: 1, caches: ["warm"] },
    ...(a.js ? [{ name: "TS engine, all cores", engine: "js" as const, isa: "auto" as const, threads: 0, caches: ["warm"] }] : []),
  ];
  const rows: Record<string, unknown>[] = [];
  const floors: Record<string, FloorResult> = {};
  for (const cache of a.caches) {
    for (const v of variants.filter((x) => x.caches.includes(cache))) {
      for (let run = 0; run < a.runs; run++) {
        if (cache === "warm") warmFiles(inputs);
        else evictFiles(inputs);
        const loadBefore = load1();
        const r = await runChild({ bake: { model, loras: [{ path: lora, ratio: 0.8 }], out, overwrite: true, engine: v.engine, isa: v.isa, ...(v.threads ? { threads: v.threads } : {}) } }, childEnv);
        const bytes = statSync(out).size;
        rmSync(out, { force: true });
        if (!floors[cache]) floors[cache] = bestFloor(inputs, join(a.dir, "floor.out"), bytes, cache);
        const floor = floors[cache]!;
        const row = { scenario: "bake r128 → SD 1.5 fp16", variant: v.name, cache, run, seconds: r.seconds, cpuSeconds: r.cpuSeconds, floorSeconds: floor.seconds, floorTechnique: techniqueName(floor), ratio: r.seconds / floor.seconds, privateMiB: privateMiB(r), hwmMiB: (r.peak.hwm ?? 0) / MiB, isa: r.report.isa, threads: r.report.threads, load1: [loadBefore, load1()], outBytes: bytes };
        log(`bake ${cache} ${v.name}: ${r.seconds.toFixed(2)} s, floor ${floor.seconds.toFixed(2)} s (${row.floorTechnique}), ratio ${row.ratio.toFixed(2)}, private ${row.privateMiB.toFixed(0)} MiB, load ${row.load1.join(" → ")}`);
        rows.push(row);
      }
    }
  }
  return { model, lora, modelBytes: statSync(model).size, loraBytes: statSync(lora).size, rows, floors };
}

async function benchExtract(a: Args, layoutsDir: string): Promise<Record<string, unknown>> {
  const base = join(a.dir, modelFileName({ layout: "sd15_fp16_pruned", seed: 1, shrink: a.shrink }));
  const tuned = join(a.dir, modelFileName({ layout: "sd15_fp16_pruned", seed: 2, shrink: a.shrink }));
  await ensureModel(base, () => loadLayout(layoutsDir, "sd15_fp16_pruned", a.shrink), 1);
  await ensureModel(tuned, () => loadLayout(layoutsDir, "sd15_fp16_pruned", a.shrink), 2);
  const rank = a.shrink > 1 ? Math.max(4, Math.round(64 / a.shrink)) : 64;
  const out = join(a.dir, "extracted.safetensors");
  warmFiles([tuned, base]);
  const loadBefore = load1();
  const ours = await runChild({ extract: { tuned, base, rank, out, overwrite: true, dtype: "fp16", recipeMetadata: false } });
  rmSync(out, { force: true });
  const keptOursMean = (ours.report.modules as { keptEnergy: number }[]).reduce((t, m) => t + m.keptEnergy, 0) / (ours.report.modules as unknown[]).length;
  const oursRow = { tool: "tensormerge extract-lora", keptOursMean, seconds: ours.seconds, cpuSeconds: ours.cpuSeconds, privateMiB: privateMiB(ours), hwmMiB: (ours.peak.hwm ?? 0) / MiB, load1: [loadBefore, load1()] };
  log(`extract ours: ${ours.seconds.toFixed(1)} s (${ours.cpuSeconds.toFixed(1)} CPU-s), private ${oursRow.privateMiB.toFixed(0)} MiB, hwm ${oursRow.hwmMiB.toFixed(0)} MiB, load ${oursRow.load1.join(" → ")}`);
  const modules = (ours.report.modules as { name: string; keptEnergy: number }[]);
  let kohya: Record<string, unknown> | undefined;
  if (a.kohya) {
    const model = await openModel(base);
    const targets = extractTargets(model, "sd1", false).filter((t) => modules.some((m) => m.name === t.name));
    const list = join(a.dir, "kohya-modules.json"), result = join(a.dir, "kohya-result.json");
    writeFileSync(list, JSON.stringify(targets.map((t) => ({ name: t.name, tensor: t.tensor.name, rowStart: t.rowStart, rowCount: t.rowCount }))));
    warmFiles([tuned, base]);
    const before = load1();
    rmSync(result, { force: true });
    let stopped = false;
    try {
      // The child keeps this process's niceness (start the bench with `nice -n 5` for both tools).
      execFileSync("/usr/bin/python3", [join(__dirname, "..", "..", "bench", "kohya_extract_way.py"), tuned, base, list, String(rank), result, ...(a.kohyaBudget ? [String(a.kohyaBudget)] : [])], { stdio: ["ignore", "inherit", "inherit"], env: kohyaEnv(a.kohyaBlas) });
    } catch (e) {
      // Failed or stopped from outside: the script rewrites its result after every module, keep what it did.
      stopped = true;
      log(`extract kohya: did not finish (${(e as Error).message.split("\n")[0]})`);
      if (!existsSync(result)) return { tuned, base, rank, modules: modules.length, ours: oursRow, kohya: { error: (e as Error).message.split("\n")[0], load1: [before, load1()] } };
    }
    const k = JSON.parse(readFileSync(result, "utf8")) as KohyaResult;
    kohya = { ...compareKohya(k, ours.report.modules as OurModule[], [before, load1()]), ...(stopped ? { stoppedFromOutside: true } : {}) };
    log(`extract kohya: ${k.finished ? "finished" : `stopped ${stopped ? "from outside" : "by its budget"} after ${k.modulesDone} of ${k.modulesTotal} modules`}, ${k.seconds.toFixed(1)} s (${k.cpuSeconds.toFixed(1)} CPU-s, loading ${k.loadSeconds.toFixed(1)} s), peak RSS ${(k.peakRss / MiB).toFixed(0)} MiB; kept energy ours / theirs per module: ${JSON.stringify(kohya.keptRatio)}`);
  }
  return { tuned, base, rank, modules: modules.length, ours: oursRow, kohya };
}

/**
 * Debian's torch calls BLAS / LAPACK through /usr/lib/x86_64-linux-gnu/lib{blas,lapack}.so.3, which
 * the alternatives system points at the netlib reference build by default. `--kohya-blas openblas`
 * puts Debian's OpenBLAS (package libopenblas0-pthread, threaded) first on the library path for
 * kohya's child only: closer to the MKL build of torch that kohya's users run, and ~12x faster per
 * SVD here (bench/RESULTS.md). The script reports the libraries it actually loaded.
 */
function kohyaEnv(blas: Args["kohyaBlas"]): NodeJS.ProcessEnv {
  if (blas === "reference") return process.env;
  const dir = "/usr/lib/x86_64-linux-gnu/openblas-pthread";
  if (!existsSync(join(dir, "liblapack.so.3"))) throw new Error(`--kohya-blas openblas: ${dir}/liblapack.so.3 is missing (apt-get install libopenblas0-pthread)`);
  return { ...process.env, LD_LIBRARY_PATH: [dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") };
}

interface OurModule { name: string; rows: number; cols: number; keptEnergy: number }
interface KohyaResult { finished: boolean; modulesTotal: number; modulesDone: number; seconds: number; loadSeconds: number; cpuSeconds: number; peakRss: number; threads: number; torch: string; blas?: string[]; budgetSeconds: number | null; kept: Record<string, number>; modules: { name: string; rows: number; cols: number; seconds: number; kept: number }[] }

/** The LAPACK kohya's child loaded, from the libraries it reported (older result files have none). */
function blasName(libs: string[] | undefined): string {
  if (!libs) return "netlib reference LAPACK";
  return libs.some((l) => l.includes("openblas")) ? "OpenBLAS LAPACK" : libs.some((l) => /\/(blas|lapack)\//.test(l)) ? "netlib reference LAPACK" : libs.join(", ");
}

/**
 * Kept energy per module, ours beside kohya's pattern's, for the modules it did; for a run its
 * budget stopped, the time of the modules left estimated from the modules of the same shape it did.
 */
function compareKohya(k: KohyaResult, ours: OurModule[], load: number[]): Record<string, unknown> {
  const theirs = new Map(k.modules.map((m) => [m.name, m]));
  const both = ours.filter((m) => theirs.has(m.name));
  const ratios = both.map((m) => m.keptEnergy / theirs.get(m.name)!.kept).filter(Number.isFinite);
  const shapeSeconds = new Map<string, number>();
  for (const m of k.modules) shapeSeconds.set(`${m.rows}x${m.cols}`, m.seconds);
  const left = ours.filter((m) => !theirs.has(m.name));
  const unknown = left.filter((m) => !shapeSeconds.has(`${m.rows}x${m.cols}`));
  const estimateLeft = left.reduce((s, m) => s + (shapeSeconds.get(`${m.rows}x${m.cols}`) ?? 0), 0);
  const stat = (xs: number[]) => (xs.length ? { min: Math.min(...xs), mean: xs.reduce((s, x) => s + x, 0) / xs.length, max: Math.max(...xs) } : undefined);
  return {
    tool: `kohya pattern (torch ${k.torch}, ${k.threads} torch threads, torch.linalg.svd, ${blasName(k.blas)})`, blas: k.blas,
    finished: k.finished, modulesDone: k.modulesDone, modulesTotal: k.modulesTotal, budgetSeconds: k.budgetSeconds,
    seconds: k.seconds, cpuSeconds: k.cpuSeconds, loadSeconds: k.loadSeconds, peakRssMiB: k.peakRss / MiB, load1: load,
    ...(k.finished ? {} : { estimatedSecondsLeft: estimateLeft, modulesLeftOfUntimedShape: unknown.map((m) => `${m.name} ${m.rows}x${m.cols}`) }),
    keptRatio: stat(ratios), keptOursMean: stat(both.map((m) => m.keptEnergy))?.mean, keptTheirsMean: stat(both.map((m) => theirs.get(m.name)!.kept))?.mean,
    perModule: both.map((m) => ({ name: m.name, rows: m.rows, cols: m.cols, ours: m.keptEnergy, theirs: theirs.get(m.name)!.kept, theirSeconds: theirs.get(m.name)!.seconds })),
  };
}

export async function loraMain(argv: string[]): Promise<number> {
  const a = parseArgs(argv);
  mkdirSync(a.dir, { recursive: true });
  const layoutsDir = process.env.TENSORMERGE_LAYOUTS ?? defaultLayoutsDir();
  const started = Date.now();
  const results: Record<string, unknown> = { command: `npm run bench -- --lora ${argv.join(" ")}`, date: new Date().toISOString(), machine: machineInfo(a.dir), load1Start: load1() };
  if (a.only !== "extract") results.bake = await benchBake(a, layoutsDir);
  if (a.only !== "bake") results.extract = await benchExtract(a, layoutsDir);
  results.seconds = (Date.now() - started) / 1000;
  results.load1End = load1();
  const text = JSON.stringify(results, null, 2);
  if (a.json) writeFileSync(a.json, text + "\n");
  process.stdout.write(text + "\n");
  return 0;
}

if (require.main === module) {
  loraMain(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      log(String((e as Error).stack ?? e));
      process.exitCode = 1;
    },
  );
}
