/**
 * The fast fp8 fill of the synthetic models (lib/synthetic-fp8.ts) against computations of its
 * own: each code's probability against the normal density integrated numerically between the
 * midpoints of fp8 values decoded by test/dtypes/fp8-reference.ts; the codes it writes against
 * those probabilities and against the Box-Muller + encode path (chi-square); the draws it takes
 * (one an element, so later tensors stay put); and the bytes of layouts without fp8 unchanged.
 */
import { strict as assert } from "node:assert";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fp8CodeProbabilities } from "../../lib/synthetic-fp8";
import { writeSyntheticModel, type Fp8Fill, type LayoutEntry } from "../../lib/synthetic";
import { E4M3, E5M2, fp8Value, type Fp8Format } from "../dtypes/fp8-reference";
import { readModel } from "../helpers/models";

/** P(lo < X < hi) for X ~ N(mean, std): composite Simpson over the density (no erf involved). */
function normalMass(lo: number, hi: number, mean: number, std: number): number {
  const a = Math.max(lo, mean - 40 * std), b = Math.min(hi, mean + 40 * std);
  if (!(b > a)) return 0;
  const n = 2000; // even
  const h = (b - a) / n;
  const pdf = (x: number) => Math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * Math.sqrt(2 * Math.PI));
  let sum = pdf(a) + pdf(b);
  for (let i = 1; i < n; i++) sum += (i % 2 ? 4 : 2) * pdf(a + i * h);
  return (sum * h) / 3;
}

/** Each finite code's probability under round-to-nearest of N(mean, std), from the reference decode. */
function expectedProbabilities(f: Fp8Format, mean: number, std: number): Float64Array {
  const finite = [...Array(256).keys()].filter((c) => Number.isFinite(fp8Value(f, c)));
  const ascending = finite.sort((x, y) => fp8Value(f, x) - fp8Value(f, y) || (y & 0x80) - (x & 0x80));
  const p = new Float64Array(256);
  ascending.forEach((c, k) => {
    const lo = k === 0 ? -Infinity : (fp8Value(f, ascending[k - 1]!) + fp8Value(f, c)) / 2;
    const hi = k === ascending.length - 1 ? Infinity : (fp8Value(f, c) + fp8Value(f, ascending[k + 1]!)) / 2;
    p[c] = normalMass(lo, hi, mean, std);
  });
  return p;
}

/** Pearson's chi-square of observed code counts against probabilities, over bins expecting >= 20. */
function chiSquare(counts: Float64Array, p: Float64Array): { chi2: number; bins: number } {
  const total = counts.reduce((s, x) => s + x, 0);
  let chi2 = 0, bins = 0, restObserved = 0, restExpected = 0;
  for (let c = 0; c < 256; c++) {
    const e = p[c]! * total;
    if (e >= 20) {
      chi2 += (counts[c]! - e) ** 2 / e;
      bins++;
    } else {
      restObserved += counts[c]!;
      restExpected += e;
    }
  }
  if (restExpected > 0) chi2 += (restObserved - restExpected) ** 2 / restExpected;
  return { chi2, bins };
}

/** A chi-square this far above its degrees of freedom (6 standard deviations) is no accident. */
function assertFits(label: string, { chi2, bins }: { chi2: number; bins: number }): void {
  const dof = bins; // the pooled tail bin, less one for the fixed total
  if (process.env.TM_SYNTH_VERBOSE) console.log(`    ${label}: chi-square ${chi2.toFixed(1)}, ${dof} degrees of freedom`);
  assert.ok(bins >= 2, `${label}: only ${bins} bins`);
  assert.ok(chi2 < dof + 6 * Math.sqrt(2 * dof), `${label}: chi-square ${chi2.toFixed(1)} over ${dof} degrees of freedom`);
}

describe("synthetic models: the fp8 table fill", function () {
  this.timeout(120000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "tm-synth-fp8-"))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const N = 1 << 21;
  // The generator's three statistics: weights N(0, 0.02), biases N(0, 0.005), norm scales N(1, 0.02).
  const tensors: [string, number, number][] = [["blocks.0.attn.weight", 0, 0.02], ["blocks.0.attn.bias", 0, 0.005], ["blocks.0.norm.weight", 1, 0.02]];

  async function codesOf(dtype: "F8_E4M3" | "F8_E5M2", fill: Fp8Fill, seed: number): Promise<Map<string, Float64Array>> {
    const path = join(dir, `${dtype}-${fill}-${seed}.safetensors`);
    await writeSyntheticModel(path, tensors.map(([name]) => [name, [N], dtype] as LayoutEntry), { seed, fp8: fill });
    const model = readModel(path);
    const out = new Map<string, Float64Array>();
    for (const [name] of tensors) {
      const counts = new Float64Array(256);
      for (const c of model.tensors.get(name)!.bytes) counts[c]!++;
      out.set(name, counts);
    }
    rmSync(path);
    return out;
  }

  for (const f of [E4M3, E5M2]) {
    for (const [name, mean, std] of tensors) {
      it(`${f.name} N(${mean}, ${std}): each code's probability is the normal mass between its midpoints`, () => {
        const got = fp8CodeProbabilities(f.name, mean, std), want = expectedProbabilities(f, mean, std);
        assert.ok(Math.abs(got.reduce((s, x) => s + x, 0) - 1) < 1e-12);
        for (let c = 0; c < 256; c++) {
          if (Math.abs(got[c]! - want[c]!) > 1e-6) assert.fail(`${name} code 0x${c.toString(16)}: ${got[c]} vs ${want[c]}`);
        }
      });
    }

    it(`${f.name}: the written codes fit those probabilities and the Box-Muller path's counts`, async () => {
      const table = await codesOf(f.name, "table", 5), slow = await codesOf(f.name, "box-muller", 6);
      for (const [name, mean, std] of tensors) {
        const want = expectedProbabilities(f, mean, std);
        assertFits(`${name} table`, chiSquare(table.get(name)!, want));
        assertFits(`${name} box-muller`, chiSquare(slow.get(name)!, want));
        // The two samples against each other: the means of the decoded values within 5 standard errors.
        const moments = (counts: Float64Array) => {
          let s = 0, s2 = 0;
          counts.forEach((k, c) => { if (k) { const v = fp8Value(f, c); s += k * v; s2 += k * v * v; } });
          return { mean: s / N, sd: Math.sqrt(s2 / N - (s / N) ** 2) };
        };
        const a = moments(table.get(name)!), b = moments(slow.get(name)!);
        const se = Math.max(a.sd, 1e-9) / Math.sqrt(N);
        assert.ok(Math.abs(a.mean - b.mean) < 5 * Math.SQRT2 * se, `${name}: means ${a.mean} vs ${b.mean}`);
      }
    });
  }

  it("takes one draw an element: an fp32 tensor after it has the bytes it has after a U8 tensor of that length", async () => {
    // Integer tensors other than position ids take one draw an element too (lib/synthetic.ts).
    const paths = ["F8_E4M3", "U8"].map((d) => join(dir, `draws-${d}.safetensors`));
    for (const [i, d] of (["F8_E4M3", "U8"] as const).entries()) {
      await writeSyntheticModel(paths[i]!, [["first", [12345], d], ["second.weight", [4096], "F32"]], { seed: 9 });
    }
    const [x, y] = paths.map((p) => readModel(p).tensors.get("second.weight")!.bytes);
    assert.ok(Buffer.from(x!).equals(Buffer.from(y!)));
  });

  it("layouts without fp8 get the same bytes with either fill; an fp8 one does not", async () => {
    const mixed: LayoutEntry[] = [["a.weight", [300, 7], "F32"], ["a.bias", [300], "F16"], ["norm.weight", [300], "BF16"], ["position_ids", [1, 77], "I64"]];
    const bytes = async (layout: LayoutEntry[], fill: Fp8Fill) => {
      const p = join(dir, `same-${fill}.safetensors`);
      await writeSyntheticModel(p, layout, { seed: 3, fp8: fill });
      const b = readFileSync(p);
      rmSync(p);
      return b;
    };
    assert.ok((await bytes(mixed, "table")).equals(await bytes(mixed, "box-muller")));
    const withFp8: LayoutEntry[] = [...mixed, ["b.weight", [1000], "F8_E4M3"]];
    assert.ok(!(await bytes(withFp8, "table")).equals(await bytes(withFp8, "box-muller")));
  });
});
