/**
 * Gaps found auditing issues 10 and 11 against the suite (/work/notes/audit-10-11.md):
 * - every parameter of the task-merge methods against the reference (reference.ts, written from
 *   mergekit): dare with `normalize` 1 and `rescale` 0, dare-ties with `sign-by-count` 1 and
 *   `normalize` 1, ties with the sum election and no normalising (methods.test.ts has the others);
 * - the k-th magnitude on the values a sort by value gets wrong or a radix select could: NaNs
 *   (any sign, any payload: the largest magnitudes once the sign is cleared), ±Inf, ±0,
 *   subnormals, long runs of one value, the threshold falling inside each of those groups; the
 *   expected kept set comes from sorting the magnitudes' fp32 bit patterns as integers here;
 * - DARE masks: two runs of each engine, native at 1 and 2 threads, the same bytes; two tensors
 *   of one shape holding the same values get masks that disagree as independent ones would.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../../lib/merge";
import { ENGINES } from "../../helpers/engines";
import { readModel, tempDir, writeModel } from "../../helpers/models";
import { H, W, W2, asStored, stored, writeFamily } from "./fixtures";
import { keptRef, taskMergeRef, tensorOf } from "./reference";

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number) => ((f32[0] = x), u32[0]!);
const fromBits = (b: number) => ((u32[0] = b >>> 0), f32[0]!);

describe("audit: many-model parameters, k-th magnitude edges, DARE masks", function () {
  this.timeout(300_000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  before(() => {
    dir = tempDir("tm-many-audit-");
    paths = writeFamily(dir.path, 3);
  });
  after(() => dir.cleanup());
  const models = (k: string) => [stored(k, 1), stored(k, 2), stored(k, 3)];

  const cases = [
    {
      label: "dare: normalize 1 divides by Σw, rescale 0 keeps the kept δ as they are",
      options: { method: "dare", params: { "drop-rate": 0.4, seed: 5, normalize: 1, rescale: 0 }, modelWeights: [0.5, 1.5, -0.25], multiplier: 1.25 },
      ref: (key: string) => ({ weights: [0.5, 1.5, -0.25], lambda: 1.25, drop: { rates: [0.4, 0.4, 0.4], seed: 5, name: key, rescale: false }, normalize: true }),
    },
    {
      label: "dare-ties: sign-by-count 1 and normalize 1, per-model drop rates",
      options: { method: "dare-ties", params: { seed: 77, "sign-by-count": 1, normalize: 1 }, modelParams: [{ "drop-rate": 0.2 }, { "drop-rate": 0.7 }, { "drop-rate": 0.5 }], modelWeights: [1, 0.6, 0.9] },
      ref: (key: string) => ({ weights: [1, 0.6, 0.9], lambda: 1, drop: { rates: [0.2, 0.7, 0.5], seed: 77, name: key, rescale: true }, consensus: "count" as const, normalize: true }),
    },
    {
      label: "ties: the weighted-sum election without normalising, λ 0.6",
      options: { method: "ties", params: { density: 0.35, normalize: 0 }, modelWeights: [1, 0.3, 0.7], multiplier: 0.6 },
      ref: () => ({ weights: [1, 0.3, 0.7], lambda: 0.6, density: [0.35, 0.35, 0.35], consensus: "sum" as const, normalize: false }),
    },
  ];
  for (const engine of ENGINES) {
    for (const c of cases) {
      it(`${c.label} (${engine})`, async () => {
        const out = join(dir.path, `${c.options.method}-${c.options.params.seed ?? "t"}-${engine}.safetensors`);
        await merge({ recipeMetadata: false, engine, base: paths[0], models: paths.slice(1), out, ...c.options } as never);
        for (const key of [W, H, W2]) assert.deepEqual(tensorOf(out, key), asStored(key, taskMergeRef(stored(key, 0), models(key), c.ref(key))), key);
      });
    }
  }

  describe("the k-th magnitude where sorting is hard", () => {
    const KEY = "model.diffusion_model.output_blocks.0.0.weight";
    const n = 4099;
    // Groups, in decreasing magnitude: 200 NaNs, 50 +Inf and 50 −Inf, 37 copies of ±3 (ties), 1500 random
    // normals, 600 copies of ±0.5 (more ties), 300 subnormals, 400 ±0; shuffled.
    const values: number[] = [];
    let s = 12345;
    const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    for (let i = 0; i < 200; i++) values.push(fromBits(((i % 2 ? 0xff800000 : 0x7f800000) | (1 + Math.floor(next() * 0x7fffff))) >>> 0));
    for (let i = 0; i < 100; i++) values.push(i % 2 ? Infinity : -Infinity);
    for (let i = 0; i < 37; i++) values.push(i % 3 ? 3 : -3);
    for (let i = 0; i < 1500; i++) values.push(Math.fround((next() * 2 - 1) * 2.5));
    for (let i = 0; i < 600; i++) values.push(i % 2 ? 0.5 : -0.5);
    for (let i = 0; i < 300; i++) values.push(fromBits((((i % 2) << 31) | (1 + Math.floor(next() * 0x7ffffe))) >>> 0));
    while (values.length < n) values.push(values.length % 2 ? 0 : -0);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [values[i], values[j]] = [values[j]!, values[i]!];
    }
    const stored32 = values.map(Math.fround);
    // The magnitude's bits with the sign cleared, sorted as integers, largest first (NaNs on top).
    const sortedMagnitudes = stored32.map((x) => bitsOf(x) & 0x7fffffff).sort((p, q) => q - p);

    let base: string, model: string;
    before(() => {
      base = join(dir.path, "kth-edge-base.safetensors");
      model = join(dir.path, "kth-edge-model.safetensors");
      writeModel(base, { [KEY]: { dtype: "F32", shape: [n], values: new Array<number>(n).fill(0) } });
      writeModel(model, { [KEY]: { dtype: "F32", shape: [n], values: stored32 } });
    });
    // k inside the NaNs, at the last NaN, inside the infinities, inside ±3, inside the normals,
    // inside ±0.5, inside the subnormals, inside the zeros.
    const densities = [0.01, 200 / n, 0.06, 0.08, 0.3, 0.5, 0.63, 0.85]; // k = 40, 200, 245, 327, 1229, 2049, 2582, 3484
    for (const engine of ENGINES) {
      it(`keeps exactly the elements whose |δ| bits reach the k-th largest (${engine})`, async () => {
        for (const density of densities) {
          const out = join(dir.path, `kth-edge-${density}-${engine}.safetensors`);
          // One model of weight 1 on a zero base: the result is δ where kept (its own sign wins
          // the election), 0 where trimmed; a NaN is NaN either way (NaN·0).
          await merge({ recipeMetadata: false, engine, method: "ties", base, models: [model], params: { density }, out });
          const got = readModel(out).tensors.get(KEY)!.values;
          const k = Math.trunc(density * n);
          const threshold = sortedMagnitudes[k - 1]!;
          let kept = 0;
          stored32.forEach((x, i) => {
            const keep = (bitsOf(x) & 0x7fffffff) >= threshold;
            // Trimmed: δ·0, as mergekit's `t * mask` (±0, or NaN for ±Inf and NaN).
            const want = keep ? x : x * 0;
            if (Number.isNaN(want)) return assert.ok(Number.isNaN(got[i]), `density ${density} [${i}]: ${x} → ${got[i]}, expected NaN`);
            if (keep && x !== 0) kept++;
            assert.ok(Object.is(got[i]! + 0, want + 0), `density ${density} [${i}]: ${x} → ${got[i]}, expected ${want}`);
          });
          assert.equal(got.filter((x) => !Number.isNaN(x) && x !== 0).length, kept, `density ${density}: kept count`);
          // At least k kept (NaNs aside), but never a zero counted: 2737 elements are non-zero.
          assert.ok(kept + 200 >= Math.min(k, 2737), `density ${density}: at least k kept (k ${k}, kept ${kept})`);
        }
      });
    }
  });

  it("DARE masks: the same bytes from two runs of each engine and native at 1 and 2 threads; same-shaped tensors with the same values get independent masks", async () => {
    const A = "model.diffusion_model.input_blocks.1.0.weight", B = "model.diffusion_model.input_blocks.2.0.weight";
    const n = 120_000;
    const write = (name: string, value: number) => {
      const path = join(dir.path, name);
      writeModel(path, { [A]: { dtype: "F32", shape: [n], values: new Array<number>(n).fill(value) }, [B]: { dtype: "F32", shape: [n], values: new Array<number>(n).fill(value) } });
      return path;
    };
    const zeros = write("mask-zeros.safetensors", 0), ones = write("mask-ones.safetensors", 1);
    const p = 0.3, seed = 2024;
    const runs: Buffer[] = [];
    for (const engine of ENGINES) {
      for (const threads of engine === "native" ? [1, 2, 2] : [1, 1]) {
        const out = join(dir.path, `mask-${engine}-${threads}-${runs.length}.safetensors`);
        await merge({ recipeMetadata: false, engine, threads, method: "dare", base: zeros, models: [ones], params: { "drop-rate": p, rescale: 0, seed }, out });
        runs.push(readFileSync(out));
      }
    }
    assert.ok(runs.every((r) => r.equals(runs[0]!)), "runs, engines or thread counts gave other masks");
    const last = join(dir.path, `mask-${ENGINES.at(-1)}-${ENGINES.at(-1) === "native" ? 2 : 1}-${runs.length - 1}.safetensors`);
    const t = readModel(last).tensors;
    const ma = t.get(A)!.values, mb = t.get(B)!.values;
    assert.ok(ma.every((v) => v === 0 || v === 1) && mb.every((v) => v === 0 || v === 1));
    // The mask is the documented Philox word, computed here with BigInt (first 2000 elements of each tensor).
    for (let i = 0; i < 2000; i++) {
      assert.equal(ma[i], keptRef(seed, 0, A, i, p) ? 1 : 0, `${A}[${i}]`);
      assert.equal(mb[i], keptRef(seed, 0, B, i, p) ? 1 : 0, `${B}[${i}]`);
    }
    // Independent masks disagree on a fraction 2p(1−p) of the elements (within 4σ); one shared mask on none.
    let differing = 0;
    for (let i = 0; i < n; i++) if (ma[i] !== mb[i]) differing++;
    const disagree = differing / n;
    const q = 2 * p * (1 - p), tol = 4 * Math.sqrt((q * (1 - q)) / n);
    assert.ok(Math.abs(disagree - q) < tol, `same-shaped tensors disagree on ${disagree}, expected ${q} ± ${tol}`);
  });
});
