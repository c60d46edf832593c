/**
 * The fused task merge of the output pass (native/core/kernels.h merge_task_merge_half_fn): at AVX-512
 * and AVX2, a write that stores as fp16 or bf16 one task-merge op without DROP over inputs of one
 * dtype, fp16 or bf16 (TIES on fp16 or bf16 models), widens the inputs in registers, merges and
 * stores, where the slots' path widens
 * each input into a scratch slot, runs the fp32 kernel there and stores from it. The output must be
 * the TS engine's bytes (an independent implementation) and NaN / infinity counts, whatever the ISA,
 * threads, window size, and with the fused path off (TENSORMERGE_TASK_MERGE_FUSED=0), for tensors
 * whose last vector of 16 holds 0, 1 and 15 elements (the scalar tail), with 2, 3 and 5 models (the
 * unrolled counts and the loop), weighted and by-count sign election, and fp16 NaNs (quiet and
 * signalling, both signs, bf16 ones with payloads), infinities, subnormals and signed zeros in every
 * input; each input dtype stored as itself and as the other. The engine's counter says which
 * writes took the fused kernel: every element of TIES → fp16 / bf16 at AVX2 / AVX-512, none at the
 * scalar ISA, with the knob off, for an fp32 output, for DARE-TIES (DROP) or for an fp16 base with
 * bf16 models.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setOnlyTuningKnobs } from "../../helpers/engines";
import { readModel, tempDir } from "../../helpers/models";
import { writeHalfFamily, type HalfDtype } from "./fixtures";

// Element counts: n mod 16 = 0, 1, 15, 7, and one tensor below the k-th's direct-select size (2^18).
const SIZES: Record<string, number> = {
  "model.diffusion_model.input_blocks.1.1.proj_in.weight": 4096 * 70,
  "model.diffusion_model.input_blocks.2.1.proj_in.weight": 2 ** 18 + 1,
  "model.diffusion_model.middle_block.1.proj_in.weight": 300_015,
  "model.diffusion_model.output_blocks.3.1.proj_out.weight": 1031,
};
const TOTAL = Object.values(SIZES).reduce((a, b) => a + b, 0);

describe("many-model methods: the fused task merge of the output pass (AVX-512 / AVX2, F16 / BF16 → F16 / BF16)", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  const paths: Record<HalfDtype | "mixed", string[]> = { F16: [], BF16: [], mixed: [] };
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-task-merge-fused-");
    capture.install();
    paths.F16 = writeHalfFamily(dir.path, SIZES, 5, "F16");
    paths.BF16 = writeHalfFamily(dir.path, SIZES, 5, "BF16");
    paths.mixed = writeHalfFamily(dir.path, SIZES, 3, "F16", (m) => (m === 0 ? "F16" : "BF16"));
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  const isas = () => ["scalar", "avx2", "avx512"].filter((isa) => capabilities().isas.includes(isa as never));

  /** Native runs of `options` against the TS engine's bytes and counts; `fused`: whether TIES → fp16 / bf16 may take the fused kernel. */
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

  for (const dtype of ["F16", "BF16"] as const) {
    const own = dtype === "F16" ? "fp16" : "bf16", other = dtype === "F16" ? "bf16" : "fp16";
    const tag = dtype.toLowerCase();

    it(`${dtype} models: TIES on 3 (weighted sign election), ${own} out: the TS engine's bytes at every ISA, threads, windows, reads, knob off`, async function () {
      if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
      const p = paths[dtype];
      await check(`${tag}-ties3`, { method: "ties", modelWeights: [1, -0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.05 }, { density: 0.7 }], base: p[0], models: p.slice(1, 4), dtype: own }, true);
    });

    it(`${dtype} models: TIES on 2 and on 5 (the loop), by-count election, no normalisation, λ 0.7, ${other} out`, async function () {
      if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
      const p = paths[dtype];
      await check(`${tag}-ties2`, { method: "ties", multiplier: 0.7, params: { density: 0.3 }, base: p[0], models: p.slice(1, 3), dtype: other }, true);
      await check(`${tag}-ties5`, { method: "ties", multiplier: 0.7, params: { density: 0.3, "sign-by-count": 1, normalize: 0 }, modelWeights: [1, 0.5, -0.25, 2, 0.75], base: p[0], models: p.slice(1), dtype: other }, true);
    });

    it(`${dtype} models, not fused: TIES to fp32, DARE-TIES to ${own} (the slots' path, the same bytes as the TS engine)`, async function () {
      if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
      const p = paths[dtype];
      await check(`${tag}-ties-f32`, { method: "ties", params: { density: 0.2 }, base: p[0], models: p.slice(1, 4), dtype: "fp32" }, false);
      await check(`${tag}-dare-ties`, { method: "dare-ties", params: { "drop-rate": 0.6, seed: 7 }, base: p[0], models: p.slice(1, 4), dtype: own }, false);
    });
  }

  it("not fused: an fp16 base with bf16 models, to bf16 (operands of two dtypes: the slots' path)", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    const p = paths.mixed;
    await check("mixed-ties", { method: "ties", params: { density: 0.2 }, base: p[0], models: p.slice(1), dtype: "bf16" }, false);
  });
});
