/**
 * The native k-th magnitude's sampled bracket (native/core/kth_bracket.h): a sample of the task
 * vector's keys picks a key range around the k-th, one pass counts above it and keeps the keys
 * inside, and a bracket that misses (or a buffer too small for them) falls back to the exact
 * radix select. Whichever path runs, TIES must keep exactly the top-k magnitudes with the ties
 * rule: each case is checked against mergekit's formula with a sort (reference.ts), and the
 * engine's counters say which path ran, so a case meant to miss does miss.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setEngineKnobs } from "../../helpers/engines";
import { randomValues, tempDir, writeModel } from "../../helpers/models";
import { taskMergeRef, tensorOf } from "./reference";

const KEY = "model.diffusion_model.middle_block.1.proj_in.weight";
const N = 300_001; // above the direct-select size (2^18); its last block holds 1 element, fewer than a sample run (64)
const BLOCK = 4096, RUN = 64; // REDUCTION_BLOCK, KTH_SAMPLE_RUN
const f = Math.fround;

/** Whether element i is in the bracket's sample (kth_bracket.cc, every block sampled below 2^24 elements). */
function sampled(i: number): boolean {
  const b = Math.floor(i / BLOCK), len = Math.min(BLOCK, N - b * BLOCK), count = Math.min(RUN, len);
  let offset = ((b * 29) % (BLOCK / RUN)) * RUN;
  if (offset + count > len) offset = len - count;
  const e = i - b * BLOCK;
  return e >= offset && e < offset + count;
}

/** A seeded uniform in [0, 1). */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
}

interface Case {
  what: string;
  /** Task vector of model j (0-based) at element i, given the base value. */
  delta(j: number, i: number, next: () => number): number;
  density: number[];
  specials?: boolean;
  knobs?: Record<string, string>;
  /** Which path must run for the models' k-th (hits / misses of the bracket). */
  expect: "hit" | "miss" | "any";
}

const CASES: Case[] = [
  { what: "random task vectors", delta: (_j, _i, next) => (next() - 0.5) * 0.02, density: [0.2, 0.5, 0.05], expect: "hit" },
  // 60% of |δ| equal 2^-6 (the k-th and far beyond), 10% above: the bracket is one key, counted, never stored.
  {
    what: "most magnitudes equal at the threshold",
    delta: (_j, _i, next) => { const u = next(); return (u < 0.1 ? 2 ** -4 : u < 0.7 ? 2 ** -6 : 2 ** -9 * next()) * (next() < 0.5 ? -1 : 1); },
    density: [0.2, 0.2, 0.69],
    expect: "hit",
  },
  // 19.9% distinct magnitudes, the rest exactly 0: the k-th is 0, tied with 80% of the tensor.
  { what: "the k-th on a huge tie group of zeros", delta: (_j, _i, next) => (next() < 0.199 ? 0.01 + next() * 0.01 : 0), density: [0.2, 0.3, 0.1], expect: "hit" },
  { what: "all-zero task vectors", delta: () => 0, density: [0.2, 1 / N, 0.9], expect: "hit" },
  { what: "NaN and infinities in the inputs", delta: (_j, _i, next) => (next() - 0.5) * 0.02, density: [0.2, 0.01, 0.6], specials: true, expect: "any" },
  { what: "densities of one element, none, all but one and all", delta: (_j, _i, next) => (next() - 0.5) * 0.02, density: [1 / N, 0, 1 - 1e-6], expect: "hit" },
  { what: "one model at density 1 beside trimmed ones", delta: (_j, _i, next) => (next() - 0.5) * 0.02, density: [1, 0.2, 0.3], expect: "hit" },
  // Sampled elements small, all others large: the sample puts the k-th far too low.
  { what: "an adversarial sample (the bracket misses)", delta: (_j, i, next) => (sampled(i) ? 1e-4 : 0.5 + next()) * (next() < 0.5 ? -1 : 1), density: [0.2, 0.5, 0.9], expect: "miss" },
  { what: "a one-key buffer (overflow: the radix fallback)", delta: (_j, _i, next) => (next() - 0.5) * 0.02, density: [0.2, 0.5, 0.05], knobs: { TENSORMERGE_KTH_BRACKET_KEYS: "1" }, expect: "miss" },
];

describe("many-model methods: the native k-th magnitude's sampled bracket", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-many-bracket-");
    capture.install();
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  it("a tensor of more than 2^24 elements (a sample of every other block) gives the radix path's k-th, fp16 in and out", async function () {
    if (!ENGINES.includes("native")) this.skip();
    const n = 4097 * BLOCK + 33; // 4098 blocks: more sampled runs than KTH_MAX_SAMPLE / RUN, so every 2nd block is sampled
    const paths = [0, 1, 2, 3].map((m) => {
      const next = uniform(77 + m);
      const values = new Float32Array(n);
      for (let i = 0; i < n; i++) values[i] = (next() - 0.5) * 0.1;
      const p = join(dir.path, `big-m${m}.safetensors`);
      writeModel(p, { [KEY]: { dtype: "F16", shape: [n], values: values as unknown as number[] } });
      return p;
    });
    const options = { recipeMetadata: false, method: "ties", modelWeights: [1, 0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.05 }, { density: 0.7 }], base: paths[0], models: paths.slice(1), dtype: "fp16" };
    const outs: Buffer[] = [];
    for (const knobs of [{ TENSORMERGE_KTH_BRACKET: "0" }, {}] as Record<string, string>[]) {
      const restore = setEngineKnobs(knobs);
      try {
        const out = join(dir.path, `big-${Object.keys(knobs).length}.safetensors`);
        capture.reset();
        await merge({ ...options, engine: "native", threads: 2, out } as never);
        outs.push(readFileSync(out));
        const stats = capture.last();
        if (!knobs.TENSORMERGE_KTH_BRACKET) assert.deepEqual([stats?.reductionBracketHits, stats?.reductionBracketMisses], [3, 0], "every k-th from its bracket");
      } finally {
        restore();
      }
    }
    assert.ok(outs[1]!.equals(outs[0]!), "the bracket's output differs from the radix path's");
  });

  CASES.forEach((c, index) => {
    it(`${c.what}: TIES keeps exactly the top-k magnitudes (a sort), at every ISA, threads 1/2, with and without the bracket`, async function () {
      if (!ENGINES.includes("native")) this.skip();
      const next = uniform(1000 + index);
      const base = randomValues(N, 7 + index, c.specials).map(f);
      const models = [0, 1, 2].map((j) => {
        const extra = c.specials ? randomValues(N, 100 * index + j, true) : undefined;
        return base.map((b, i) => (extra && !Number.isFinite(extra[i]!) ? extra[i]! : f(b + c.delta(j, i, next))));
      });
      const paths = [base, ...models].map((values, m) => {
        const p = join(dir.path, `c${index}-m${m}.safetensors`);
        writeModel(p, { [KEY]: { dtype: "F32", shape: [N], values } });
        return p;
      });
      const weights = [1, -0.7, 0.5];
      const options = { recipeMetadata: false, method: "ties", modelWeights: weights, modelParams: c.density.map((density) => ({ density })), base: paths[0], models: paths.slice(1) };
      // A sort cannot rank NaNs (the keys put them above +∞): with NaNs the TS engine's radix select is the reference.
      let expected: number[];
      if (c.specials) {
        const js = join(dir.path, `c${index}-js.safetensors`);
        await merge({ ...options, engine: "js", threads: 1, out: js } as never);
        expected = tensorOf(js, KEY);
      } else {
        expected = taskMergeRef(base, models, { weights, density: c.density, lambda: 1, consensus: "sum", normalize: true });
      }
      const trimmed = c.density.some((d) => d < 1) ? c.density.filter((d) => Math.trunc(d * N) > 0).length : 0;
      const runs: { isa: string; threads: number; knobs: Record<string, string | undefined> }[] = [];
      for (const isa of ["scalar", "avx2", "avx512"]) {
        if (!capabilities().isas.includes(isa as never)) continue;
        for (const threads of [1, 2]) runs.push({ isa, threads, knobs: { ...c.knobs } });
      }
      runs.push({ isa: "scalar", threads: 2, knobs: { TENSORMERGE_KTH_BRACKET: "0" } }, { isa: "avx512", threads: 1, knobs: { ...c.knobs, TENSORMERGE_WINDOW_MIB: "1" } });
      for (const r of runs) {
        if (!capabilities().isas.includes(r.isa as never)) continue;
        const restore = setEngineKnobs(r.knobs);
        try {
          const out = join(dir.path, `c${index}-${r.isa}-${r.threads}-${Object.keys(r.knobs).join("-")}.safetensors`);
          capture.reset();
          await merge({ ...options, engine: "native", isa: r.isa, threads: r.threads, out } as never);
          const label = `${c.what} (isa ${r.isa}, threads ${r.threads}, knobs ${JSON.stringify(r.knobs)})`;
          assert.deepEqual(tensorOf(out, KEY), expected, label);
          const stats = capture.last();
          const hits = stats?.reductionBracketHits ?? -1, misses = stats?.reductionBracketMisses ?? -1;
          if (r.knobs.TENSORMERGE_KTH_BRACKET === "0") assert.equal(hits + misses, 0, `${label}: the bracket is off`);
          else if (c.expect === "hit") assert.deepEqual([hits, misses], [trimmed, 0], `${label}: every k-th from its bracket`);
          else if (c.expect === "miss") assert.ok(misses > 0 && hits + misses === trimmed, `${label}: a bracket must miss (hits ${hits}, misses ${misses})`);
          else assert.equal(hits + misses, trimmed, label);
        } finally {
          restore();
        }
      }
    });
  });
});
