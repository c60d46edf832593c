/**
 * The native engine's order of work for per-tensor statistics (engine_stream.cc compute): a window's
 * spans are taken in groups of at most TENSORMERGE_REDUCE_GROUP_KIB input bytes, each group
 * reduced and then written (0: the whole window reduced first, then written); and the sum
 * reductions' lane kernel (native/core/reduction_lanes.*) at each forced ISA. Neither may change
 * a byte: every run must equal the TS engine's output, itself a second implementation of the
 * reductions (lib/engine). Tensor lengths sit around the vector widths (8 doubles, 16 floats)
 * and the 4096-element reduction block, and one tensor is larger than any group budget used.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setEngineKnobs } from "../../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../../helpers/models";

/** Lengths around 8 and 16 lanes, a 64-element scratch step, the 4096-element block, and a big one. */
const LENGTHS = [1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 4095, 4096, 4097, 12_289, 300_001];

function writeModelSet(dir: string, m: number): string {
  const tensors: Record<string, TestTensor> = {};
  LENGTHS.forEach((n, i) => {
    const values = randomValues(n, 31 * m + i, false);
    // fp16 and fp32 inputs alternate: the fp16 ones are widened into scratch slots, fp32 read in place.
    tensors[`model.diffusion_model.input_blocks.${i}.0.proj.weight`] = { dtype: i % 2 === 0 ? "F16" : "F32", shape: [n], values };
  });
  const path = join(dir, `m${m}.safetensors`);
  writeModel(path, tensors);
  return path;
}

describe("many-model methods: statistics reduced and written in groups, sums at every ISA", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-many-group-");
    paths = [0, 1, 2, 3].map((m) => writeModelSet(dir.path, m));
    capture.install();
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  const cases = [
    { method: "ties", params: { density: 0.3 }, modelWeights: [1, -0.6, 0.8], models: 3 },
    { method: "model-stock", models: 3 },
    { method: "slerp", multiplier: 0.35, models: 1 },
    { method: "slerp-mecha", multiplier: 0.6, models: 1 },
    { method: "dare-ties", params: { "drop-rate": 0.5, seed: 3 }, models: 2 },
  ];
  for (const c of cases) {
    it(`${c.method}: group budgets 0, 1 KiB, 64 KiB and the default, every ISA, threads 1/2, 1 MiB windows: the TS engine's bytes`, async function () {
      const { models, ...rest } = c;
      const inputs = c.method.startsWith("slerp") ? { a: paths[0], b: paths[1] } : { base: paths[0], models: paths.slice(1, 1 + models) };
      const options = { recipeMetadata: false, dtype: "fp16", ...inputs, ...rest };
      const ref = join(dir.path, `${c.method}-js.safetensors`);
      await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
      const expected = readFileSync(ref);
      if (!ENGINES.includes("native")) this.skip();
      let runs = 0;
      for (const isa of ["scalar", "avx2", "avx512"] as const) {
        if (!capabilities().isas.includes(isa)) continue;
        for (const group of ["0", "1", "64", undefined]) {
          for (const threads of [1, 2]) {
            const knobs = { TENSORMERGE_REDUCE_GROUP_KIB: group, TENSORMERGE_WINDOW_MIB: threads === 2 && group === "1" ? "1" : undefined };
            const restore = setEngineKnobs(knobs);
            try {
              const out = join(dir.path, `${c.method}-${isa}-${group ?? "d"}-${threads}.safetensors`);
              capture.reset();
              await merge({ ...options, engine: "native", isa, threads, out } as never);
              assert.equal(capture.last()?.windows !== undefined, true, "native engine stats");
              assert.ok(readFileSync(out).equals(expected), `${c.method}: isa ${isa}, group ${group ?? "default"} KiB, threads ${threads}, ${JSON.stringify(knobs)}`);
              runs++;
            } finally {
              restore();
            }
          }
        }
      }
      assert.ok(runs >= 8, "at least the scalar ISA and one SIMD ISA ran");
    });
  }
});
