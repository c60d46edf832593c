/**
 * Smoke test of the benchmark code on tiny models: the dev runner (bench/run.ts) end to end
 * with its C floor tool, model reuse and eviction, the RESULTS.md generator, and the user-facing
 * `tensormerge bench`. No timing assertions: the machine is shared and timings are noise here.
 */
import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main, mergeOptionsFor, runBench, type BenchOptions } from "../../bench/run";
import { scenarioById } from "../../bench/scenarios";
import { BENCH_LOCK, claimBenchFolder, ensureModels, modelPath } from "../../bench/models";
import { BEGIN, END } from "../../bench/report";
import { ioFloor } from "../../lib/bench/floor";
import { parseProcStatus, sampleMemory } from "../../lib/bench/memory";
import { summarize } from "../../lib/bench/stats";
import { formatUserBench, runUserBench } from "../../lib/bench/user-bench";
import { nativeAvailable } from "../../lib/engine";
import { loadBuiltinLayout, shrinkLayout, withFloatDtype, type LayoutEntry } from "../../lib/synthetic";
import { gunzipSync } from "node:zlib";
import { layoutsDir as libraryLayoutsDir } from "../library/fixtures";
import { runSweepBench } from "../../bench/sweep";
import { haveCompiler } from "../helpers/compiler";

describe("bench (smoke, tiny models)", function () {
  this.timeout(180000);
  let root: string, layouts: string, dir: string;

  before(() => {
    root = mkdtempSync(join(tmpdir(), "tm-bench-test-"));
    layouts = join(root, "layouts");
    dir = join(root, "models");
    execFileSync("mkdir", ["-p", layouts]);
    // Tiny stand-ins with the real SD 1.5 keys: "sd15" in fp32, "sdxl" as the same keys in fp16.
    const sd15 = shrinkLayout(loadBuiltinLayout("sd15"), 64);
    writeFileSync(join(layouts, "sd15.json"), JSON.stringify(sd15));
    writeFileSync(join(layouts, "sdxl.json"), JSON.stringify(withFloatDtype(sd15, "F16")));
    // FLUX.1 dev in ComfyUI's fp8 layout (fp8 e4m3 weights, bf16 norms), every key, shrunk.
    const plain = join(libraryLayoutsDir(), "flux1_dev_comfy_fp8.json");
    const text = existsSync(plain) ? readFileSync(plain, "utf8") : gunzipSync(readFileSync(`${plain}.gz`)).toString("utf8");
    writeFileSync(join(layouts, "flux1_dev_comfy_fp8.json"), JSON.stringify(shrinkLayout(JSON.parse(text) as LayoutEntry[], 64)));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("summarizes repeated timings", () => {
    const s = summarize([3, 1, 2, NaN]);
    assert.equal(s.n, 3);
    assert.equal(s.median, 2);
    assert.equal(s.spread, 1);
  });

  it("claims its folder: a second live run is refused, a dead run's claim is taken over", () => {
    const folder = mkdtempSync(join(root, "claim-"));
    const release = claimBenchFolder(folder);
    assert.equal(readFileSync(join(folder, BENCH_LOCK), "utf8").trim(), String(process.pid));
    release();
    assert.ok(!existsSync(join(folder, BENCH_LOCK)));
    // Another live process (this one's parent) holds it: refused, naming the pid.
    writeFileSync(join(folder, BENCH_LOCK), `${process.ppid}\n`);
    assert.throws(() => claimBenchFolder(folder), new RegExp(`in use by another bench run \\(pid ${process.ppid}\\)`));
    // A claim whose process is gone (a pid above the kernel's limit) is taken over.
    writeFileSync(join(folder, BENCH_LOCK), "4194305\n");
    claimBenchFolder(folder)();
    assert.ok(!existsSync(join(folder, BENCH_LOCK)));
  });

  it("parses /proc/<pid>/status", () => {
    const s = parseProcStatus("Name:\tnode\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t   512 kB\nRssFile:\t   256 kB\n");
    assert.deepEqual(s, { hwm: 2048 * 1024, rss: 1024 * 1024, anon: 512 * 1024, file: 256 * 1024 });
    if (process.platform === "linux") assert.ok((sampleMemory().rss ?? 0) > 0);
  });

  it("runs every default scenario against the floor and writes the results", async function () {
    if (!haveCompiler()) this.skip();
    const lines: string[] = [];
    const resultsPath = join(root, "RESULTS.md");
    writeFileSync(resultsPath, "# Results\n\nhand-written analysis\n");
    const options: BenchOptions = {
      dir, layoutsDir: layouts, scenarios: ["ws-sd15", "noint-sd15", "ad-sdxl"], runs: 1, jsRuns: 1, caches: ["warm", "cold"],
      threads: [1, 2], js: true, shrink: 1, budgetBytes: 1e9, minFreeBytes: 0, coldMethod: "evict", engineEnv: {},
      jsonPath: join(root, "results.json"), resultsPath, command: "test", log: (l) => lines.push(l),
    };
    const res = await runBench(options);
    // ws-sd15: native 1t, 2t, js; noint: 1t, 2t; ad-sdxl: 1t, 2t — each warm and cold.
    assert.equal(res.rows.length, 2 * (3 + 2 + 2));
    for (const r of res.rows) {
      assert.ok(r.merge.median > 0 && Number.isFinite(r.ratio.median), `${r.scenario} ${r.variant}`);
      assert.ok(r.bytesWritten > 0 && r.bytesRead > 0);
      assert.ok(r.limit.length > 0);
    }
    assert.ok(res.floors.some((f) => f.calibration), "the first floor of each scenario calibrates");
    const md = readFileSync(resultsPath, "utf8");
    assert.ok(md.includes("hand-written analysis") && md.includes(BEGIN) && md.includes(END));
    assert.ok(md.includes("add difference, 3 × SDXL fp16 → fp16"));
    assert.equal(JSON.parse(readFileSync(join(root, "results.json"), "utf8")).rows.length, res.rows.length);
    // Outputs are removed, models stay.
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith("out-") || n.startsWith("floor-")), []);
    assert.ok(existsSync(modelPath(dir, { layout: "sd15", seed: 2 })));
  });

  it("passes each scenario's method and parameters to the merge", () => {
    const md = mergeOptionsFor(scenarioById("md-sd15"), ["a", "b", "c"], "out", { id: "js", engine: "js", threads: 1 });
    assert.deepEqual([md.method, md.multiplier, md.beta, md.c, md.dtype], ["multiply-difference", 0.3, 0.5, "c", "fp16"]);
    const td = mergeOptionsFor(scenarioById("td-sd15"), ["a", "b", "c"], "out", { id: "native-2t", engine: "native", threads: 2 });
    assert.deepEqual([td.method, td.multiplier, td.beta, td.threads], ["train-difference", 1, undefined, 2]);
  });

  it("--isa forces the native engine's kernels (and leaves the TS engine alone)", async () => {
    const native = { id: "native-2t", engine: "native" as const, threads: 2 };
    assert.equal(mergeOptionsFor(scenarioById("md-sd15"), ["a", "b", "c"], "out", native, "avx2").isa, "avx2");
    assert.equal(mergeOptionsFor(scenarioById("md-sd15"), ["a", "b", "c"], "out", native).isa, undefined);
    assert.equal(mergeOptionsFor(scenarioById("md-sd15"), ["a", "b", "c"], "out", { id: "js", engine: "js", threads: 1 }, "avx2").isa, undefined);
    await assert.rejects(main(["--isa", "avx3", "--scenarios", "md-sd15"]), /--isa expects one of/);
  });

  it("runs the element-wise method and fp8 Flux scenarios, native and TS, warm and cold", async function () {
    if (!haveCompiler()) this.skip();
    const res = await runBench({
      dir, layoutsDir: layouts, scenarios: ["td-sd15", "md-sd15", "ws-flux-fp8"], runs: 1, jsRuns: 1, caches: ["warm", "cold"],
      threads: [1, 2], js: true, shrink: 1, budgetBytes: 1e9, minFreeBytes: 0, coldMethod: "evict", engineEnv: {}, command: "test", log: () => undefined,
    });
    // Each scenario: native 1t, 2t and TS, warm and cold.
    assert.deepEqual(res.rows.map((r) => `${r.scenario} ${r.variant} ${r.cache}`).sort(), ["td-sd15", "md-sd15", "ws-flux-fp8"].flatMap((s) => ["native-1t", "native-2t", "js"].flatMap((v) => ["warm", "cold"].map((c) => `${s} ${v} ${c}`))).sort());
    for (const r of res.rows) assert.ok(r.merge.median > 0 && Number.isFinite(r.ratio.median) && r.bytesRead > 0, `${r.scenario} ${r.variant}`);
    // Every engine writes the same number of bytes; fp8 kept (--dtype same): the Flux output is the size of one input.
    for (const s of ["td-sd15", "md-sd15", "ws-flux-fp8"]) assert.equal(new Set(res.rows.filter((r) => r.scenario === s).map((r) => r.bytesWritten)).size, 1, s);
    const flux = res.rows.find((r) => r.scenario === "ws-flux-fp8")!;
    const input = statSync(modelPath(dir, { layout: "flux1_dev_comfy_fp8", seed: 1 })).size;
    assert.ok(Math.abs(flux.bytesWritten - input) < 0.01 * input, `${flux.bytesWritten} bytes written for a ${input}-byte input`);
  });

  it("reuses models and evicts the ones no scenario needs past the budget", async () => {
    const log = () => undefined;
    const spec = { layout: "sd15", seed: 7 };
    const [p] = await ensureModels([spec], { dir, layoutsDir: layouts, keep: [], budgetBytes: 1e9, reserveBytes: 0, minFreeBytes: 0, log });
    const mtime = statSync(p!).mtimeMs;
    await ensureModels([spec], { dir, layoutsDir: layouts, keep: [], budgetBytes: 1e9, reserveBytes: 0, minFreeBytes: 0, log });
    assert.equal(statSync(p!).mtimeMs, mtime, "reused, not rewritten");
    const size = statSync(p!).size;
    // A budget of two models: generating seed 8 must evict the models nobody keeps.
    await ensureModels([{ layout: "sd15", seed: 8 }], { dir, layoutsDir: layouts, keep: [spec], budgetBytes: 2.5 * size, reserveBytes: 0, minFreeBytes: 0, log });
    assert.ok(existsSync(p!), "kept");
    assert.ok(!existsSync(modelPath(dir, { layout: "sd15", seed: 1 })), "evicted");
  });

  it("the sweep bench runs a single merge and a sweep both ways, and counts the bytes read", async function () {
    if (!haveCompiler()) this.skip();
    const lines: string[] = [];
    const { capped, rows } = await runSweepBench({ dir, layoutsDir: layouts, values: [0.2, 0.4], runs: 1, cacheLimitBytes: 0, coldMethod: "evict", log: (l) => lines.push(l) });
    assert.equal(capped, false);
    assert.deepEqual(rows.map((r) => [r.label, r.outputs]), [["1 value", 1], ["2 values, interleaved", 2], ["2 values, one after another", 2]]);
    for (const r of rows) assert.ok(r.seconds.median > 0 && Number.isFinite(r.readRatio) && r.readRatio >= 0, JSON.stringify(r));
    assert.equal(lines.filter((l) => /^run 1\/1 .*output\(s\)$/.test(l)).length, 3, lines.join("\n"));
    assert.ok(!existsSync(join(dir, "sweep-out")), "outputs removed");
  });

  it("--clean removes the models and the folder", async () => {
    const out = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      assert.equal(await main(["--dir", dir, "--clean"]), 0);
    } finally {
      process.stdout.write = out;
    }
    assert.ok(!existsSync(dir));
  });

  it("measures the I/O floor from Node", async () => {
    const input = join(root, "in.bin");
    writeFileSync(input, Buffer.alloc(3 << 20, 7));
    const f = await ioFloor({ inputs: [input, input], outPath: join(root, "floor.bin"), outBytes: (1 << 20) + 123, chunkBytes: 1 << 20 });
    assert.equal(f.bytesRead, 6 << 20);
    assert.equal(f.bytesWritten, (1 << 20) + 123);
    assert.ok(f.complete && f.seconds > 0);
    assert.ok(!existsSync(join(root, "floor.bin")));
  });

  it("tensormerge bench: native vs TS vs floor on the user's models, outputs deleted", async () => {
    const models = join(root, "user");
    await ensureModels([{ layout: "sd15", seed: 1 }, { layout: "sd15", seed: 2 }], { dir: models, layoutsDir: layouts, keep: [], budgetBytes: 1e9, reserveBytes: 0, minFreeBytes: 0, log: () => undefined });
    const tmp = join(root, "tmp");
    execFileSync("mkdir", ["-p", tmp]);
    const r = await runUserBench({ a: modelPath(models, { layout: "sd15", seed: 1 }), b: modelPath(models, { layout: "sd15", seed: 2 }), seconds: 60, tmp });
    assert.equal(r.method, "weighted-sum");
    assert.deepEqual(r.rows.map((x) => x.name), nativeAvailable() ? ["native", "ts", "floor"] : ["ts", "floor"]);
    for (const row of r.rows) assert.ok(row.complete && row.seconds > 0 && Number.isFinite(row.ratio));
    assert.ok(formatUserBench(r).includes("I/O floor"));
    assert.deepEqual(readdirSync(tmp), [], "the temporary folder is removed");
  });
});
