/**
 * Each many-model method against an independent computation of its published formula
 * (reference.ts), on both engines: TIES (trim, sign election by sum and by count, disjoint
 * mean), DARE and DARE-TIES (masks from a BigInt Philox), model stock, SLERP (mergekit's and
 * sd-mecha's, angles from Math.acos/Math.sin, so within fp32 rounding of the coefficients).
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { merge } from "../../../lib/merge";
import { ENGINES } from "../../helpers/engines";
import { tempDir } from "../../helpers/models";
import { H, IDS, W, W2, asStored, stored, writeFamily } from "./fixtures";
import { maxRelativeError, modelStockRef, slerpRef, taskMergeRef, tensorOf } from "./reference";

describe("many-model methods match their published formulas", function () {
  this.timeout(120000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  before(() => {
    dir = tempDir("tm-many-");
    paths = writeFamily(dir.path, 3);
  });
  after(() => dir.cleanup());
  const [base, m1, m2, m3] = [0, 1, 2, 3];
  const models = (k: string) => [stored(k, m1), stored(k, m2), stored(k, m3)];

  for (const engine of ENGINES) {
    describe(`${engine} engine`, () => {
      const run = async (name: string, options: Record<string, unknown>) => {
        const out = join(dir.path, `${name}-${engine}.safetensors`);
        await merge({ recipeMetadata: false, engine, base: paths[0], models: paths.slice(1), out, ...options } as never);
        return out;
      };

      it("ties: per-model densities and weights, sign elected by the weighted sum, disjoint mean, λ", async () => {
        const out = await run("ties", { method: "ties", modelWeights: [1, 0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.5 }, { density: 0.05 }], multiplier: 0.9 });
        for (const key of [W, H, W2]) {
          const ref = taskMergeRef(stored(key, base), models(key), { weights: [1, 0.8, 0.6], density: [0.2, 0.5, 0.05], lambda: 0.9, consensus: "sum", normalize: true });
          assert.deepEqual(tensorOf(out, key), asStored(key, ref), key);
        }
        assert.deepEqual(tensorOf(out, IDS), Array.from({ length: 77 }, (_, i) => i));
      });

      it("ties: sign election by count, without normalising", async () => {
        const out = await run("ties-count", { method: "ties", params: { density: 0.3, "sign-by-count": 1, normalize: 0 }, modelWeights: [1, -0.5, 2] });
        const ref = taskMergeRef(stored(W, base), models(W), { weights: [1, -0.5, 2], density: [0.3, 0.3, 0.3], lambda: 1, consensus: "count", normalize: false });
        assert.deepEqual(tensorOf(out, W), ref);
      });

      it("dare: drop-rate, seed, rescale by 1/(1−p), weighted sum", async () => {
        const out = await run("dare", { method: "dare", params: { "drop-rate": 0.7, seed: 42 }, modelWeights: [0.5, 0.3, 0.2], multiplier: 1.5 });
        for (const key of [W, H]) {
          const ref = taskMergeRef(stored(key, base), models(key), { weights: [0.5, 0.3, 0.2], lambda: 1.5, drop: { rates: [0.7, 0.7, 0.7], seed: 42, name: key, rescale: true }, normalize: false });
          assert.deepEqual(tensorOf(out, key), asStored(key, ref), key);
        }
      });

      it("dare-ties: per-model drop rates, a seed above 2^32, sign election", async () => {
        const seed = 2 ** 40 + 12345;
        const out = await run("dare-ties", { method: "dare-ties", params: { seed }, modelParams: [{ "drop-rate": 0.9 }, { "drop-rate": 0.5 }, { "drop-rate": 0 }] });
        const ref = taskMergeRef(stored(W, base), models(W), { weights: [1, 1, 1], lambda: 1, drop: { rates: [0.9, 0.5, 0], seed, name: W, rescale: true }, consensus: "sum", normalize: false });
        assert.deepEqual(tensorOf(out, W), ref);
      });

      it("model-stock: t = N·c/(1+(N−1)·c) from the mean pairwise cosine of the task vectors", async () => {
        const out = await run("stock", { method: "model-stock" });
        for (const key of [W, H]) {
          const ref = asStored(key, modelStockRef(stored(key, base), models(key)));
          assert.ok(maxRelativeError(tensorOf(out, key), ref) < (key === H ? 2e-3 : 1e-6), key);
        }
      });

      for (const [method, variant] of [["slerp", "mergekit"], ["slerp-mecha", "mecha"]] as const) {
        it(`${method}: the ${variant} definition`, async () => {
          const out = join(dir.path, `${method}-${engine}.safetensors`);
          await merge({ recipeMetadata: false, engine, method, a: paths[0]!, b: paths[1]!, multiplier: 0.3, out });
          for (const key of [W, H]) {
            const ref = asStored(key, slerpRef(stored(key, base), stored(key, m1), 0.3, variant));
            assert.ok(maxRelativeError(tensorOf(out, key), ref) < (key === H ? 2e-3 : 1e-6), key);
          }
        });
      }

      it("slerp falls back to the weighted sum for (nearly) parallel tensors", async () => {
        const out = join(dir.path, `slerp-same-${engine}.safetensors`);
        await merge({ recipeMetadata: false, engine, method: "slerp", a: paths[0]!, b: paths[0]!, multiplier: 0.3, out, overwrite: true });
        const a = stored(W, base);
        assert.deepEqual(tensorOf(out, W), a.map((x) => Math.fround(Math.fround(x * Math.fround(0.7)) + Math.fround(x * Math.fround(0.3)))));
      });
    });
  }
});
