/**
 * The fused task merge of the output pass (native/core/kernels.h merge_task_merge_f16_fn): at AVX-512
 * and AVX2, a write that stores as fp16 one task-merge op without DROP over fp16 inputs (TIES on
 * fp16 models) widens the inputs in registers, merges and stores fp16, where the slots' path widens
 * each input into a scratch slot, runs the fp32 kernel there and stores from it. The output must be
 * the TS engine's bytes (an independent implementation) and NaN / infinity counts, whatever the ISA,
 * threads, window size, and with the fused path off (TENSORMERGE_TASK_MERGE_FUSED=0), for tensors
 * whose last vector of 16 holds 0, 1 and 15 elements (the scalar tail), with 2, 3 and 5 models (the
 * unrolled counts and the loop), weighted and by-count sign election, and fp16 NaNs (quiet and
 * signalling, both signs), infinities, subnormals and signed zeros in every input. The engine's
 * counter says which writes took the fused kernel: every element of TIES → fp16 at AVX2 / AVX-512,
 * none at the scalar ISA, with the knob off, for an fp32 output or for DARE-TIES (DROP).
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setOnlyTuningKnobs } from "../../helpers/engines";
import { readModel, tempDir } from "../../helpers/models";
import { writeF16Family } from "./fixtures";

// Element counts: n mod 16 = 0, 1, 15, 7, and one tensor below the k-th's direct-select size (2^18).
const SIZES: Record<string, number> = {
  "model.diffusion_model.input_blocks.1.1.proj_in.weight": 4096 * 70,
  "model.diffusion_model.input_blocks.2.1.proj_in.weight": 2 ** 18 + 1,
  "model.diffusion_model.middle_block.1.proj_in.weight": 300_015,
  "model.diffusion_model.output_blocks.3.1.proj_out.weight": 1031,
};
const TOTAL = Object.values(SIZES).reduce((a, b) => a + b, 0);

describe("many-model methods: the fused task merge of the output pass (AVX-512 / AVX2, F16 → F16)", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[] = [];
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-task-merge-fused-");
    capture.install();
    paths = writeF16Family(dir.path, SIZES, 5);
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  const isas = () => ["scalar", "avx2", "avx512"].filter((isa) => capabilities().isas.includes(isa as never));

  /** Native runs of `options` against the TS engine's bytes and counts; `fused`: whether TIES → fp16 may take the fused kernel. */
  async function check(name: string, options: Record<string, unknown>, fused: boolean) {
    const js = join(dir.path, `${name}-js.safetensors`);
    const jsReport = (await merge({ ...options, recipeMetadata: false, engine: "js", threads: 1, out: js } as never)) as { nonFinite: { nan: number; inf: number }[] };
    const expected = readModel(js).tensors;
    const runs: { isa: string; threads: number; knobs: Record<string, string> }[] = isas().map((isa) => ({ isa, threads: 2, knobs: {} }));
    const top = isas().includes("avx512") ? "avx512" : isas().includes("avx2") ? "avx2" : undefined;
    if (top)
      runs.push(
        { isa: top, threads: 1, knobs: { TENSORMERGE_WINDOW_MIB: "1" } },
        { isa: top, threads: 2, knobs: { TENSORMERGE_TASK_MERGE_FUSED: "0" } },
        { isa: top, threads: 2, knobs: { TENSORMERGE_BUFFERED_READS: "1", TENSORMERGE_WINDOW_MIB: "1" } },
      );
    for (const r of runs) {
      const restore = setOnlyTuningKnobs(r.knobs);
      try {
        const out = join(dir.path, `${name}-${r.isa}-${r.threads}-${Object.keys(r.knobs).join("-")}.safetensors`);
        capture.reset();
        const report = (await merge({ ...options, recipeMetadata: false, engine: "native", isa: r.isa, threads: r.threads, out } as never)) as { nonFinite: { nan: number; inf: number }[] };
        const label = `${name}: isa ${r.isa}, threads ${r.threads}, knobs ${JSON.stringify(r.knobs)}`;
        const got = readModel(out).tensors;
        for (const key of Object.keys(SIZES)) assert.ok(Buffer.from(got.get(key)!.bytes).equals(Buffer.from(expected.get(key)!.bytes)), `${key} (${label}): not the TS engine's bytes`);
        const counts = (r: { nonFinite: { nan: number; inf: number }[] }) => r.nonFinite.map(({ nan, inf }) => ({ nan, inf }));
        assert.deepEqual(counts(report), counts(jsReport), `${label}: NaN / infinity counts`);
        const want = fused && r.isa !== "scalar" && r.knobs.TENSORMERGE_TASK_MERGE_FUSED !== "0" ? TOTAL : 0;
        assert.equal(capture.last()?.taskMergeFusedElements, want, `${label}: elements written by the fused task merge`);
      } finally {
        restore();
      }
    }
  }

  it("TIES on 3 models (weighted sign election), fp16 out: the TS engine's bytes at every ISA, threads, windows, reads, knob off", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    await check("ties3", { method: "ties", modelWeights: [1, -0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.05 }, { density: 0.7 }], base: paths[0], models: paths.slice(1, 4), dtype: "fp16" }, true);
  });

  it("TIES on 2 and on 5 models (the loop), by-count election, no normalisation, λ 0.7, fp16 out", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    await check("ties2", { method: "ties", multiplier: 0.7, params: { density: 0.3 }, base: paths[0], models: paths.slice(1, 3), dtype: "fp16" }, true);
    await check("ties5", { method: "ties", multiplier: 0.7, params: { density: 0.3, "sign-by-count": 1, normalize: 0 }, modelWeights: [1, 0.5, -0.25, 2, 0.75], base: paths[0], models: paths.slice(1), dtype: "fp16" }, true);
  });

  it("not fused: TIES to fp32, DARE-TIES to fp16 (the slots' path, the same bytes as the TS engine)", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    await check("ties-f32", { method: "ties", params: { density: 0.2 }, base: paths[0], models: paths.slice(1, 4), dtype: "fp32" }, false);
    await check("dare-ties", { method: "dare-ties", params: { "drop-rate": 0.6, seed: 7 }, base: paths[0], models: paths.slice(1, 4), dtype: "fp16" }, false);
  });
});
