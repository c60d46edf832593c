/**
 * The page cache policy for uncached inputs (MergeOptions.inputCache, native/core/job.h
 * merge_input_cache): "keep" reads cold inputs through the maps, so they are cached afterwards;
 * "bypass" reads them with the reader's direct reads, so no page-cache page is made; "auto"
 * bypasses under a hypervisor and keeps on bare metal. Which one "auto" should be is taken here
 * from /proc/cpuinfo's `hypervisor` flag (Linux sets it from the same CPUID bit the engine reads,
 * but this reads it independently of the engine). Inputs are evicted before each run; the bytes
 * are the TS engine's whatever the policy.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { evictFiles, residency } from "../../bench/floor";
import { nativeAvailable } from "../../lib/engine";
import { merge } from "../../lib/merge";
import { captureEngineStats, setOnlyTuningKnobs } from "../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";

/** Two fp32 tensors of ~3 MB and ~1 MB and a small one: several 1 MiB windows. */
function writeInput(path: string, seed: number): void {
  const tensors: Record<string, TestTensor> = {};
  [786_433, 262_147, 5].forEach((n, i) => {
    tensors[`model.diffusion_model.input_blocks.${i}.0.proj.weight`] = { dtype: "F32", shape: [n], values: randomValues(n, seed * 7 + i, false) };
  });
  writeModel(path, tensors);
}

function onHypervisor(): boolean {
  const flags = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("flags"));
  return flags !== undefined && flags.split(/\s+/).includes("hypervisor");
}

describe("native engine: the input cache policy (keep, bypass, auto)", function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let a: string, b: string, expected: Buffer;
  let restore = () => {};
  const stats = captureEngineStats();
  before(async function () {
    if (!nativeAvailable()) this.skip();
    dir = tempDir("tm-input-cache-");
    a = join(dir.path, "a.safetensors");
    b = join(dir.path, "b.safetensors");
    writeInput(a, 1);
    writeInput(b, 2);
    const ref = join(dir.path, "ref.safetensors");
    await merge({ method: "weighted-sum", a, b, multiplier: 0.3, dtype: "fp16", engine: "js", recipeMetadata: false, out: ref });
    expected = readFileSync(ref);
    stats.install();
  });
  beforeEach(() => {
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1" }); // every other knob unset: the defaults decide
  });
  afterEach(() => restore());
  after(() => {
    stats.restore();
    dir?.cleanup();
  });

  /** Evicts both inputs, merges cold with the policy, checks the bytes; returns the engine's stats and what stayed cached. */
  async function coldMerge(inputCache: "keep" | "bypass" | "auto" | undefined, name: string) {
    const evicted = evictFiles([a, b]);
    assert.ok(evicted[a]! < 0.05 && evicted[b]! < 0.05, `the inputs must be evicted first: ${JSON.stringify(evicted)}`);
    const out = join(dir.path, `${name}.safetensors`);
    stats.reset();
    await merge({ method: "weighted-sum", a, b, multiplier: 0.3, dtype: "fp16", engine: "native", threads: 2, recipeMetadata: false, out, ...(inputCache ? { inputCache } : {}) });
    assert.ok(readFileSync(out).equals(expected), `${name}: the output differs from the TS engine's`);
    const s = stats.last()!;
    const cached = residency([a, b]);
    return { s, cached: Math.min(cached[a]!, cached[b]!), maxCached: Math.max(cached[a]!, cached[b]!) };
  }

  function assertKept(r: Awaited<ReturnType<typeof coldMerge>>): void {
    assert.equal(r.s.inputCacheBypass, 0);
    assert.equal(r.s.bufferedReads, 0, "keep reads through the maps: no reader");
    assert.ok(r.cached > 0.9, `keep leaves the inputs cached: ${r.cached}`);
  }

  function assertBypassed(r: Awaited<ReturnType<typeof coldMerge>>): void {
    assert.equal(r.s.inputCacheBypass, 1);
    assert.equal(r.s.bufferedReads, 1, "bypass reads the cold runs with the reader");
    assert.ok(r.s.bytesDirectRead! + r.s.bytesBufferedRead! > 3_000_000, `the reader read the inputs: ${r.s.bytesDirectRead} direct, ${r.s.bytesBufferedRead} buffered`);
    // Where the filesystem allows O_DIRECT, nothing was cached (the header read by TS is a page or two).
    if (r.s.directReadFallbacks === 0) assert.ok(r.maxCached < 0.2, `bypass leaves the inputs uncached: ${r.maxCached}`);
  }

  it("keep: cold inputs are read through the maps and stay cached", async () => {
    assertKept(await coldMerge("keep", "keep"));
  });

  it("bypass: cold inputs are read by the reader (direct where allowed) and are not cached afterwards", async () => {
    assertBypassed(await coldMerge("bypass", "bypass"));
  });

  it(`auto (and unset) follow the CPU's hypervisor flag: ${onHypervisor() ? "bypass on this VM" : "keep on this machine"}`, async () => {
    for (const policy of ["auto", undefined] as const) {
      const r = await coldMerge(policy, `auto-${policy ?? "unset"}`);
      if (onHypervisor()) assertBypassed(r);
      else assertKept(r);
    }
  });

  it("a warm job stays on the maps whatever the policy (cached runs are not read again)", async () => {
    readFileSync(a);
    readFileSync(b);
    const out = join(dir.path, "warm.safetensors");
    stats.reset();
    await merge({ method: "weighted-sum", a, b, multiplier: 0.3, dtype: "fp16", engine: "native", recipeMetadata: false, inputCache: "bypass", out });
    assert.ok(readFileSync(out).equals(expected));
    assert.equal(stats.last()!.bytesDirectRead, 0);
  });

  it("bypass on a sweep (two outputs read the same inputs) keeps the maps: the second output finds them cached", async () => {
    const evicted = evictFiles([a, b]);
    assert.ok(evicted[a]! < 0.05 && evicted[b]! < 0.05);
    const out = join(dir.path, "sweep-<M>.safetensors");
    stats.reset();
    await merge({ method: "weighted-sum", a, b, multiplier: [0.3, 0.6], dtype: "fp16", engine: "native", recipeMetadata: false, inputCache: "bypass", out });
    assert.ok(readFileSync(join(dir.path, "sweep-0.3.safetensors")).equals(expected));
    const s = stats.last()!;
    assert.equal(s.inputsReadOnce, 0);
    assert.equal(s.bufferedReads, 0, "no reader: its direct reads would read the inputs once per output");
  });

  it("an unknown policy is refused naming the option, from the API and the CLI, before anything is written", async () => {
    const out = join(dir.path, "bad.safetensors");
    await assert.rejects(merge({ method: "weighted-sum", a, b, multiplier: 0.3, engine: "native", out, inputCache: "fast" as never }), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /inputCache/.test(e.message));
    const cli = spawnSync(process.execPath, [join(__dirname, "../../lib/cli/main.js"), "merge", "--a", a, "--b", b, "--multiplier", "0.3", "--input-cache", "fast", "--out", out], { encoding: "utf8" });
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, /inputCache/);
    assert.throws(() => readFileSync(out));
  });
});
