/**
 * The fused bracket pass (native/core/kth_bracket.h kth_bracket_scan_f16_sum_fn): at AVX-512 and AVX2, a
 * TIES piece of F16 inputs above the direct-select size (2^18 elements) scans its task vectors
 * δ = M − base straight from the inputs, where the generic pass widens them into scratch slots,
 * sums and scans there. Counts and keys must be the same, so the output must be the TS engine's
 * bytes, and the generic pass's (TENSORMERGE_KTH_FUSED=0), for tensors just below and above the
 * direct-select size, with vector tails of 0, 1 and 15 elements, and with fp16 NaNs (quiet and
 * signalling, both signs), infinities, subnormals and signed zeros in every input. The engine's
 * counter says which pieces took the fused pass, so a case meant to use it does.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setEngineKnobs } from "../../helpers/engines";
import { encodeValues, readModel, tempDir, writeModel } from "../../helpers/models";

const DIRECT = 2 ** 18; // MERGE_DIRECT_SELECT: pieces this small keep every key, no bracket
// Element counts: the direct path (not fused), then fused ones whose last vector of 16 holds 1, 15 and 16 elements.
const SIZES: Record<string, number> = {
  "model.diffusion_model.input_blocks.1.1.proj_in.weight": DIRECT,
  "model.diffusion_model.input_blocks.2.1.proj_in.weight": DIRECT + 1,
  "model.diffusion_model.middle_block.1.proj_in.weight": 300_015,
  "model.diffusion_model.output_blocks.3.1.proj_out.weight": 4096 * 70 + 16,
};
const FUSED = Object.values(SIZES).filter((n) => n > DIRECT).reduce((a, b) => a + b, 0);
// fp16 bit patterns written over random elements: ±qNaN, ±sNaN (the widening re-signals them), ±inf, subnormals, ±0.
const SPECIALS = [0x7e00, 0xfe00, 0x7d01, 0xfc55, 0x7c00, 0xfc00, 0x0001, 0x83ff, 0x0000, 0x8000];

/** A seeded uniform in [0, 1). */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
}

/** fp16 bytes: base values near 0.05, a model's a small task vector added; one element in 500 a special pattern. */
function f16Bytes(n: number, seed: number, base?: Float32Array): { bytes: Uint8Array; values: Float32Array } {
  const next = uniform(seed);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = base ? base[i]! + (next() - 0.5) * 0.01 : (next() - 0.5) * 0.1;
  const bytes = encodeValues("F16", values);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) if (next() < 0.002) view.setUint16(2 * i, SPECIALS[Math.floor(next() * SPECIALS.length)]!, true);
  return { bytes, values };
}

describe("many-model methods: the fused k-th bracket pass (AVX-512 / AVX2, F16 task vectors)", function () {
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

  it("gives the TS engine's bytes and the generic pass's, at every ISA, threads 1/2, windows of 1 MiB, buffered reads", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    const bases: Record<string, Float32Array> = {};
    const paths = [0, 1, 2, 3].map((m) => {
      const tensors: Record<string, { dtype: "F16"; shape: number[]; raw: Uint8Array }> = {};
      Object.entries(SIZES).forEach(([key, n], t) => {
        const { bytes, values } = f16Bytes(n, 10 * m + t + 1, m === 0 ? undefined : bases[key]);
        if (m === 0) bases[key] = values;
        tensors[key] = { dtype: "F16", shape: [n], raw: bytes };
      });
      const p = join(dir.path, `m${m}.safetensors`);
      writeModel(p, tensors);
      return p;
    });
    const options = { recipeMetadata: false, method: "ties", modelWeights: [1, -0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.05 }, { density: 0.7 }], base: paths[0], models: paths.slice(1), dtype: "fp16" };
    const js = join(dir.path, "js.safetensors");
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
        const out = join(dir.path, `n-${r.isa}-${r.threads}-${Object.keys(r.knobs).join("-")}.safetensors`);
        capture.reset();
        await merge({ ...options, engine: "native", isa: r.isa, threads: r.threads, out } as never);
        const label = `isa ${r.isa}, threads ${r.threads}, knobs ${JSON.stringify(r.knobs)}`;
        const got = readModel(out).tensors;
        for (const key of Object.keys(SIZES)) assert.ok(Buffer.from(got.get(key)!.bytes).equals(Buffer.from(expected.get(key)!.bytes)), `${key} (${label}): not the TS engine's bytes`);
        const stats = capture.last();
        const fused = r.isa !== "scalar" && r.knobs.TENSORMERGE_KTH_FUSED !== "0" ? FUSED : 0;
        assert.equal(stats?.reductionFusedElements, fused, `${label}: elements of the pieces that took the fused pass`);
        assert.equal(stats?.reductionBracketMisses, 0, `${label}: every bracket hits`);
      } finally {
        restore();
      }
    }
  });
});
