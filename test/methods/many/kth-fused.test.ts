/**
 * The fused bracket pass (native/core/kth_bracket.h kth_bracket_scan_half_sum_fn): at AVX-512 and AVX2, a
 * TIES piece of F16 or of BF16 inputs above the direct-select size (2^18 elements) scans its task vectors
 * δ = M − base straight from the inputs, where the generic pass widens them into scratch slots,
 * sums and scans there. Counts and keys must be the same, so the output must be the TS engine's
 * bytes, and the generic pass's (TENSORMERGE_KTH_FUSED=0), for tensors just below and above the
 * direct-select size, with vector tails of 0, 1 and 15 elements, and with NaNs (quiet and
 * signalling, both signs, with payloads), infinities, subnormals and signed zeros in every input.
 * The engine's counter says which pieces took the fused pass, so a case meant to use it does; an
 * fp16 base with bf16 models (two dtypes in one task vector) takes the generic pass.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setEngineKnobs } from "../../helpers/engines";
import { readModel, tempDir } from "../../helpers/models";
import { writeHalfFamily, type HalfDtype } from "./fixtures";

const DIRECT = 2 ** 18; // MERGE_DIRECT_SELECT: pieces this small keep every key, no bracket
// Element counts: the direct path (not fused), then fused ones whose last vector of 16 holds 1, 15 and 16 elements.
const SIZES: Record<string, number> = {
  "model.diffusion_model.input_blocks.1.1.proj_in.weight": DIRECT,
  "model.diffusion_model.input_blocks.2.1.proj_in.weight": DIRECT + 1,
  "model.diffusion_model.middle_block.1.proj_in.weight": 300_015,
  "model.diffusion_model.output_blocks.3.1.proj_out.weight": 4096 * 70 + 16,
};
const FUSED = Object.values(SIZES).filter((n) => n > DIRECT).reduce((a, b) => a + b, 0);

describe("many-model methods: the fused k-th bracket pass (AVX-512 / AVX2, F16 and BF16 task vectors)", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-many-fused-");
    capture.install();
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  /** TIES over the family against the TS engine's bytes at every ISA and knob; `fused`: whether its pieces above DIRECT may take the fused pass. */
  async function check(tag: string, paths: string[], dtype: string, fused: boolean) {
    const options = { recipeMetadata: false, method: "ties", modelWeights: [1, -0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.05 }, { density: 0.7 }], base: paths[0], models: paths.slice(1), dtype };
    const js = join(dir.path, `${tag}-js.safetensors`);
    await merge({ ...options, engine: "js", threads: 1, out: js } as never);
    const expected = readModel(js).tensors;

    const runs: { isa: string; threads: number; knobs: Record<string, string> }[] = [];
    for (const isa of ["scalar", "avx2", "avx512"]) if (capabilities().isas.includes(isa as never)) runs.push({ isa, threads: 2, knobs: {} });
    if (capabilities().isas.includes("avx512" as never)) {
      runs.push(
        { isa: "avx512", threads: 1, knobs: {} },
        { isa: "avx512", threads: 2, knobs: { TENSORMERGE_KTH_FUSED: "0" } },
        { isa: "avx2", threads: 1, knobs: { TENSORMERGE_WINDOW_MIB: "1" } },
        { isa: "avx512", threads: 1, knobs: { TENSORMERGE_WINDOW_MIB: "1" } },
        { isa: "avx512", threads: 2, knobs: { TENSORMERGE_BUFFERED_READS: "1", TENSORMERGE_WINDOW_MIB: "1" } },
      );
    }
    for (const r of runs) {
      const restore = setEngineKnobs(r.knobs);
      try {
        const out = join(dir.path, `${tag}-n-${r.isa}-${r.threads}-${Object.keys(r.knobs).join("-")}.safetensors`);
        capture.reset();
        await merge({ ...options, engine: "native", isa: r.isa, threads: r.threads, out } as never);
        const label = `${tag}: isa ${r.isa}, threads ${r.threads}, knobs ${JSON.stringify(r.knobs)}`;
        const got = readModel(out).tensors;
        for (const key of Object.keys(SIZES)) assert.ok(Buffer.from(got.get(key)!.bytes).equals(Buffer.from(expected.get(key)!.bytes)), `${key} (${label}): not the TS engine's bytes`);
        const stats = capture.last();
        const want = fused && r.isa !== "scalar" && r.knobs.TENSORMERGE_KTH_FUSED !== "0" ? FUSED : 0;
        assert.equal(stats?.reductionFusedElements, want, `${label}: elements of the pieces that took the fused pass`);
        assert.equal(stats?.reductionBracketMisses, 0, `${label}: every bracket hits`);
      } finally {
        restore();
      }
    }
  }

  for (const [dtype, out] of [["F16", "fp16"], ["BF16", "bf16"]] as [HalfDtype, string][]) {
    it(`${dtype} models: the TS engine's bytes and the generic pass's, at every ISA, threads 1/2, windows of 1 MiB, buffered reads`, async function () {
      if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
      await check(dtype.toLowerCase(), writeHalfFamily(dir.path, SIZES, 3, dtype), out, true);
    });
  }

  it("an fp16 base with bf16 models: not fused (the generic pass), the TS engine's bytes", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    await check("mixed", writeHalfFamily(dir.path, SIZES, 3, "F16", (m) => (m === 0 ? "F16" : "BF16")), "bf16", false);
  });
});
