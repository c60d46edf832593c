/**
 * The element-wise method family end to end (merge() on both engines) against formulas written
 * out here from the published implementations, one Math.fround per operation in their order:
 * SuperMerger's train difference, sd-meh's triple sum, sum twice, similarity add difference and
 * tensor sum, multiply difference (against Math.pow, within a tolerance: the engines' own pow is
 * tested bit for bit in test/native/pow.test.ts), and clamp.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel } from "../helpers/models";

const f = Math.fround;
const n = 777;
const sign = (x: number) => (x > 0 ? 1 : x < 0 ? -1 : 0); // torch.sign; ±0 → 0

/** Per element: A, B, C values (fp32) → expected, for α and β given as the user's doubles. */
const FORMULAS: Record<string, (a: number, b: number, c: number, alpha: number, beta: number) => number> = {
  // SuperMerger TD: a + sign(b−c)·|b−a|/(|b−c|+|b−a|)·|b−c| · f32(α·1.8)
  "train-difference": (a, b, c, alpha) => {
    const diff = f(b - c), d1 = Math.abs(f(b - a)), sum = f(Math.abs(diff) + d1);
    const scale = sum !== 0 ? f(d1 / sum) : 0;
    return f(a + f(f(f(sign(diff) * scale) * Math.abs(diff)) * f(alpha * 1.8)));
  },
  "triple-sum": (a, b, c, alpha, beta) => f(f(f(a * f(1 - alpha - beta)) + f(b * f(alpha))) + f(c * f(beta))),
  "sum-twice": (a, b, c, alpha, beta) => f(f(f(f(f(a * f(1 - alpha)) + f(b * f(alpha))) * f(1 - beta))) + f(c * f(beta))),
  "similarity-add-difference": (a, b, c, alpha, beta) => {
    const t = Math.max(Math.abs(a), Math.abs(b));
    let s = f(f(f(f(f(a * b) / f(t * t)) + 1) / 2) * f(beta));
    if (Number.isNaN(s)) s = f(beta);
    const abDiff = f(a + f(f(alpha) * f(b - c)));
    const abSum = f(f(f(1 - alpha / 2) * a) + f(f(alpha / 2) * b));
    return f(f(f(1 - s) * abDiff) + f(s * abSum));
  },
};

describe("element-wise methods: published formulas over random values", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const va = randomValues(n, 11), vb = randomValues(n, 12), vc = randomValues(n, 13);
  // Exact ties: B = C, B = A, A = B = C, zeros (train difference's 0/0 case), one row of each.
  for (const [i, a, b, c] of [[0, 0.5, 0.25, 0.25], [1, 0.5, 0.5, 0.25], [2, 0.125, 0.125, 0.125], [3, 0, 0, 0], [4, -0.5, 0.5, 0]] as const) {
    va[i] = a; vb[i] = b; vc[i] = c;
  }
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [n], values: va } });
    writeModel(b, { w: { dtype: "F32", shape: [n], values: vb } });
    writeModel(c, { w: { dtype: "F32", shape: [n], values: vc } });
  });
  for (const engine of ENGINES) {
    for (const [method, formula] of Object.entries(FORMULAS)) {
      for (const [alpha, beta] of [[0.37, 0.21], [1, 0.5], [0.8, 0]]) {
        it(`${method} α=${alpha} β=${beta} (${engine})`, async () => {
          const out = join(dir.path, `${method}-${alpha}-${beta}-${engine}.safetensors`);
          await merge({ a, b, c, method: method as never, alpha, ...(method === "train-difference" ? {} : { beta }), out, engine, recipeMetadata: false });
          const got = readModel(out).tensors.get("w")!.values;
          got.forEach((g, i) => {
            const want = formula(f(va[i]!), f(vb[i]!), f(vc[i]!), alpha, beta);
            assert.ok(Object.is(g, want), `${method}[${i}]: ${g} ≠ ${want}`);
          });
        });
      }
    }
    it(`multiply-difference: C + copysign(|A−C|^(1−α)·|B−C|^α, (1−β)·A + β·B − C) within 2^-20 (${engine})`, async () => {
      const [alpha, beta] = [0.3, 0.6];
      const out = join(dir.path, `md-${engine}.safetensors`);
      await merge({ a, b, c, method: "multiply-difference", multiplier: alpha, beta, out, engine, recipeMetadata: false });
      const got = readModel(out).tensors.get("w")!.values;
      got.forEach((g, i) => {
        const [x, y, z] = [f(va[i]!), f(vb[i]!), f(vc[i]!)];
        const m = Math.pow(Math.abs(x - z), 1 - alpha) * Math.pow(Math.abs(y - z), alpha);
        const s = (1 - beta) * x + beta * y - z;
        const want = z + (s < 0 ? -m : m);
        assert.ok(Math.abs(g - want) <= 2 ** -20 * (Math.abs(z) + m) + 1e-30, `[${i}]: ${g} vs ${want}`);
      });
    });
    it(`hand values: train difference is 0 where |B−C|+|B−A| = 0, triple sum's weights (${engine})`, async () => {
      const out = join(dir.path, `td-hand-${engine}.safetensors`);
      await merge({ a, b, c, method: "train-difference", multiplier: 1, out, engine, recipeMetadata: false });
      const w = readModel(out).tensors.get("w")!.values;
      assert.equal(w[0], 0.5); // B = C: no difference to add
      assert.equal(w[2], 0.125); // A = B = C: 0/0 → 0
      assert.equal(w[3], 0);
      // row 1: A = B = 0.5, C = 0.25: |B−A| = 0 → scale 0 → A
      assert.equal(w[1], 0.5);
      // row 4: A = −0.5, B = 0.5, C = 0: scale = 1/(0.5+1) = 2/3; A + 0.5·(2/3)·1.8 = 0.1
      assert.equal(w[4], f(-0.5 + f(f(f(f(1 / 1.5)) * 0.5) * f(1.8))));
    });
  }
});

describe("tensor-sum: a band of rows from B (SuperMerger TS, sd-meh tensor_sum)", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const rows = 10, cols = 3;
  const A = Array.from({ length: rows * cols }, (_, i) => i), B = A.map((x) => -1 - x);
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [rows, cols], values: A }, s: { dtype: "F32", shape: [], values: [7] } });
    writeModel(b, { w: { dtype: "F32", shape: [rows, cols], values: B }, s: { dtype: "F32", shape: [], values: [-7] } });
  });
  // Rows from B as Python computes them: int(10·β) … int(10·(α+β)), or when α+β > 1, every row
  // but int(10·(α+β−1)) … int(10·β). 10·(0.6+0.7−1) = 2.9999999999999982 → 2.
  const cases: [number, number, number[]][] = [
    [0.3, 0.2, [2, 3, 4]],
    [0.5, 0, [0, 1, 2, 3, 4]],
    [0.6, 0.7, [0, 1, 7, 8, 9]],
    [0, 0.5, []],
  ];
  for (const engine of ENGINES) {
    for (const [alpha, beta, fromB] of cases) {
      it(`α=${alpha} β=${beta}: rows ${fromB.join(",") || "none"} from B (${engine})`, async () => {
        const out = join(dir.path, `ts-${alpha}-${beta}-${engine}.safetensors`);
        await merge({ a, b, method: "tensor-sum", multiplier: alpha, beta, out, engine, recipeMetadata: false });
        const t = readModel(out).tensors;
        assert.deepEqual(t.get("w")!.values, A.map((x, i) => (fromB.includes(Math.floor(i / cols)) ? B[i] : x)));
        assert.deepEqual(t.get("s")!.values, [7]); // 0-dim: kept from A, as SuperMerger skips it
      });
    }
  }
});

describe("clamp: merged values kept within [min(A,B), max(A,B)]", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const A = [1, 2, 3, -4, 0.5], B = [5, 1, 3, 8, 0.25], C = [0, 0, 10, 0, 0.25];
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [5], values: A } });
    writeModel(b, { w: { dtype: "F32", shape: [5], values: B } });
    writeModel(c, { w: { dtype: "F32", shape: [5], values: C } });
  });
  for (const engine of ENGINES) {
    it(`weighted sum extrapolated to M=1.5 lands on B; add difference is cut at the bounds (${engine})`, async () => {
      const ws = join(dir.path, `ws-${engine}.safetensors`), ad = join(dir.path, `ad-${engine}.safetensors`);
      await merge({ a, b, method: "weighted-sum", multiplier: 1.5, clamp: true, out: ws, engine, recipeMetadata: false });
      assert.deepEqual(readModel(ws).tensors.get("w")!.values, B);
      await merge({ a, b, c, method: "add-difference", multiplier: 1, clamp: true, out: ad, engine, recipeMetadata: false });
      // A + (B−C) = [6, 3, −4, 4, 0.5] → clamped to [1..5], [1..2], [3..3], [−4..8], [0.25..0.5]
      assert.deepEqual(readModel(ad).tensors.get("w")!.values, [5, 2, 3, 4, 0.5]);
    });
  }
  it("is refused for a method without B", async () => {
    await assert.rejects(merge({ a, method: "no-interpolation", clamp: true, out: join(dir.path, "x.safetensors") }), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /clamp/.test(e.message));
  });
});
