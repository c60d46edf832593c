/**
 * The native engine's k-th magnitude key cache (native/core/reductions.h): pass 1 keeps the keys
 * of a prefix of each piece (all of it when it fits TENSORMERGE_REDUCTION_CACHE_KIB) and pass 2
 * reads them instead of evaluating the task vectors again; pieces too big for the budget fall
 * back to evaluating the rest. Whatever the budget (none, a prefix cut at a block boundary, the
 * whole piece), threads and windows, TIES must write the TS engine's bytes; the engine's own
 * counters say which path ran. The radix path runs when a piece's sampled bracket misses
 * (kth-bracket.test.ts); here the bracket is off (TENSORMERGE_KTH_BRACKET=0) so every big piece takes it.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setEngineKnobs } from "../../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../../helpers/models";

const BIG = "model.diffusion_model.middle_block.1.proj_in.weight";
const BIG2 = "model.diffusion_model.middle_block.1.proj_out.weight";
const SMALL = "model.diffusion_model.out.2.weight";
const N_BIG = 300_001; // above the direct-select size (2^18): the two-pass histogram path
const N_SMALL = 513 * 129; // at most 2^18: keys always kept, radix select on them
const BLOCK = 4096; // REDUCTION_BLOCK

function writeInputs(dir: string, m: number): string {
  const tensors: Record<string, TestTensor> = {
    [BIG]: { dtype: "F16", shape: [N_BIG], values: randomValues(N_BIG, 21 + m).map((x) => Math.round(x * 4000) / 4000) },
    [SMALL]: { dtype: "F16", shape: [513, 129], values: randomValues(N_SMALL, 31 + m, m > 0).map((x) => (Number.isFinite(x) ? x : 0.02)) },
    [BIG2]: { dtype: "F32", shape: [N_BIG], values: randomValues(N_BIG, 41 + m, true) },
  };
  const path = join(dir, `m${m}.safetensors`);
  writeModel(path, tensors);
  return path;
}

describe("many-model methods: the native k-th magnitude key cache", function () {
  this.timeout(300000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-many-cache-");
    paths = [0, 1, 2, 3].map((m) => writeInputs(dir.path, m));
    capture.install();
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  const options = { recipeMetadata: false, method: "ties", params: { density: 0.3 }, modelWeights: [1, -0.7, 0.5] };
  // Three models: a piece's keys take 12 bytes per element.
  const budgets = [
    { kib: "0", cached: N_SMALL, what: "no cache: pass 2 evaluates the task vectors again" },
    { kib: "1024", cached: N_SMALL + 2 * (Math.floor(Math.floor((1024 * 1024) / 12) / BLOCK) * BLOCK), what: "a prefix of whole blocks cached, the rest evaluated again" },
    { kib: String(Math.ceil((N_BIG * 12) / 1024)), cached: N_SMALL + 2 * N_BIG, what: "each piece cached whole, exactly at the budget" },
    { kib: undefined, cached: N_SMALL + 2 * N_BIG, what: "the default budget" },
  ];

  it("TIES writes the TS engine's bytes with no cache, a partial one and a whole one, at threads 1/2 and 1 MiB windows", async function () {
    const ref = join(dir.path, "ties-js.safetensors");
    await merge({ ...options, engine: "js", base: paths[0], models: paths.slice(1), out: ref } as never);
    const expected = readFileSync(ref);
    if (!ENGINES.includes("native")) this.skip();
    for (const b of budgets) {
      for (const [threads, windowMib] of [[1, undefined], [2, "1"]] as const) {
        const restore = setEngineKnobs({ TENSORMERGE_KTH_BRACKET: "0", TENSORMERGE_REDUCTION_CACHE_KIB: b.kib, TENSORMERGE_WINDOW_MIB: windowMib });
        try {
          const out = join(dir.path, `ties-${b.kib ?? "d"}-${threads}.safetensors`);
          capture.reset();
          await merge({ ...options, engine: "native", threads, base: paths[0], models: paths.slice(1), out } as never);
          assert.ok(readFileSync(out).equals(expected), `${b.what} (cache ${b.kib ?? "default"} KiB, threads ${threads}): bytes differ from the TS engine`);
          const stats = capture.last();
          assert.equal(stats?.reductionKthElements, N_SMALL + 2 * N_BIG, "elements with a k-th magnitude");
          assert.equal(stats?.reductionCachedElements, b.cached, `${b.what}: cached elements`);
        } finally {
          restore();
        }
      }
    }
  });

  it("one model: the k-th key from the cache equals the one from evaluating again, for densities from one element to all", async function () {
    if (!ENGINES.includes("native")) this.skip();
    for (const density of [1 / N_BIG, 0.01, 0.5, 1 - 1e-6]) {
      const outs: Buffer[] = [];
      for (const kib of ["0", "1024", undefined]) {
        const restore = setEngineKnobs({ TENSORMERGE_KTH_BRACKET: "0", TENSORMERGE_REDUCTION_CACHE_KIB: kib });
        try {
          const out = join(dir.path, `one-${density}-${kib ?? "d"}.safetensors`);
          await merge({ recipeMetadata: false, engine: "native", threads: 2, method: "ties", params: { density }, base: paths[0], models: [paths[2]], out } as never);
          outs.push(readFileSync(out));
        } finally {
          restore();
        }
      }
      assert.ok(outs.every((o) => o.equals(outs[0]!)), `density ${density}: the cache changed the result`);
    }
  });
});
