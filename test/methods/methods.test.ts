/**
 * Every merge method on tiny models, against values computed by hand (exact in binary) and by
 * an independent fp32 formula (Math.fround after every operation), on both engines.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { METHODS } from "../../lib/methods/registry";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel } from "../helpers/models";
import { KERNELS } from "../../lib/native/job";

const f = Math.fround;
const A = [1, 2, 3, -4];
const B = [5, 6, 7, 8];
const C = [1, 1, 1, 1];

describe("merge methods: hand-computed values", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [4], values: A } });
    writeModel(b, { w: { dtype: "F32", shape: [4], values: B } });
    writeModel(c, { w: { dtype: "F32", shape: [4], values: C } });
  });

  const cases: [string, number, number[]][] = [
    ["weighted-sum", 0.25, [2, 3, 4, -1]], // 0.75·A + 0.25·B
    ["weighted-sum", 0, A],
    ["weighted-sum", 1, B],
    ["add-difference", 0.5, [3, 4.5, 6, -0.5]], // A + (B−C)/2
    ["sigmoid", 0.25, [1.625, 2.625, 3.625, -2.125]], // k = 0.0625·2.5 = 0.15625
    ["sigmoid", 0.5, [3, 4, 5, 2]],
    ["inverse-sigmoid", 0.5, [3, 4, 5, 2]], // k = 0.5 − sin(0) = 0.5
    ["no-interpolation", 0.7, A],
  ];
  for (const engine of ENGINES) {
    for (const [method, m, expected] of cases) {
      it(`${method} M=${m} (${engine})`, async () => {
        const out = join(dir.path, `${method}-${m}-${engine}.safetensors`);
        await merge({ a, b, c, method: method as never, multiplier: m, out, engine });
        assert.deepEqual(readModel(out).tensors.get("w")!.values, expected);
      });
    }
    it(`inverse-sigmoid M=0.25 uses k = 0.5 − sin(π/18) (${engine})`, async () => {
      const out = join(dir.path, `inv-${engine}.safetensors`);
      await merge({ a, b, method: "inverse-sigmoid", multiplier: 0.25, out, engine });
      const k = f(0.5 - Math.sin(Math.PI / 18));
      assert.deepEqual(readModel(out).tensors.get("w")!.values, A.map((x, i) => f(x + f(f(B[i]! - x) * k))));
    });
  }
});

describe("merge methods: independent fp32 formula over random values", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const n = 1000;
  const va = randomValues(n, 1), vb = randomValues(n, 2), vc = randomValues(n, 3);
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [n], values: va } });
    writeModel(b, { w: { dtype: "F32", shape: [n], values: vb } });
    writeModel(c, { w: { dtype: "F32", shape: [n], values: vc } });
  });
  const m = 0.37;
  const formulas: Record<string, (x: number, y: number, z: number) => number> = {
    "weighted-sum": (x, y) => f(f(x * f(1 - m)) + f(y * f(m))),
    "add-difference": (x, y, z) => f(x + f(f(y - z) * f(m))),
    sigmoid: (x, y) => f(x + f(f(y - x) * f(m * m * (3 - 2 * m)))),
    "inverse-sigmoid": (x, y) => f(x + f(f(y - x) * f(0.5 - Math.sin(Math.asin(1 - 2 * m) / 3)))),
    "no-interpolation": (x) => f(x),
  };
  // The element-wise family (α and β, row spans, pow) is tested in elementwise.test.ts.
  // The many-model and statistics methods are tested in many/*.test.ts.
  const elsewhere = ["train-difference", "triple-sum", "sum-twice", "multiply-difference", "similarity-add-difference", "tensor-sum",
    "slerp", "slerp-mecha", "ties", "dare", "dare-ties", "model-stock", "add-cosine-a", "add-cosine-b"];
  it("covers every registered method", () => {
    assert.deepEqual([...Object.keys(formulas), ...elsewhere].sort(), METHODS.map((x) => x.name).sort());
  });
  for (const engine of ENGINES) {
    for (const [method, formula] of Object.entries(formulas)) {
      it(`${method} (${engine})`, async () => {
        const out = join(dir.path, `${method}-${engine}.safetensors`);
        await merge({ a, b, c, method: method as never, multiplier: m, out, engine });
        const got = readModel(out).tensors.get("w")!.values;
        got.forEach((g, i) => assert.ok(Object.is(g, formula(f(va[i]!), f(vb[i]!), f(vc[i]!))), `${method}[${i}]`));
      });
    }
  }
});

describe("method registry", () => {
  it("maps every method onto a known kernel with the right number of inputs", () => {
    for (const m of METHODS) {
      const models = m.many ? Array.from({ length: m.many.min }, () => m.defaults) : undefined;
      const call = m.kernelFor(m.defaults, { name: "k", nameHash: 1, n: 100, ...(models ? { models } : {}) });
      assert.ok(KERNELS.includes(call.kernel), m.name);
      assert.ok(call.args.every((s) => (m.many ? s === "base" || typeof s === "number" : m.inputs.includes(s as "a"))), m.name);
    }
  });
  it("suggests the nearest name on a typo", async () => {
    await assert.rejects(merge({ a: "x", method: "weighted-summ" as never, out: "y" }), (e: Error & { code?: string }) => e.code === "METHOD_UNKNOWN" && /weighted-sum/.test(e.message));
  });
});
