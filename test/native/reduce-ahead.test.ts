/**
 * The reduce-ahead thread (native/core/engine.cc reduce_ahead_loop, TENSORMERGE_REDUCE_AHEAD): the
 * statistics passes of the pieces the statistics read queues run on a thread and pool of their
 * own while the job's pool writes the windows before them. Only when and where each piece's
 * statistics are computed changes, so with it on or off, any read-ahead budget (none: only the
 * next window's pieces are queued; the whole model: every piece at the first window), windows
 * that split the big tensors and 1 or 2 threads, SLERP and TIES must give the TS engine's bytes
 * (an independent implementation of the methods); the engine's stats say the thread ran and
 * reduced every piece with statistics.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { evictFiles } from "../../bench/floor";
import { merge } from "../../lib/merge";
import { ENGINES, captureEngineStats, setOnlyTuningKnobs } from "../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";

/** Small tensors, and big ones that span several 1 MiB windows (fp32: 4 MB and 2.4 MB; fp16: 2 MB). */
const LENGTHS = [7, 1_000_003, 4097, 600_001, 65, 1_048_577, 300_007];

function writeModelSet(dir: string, m: number): string {
  const tensors: Record<string, TestTensor> = {};
  LENGTHS.forEach((n, i) => {
    tensors[`model.layers.${i}.mlp.weight`] = { dtype: i === 5 ? "F16" : "F32", shape: [n], values: randomValues(n, 31 * m + i, false) };
  });
  const path = join(dir, `m${m}.safetensors`);
  writeModel(path, tensors);
  return path;
}

describe("native engine: statistics passes on the reduce-ahead thread", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-reduce-ahead-");
    paths = [0, 1, 2].map((m) => writeModelSet(dir.path, m));
    capture.install();
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  const cases = [
    { method: "slerp", multiplier: 0.4, inputs: () => ({ a: paths[0], b: paths[1] }) },
    { method: "ties", params: { density: 0.25 }, modelWeights: [0.8, -0.5], inputs: () => ({ base: paths[0], models: paths.slice(1) }) },
  ];
  for (const c of cases) {
    it(`${c.method}: reduce-ahead on/off, budgets 0 and the whole model, 1 MiB windows, drop-behind, threads 1/2: the TS engine's bytes`, async function () {
      if (!ENGINES.includes("native")) this.skip();
      const { inputs, ...rest } = c;
      const options = { recipeMetadata: false, dtype: "fp16", ...inputs(), ...rest };
      const ref = join(dir.path, `${c.method}-js.safetensors`);
      await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
      const expected = readFileSync(ref);
      for (const ahead of ["1", "0"]) {
        for (const mib of ["0", "4096"]) {
          for (const threads of [1, 2]) {
            const knobs = { TENSORMERGE_REDUCE_AHEAD: ahead, TENSORMERGE_STATISTICS_AHEAD_MIB: mib, TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_RELEASE_INPUTS: "3" };
            const restore = setOnlyTuningKnobs(knobs);
            try {
              evictFiles([paths[1]!]);
              const out = join(dir.path, `${c.method}-${ahead}-${mib}-${threads}.safetensors`);
              capture.reset();
              await merge({ ...options, engine: "native", threads, out } as never);
              const stats = capture.last()!;
              assert.ok(readFileSync(out).equals(expected), `${c.method}: ${JSON.stringify(knobs)}, threads ${threads}`);
              assert.equal(stats.reduceAhead, Number(ahead), "TENSORMERGE_REDUCE_AHEAD did not reach the engine");
              // Every tensor is merged with statistics, and the statistics read queues each one.
              assert.equal(stats.piecesReducedAhead, ahead === "1" ? LENGTHS.length : 0, "pieces reduced on the thread");
            } finally {
              restore();
            }
          }
        }
      }
    });
  }

  it("no statistics read (TENSORMERGE_STATISTICS_READ=0): no reduce-ahead thread, the same bytes", async function () {
    if (!ENGINES.includes("native")) this.skip();
    const options = { recipeMetadata: false, dtype: "fp16", a: paths[0], b: paths[2], method: "slerp", multiplier: 0.7 };
    const ref = join(dir.path, "noread-js.safetensors");
    await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
    const restore = setOnlyTuningKnobs({ TENSORMERGE_STATISTICS_READ: "0", TENSORMERGE_WINDOW_MIB: "1" });
    try {
      const out = join(dir.path, "noread.safetensors");
      capture.reset();
      await merge({ ...options, engine: "native", threads: 2, out } as never);
      assert.ok(readFileSync(out).equals(readFileSync(ref)));
      assert.equal(capture.last()!.reduceAhead, 0);
    } finally {
      restore();
    }
  });
});
