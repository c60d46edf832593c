/** The README's key rules, end to end on both engines. */
import { strict as assert } from "node:assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { merge } from "../../lib/merge";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir, writeModel } from "../helpers/models";

const f = Math.fround;
const CONV = "model.diffusion_model.input_blocks.0.0.weight";

describe("key rules", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  // A inpainting-like: conv [2, 9, 1, 1]; B normal: [2, 4, 1, 1]
  const convA = Array.from({ length: 18 }, (_, i) => i + 1);
  const convB = Array.from({ length: 8 }, (_, i) => 100 + i);
  before(() => {
    writeModel(a, {
      "z.last": { dtype: "F32", shape: [2], values: [1, 2] },
      "cond_stage_model.transformer.text_model.embeddings.position_ids": { dtype: "I64", shape: [1, 3], values: [0, 1, 2] },
      "cond_stage_model.transformer.text_model.embeddings.position_ids_float": { dtype: "F32", shape: [1], values: [5] },
      "other.position_ids": { dtype: "F32", shape: [3], values: [0, 1, 2] },
      betas: { dtype: "F32", shape: [2], values: [0.1, 0.2] },
      "model_ema.num_updates": { dtype: "I32", shape: [], values: [7] },
      "only.in.a": { dtype: "F16", shape: [2], values: [3, 4] },
      [CONV]: { dtype: "F32", shape: [2, 9, 1, 1], values: convA },
      "a.weight": { dtype: "F32", shape: [2], values: [10, 20] },
    });
    writeModel(b, {
      "a.weight": { dtype: "F32", shape: [2], values: [30, 40] },
      [CONV]: { dtype: "F32", shape: [2, 4, 1, 1], values: convB },
      "cond_stage_model.transformer.text_model.embeddings.position_ids": { dtype: "I64", shape: [1, 3], values: [9, 9, 9] },
      "other.position_ids": { dtype: "F32", shape: [3], values: [9, 9, 9] },
      betas: { dtype: "F32", shape: [2], values: [0.9, 0.9] },
      "model_ema.num_updates": { dtype: "I32", shape: [], values: [99] },
      "z.last": { dtype: "F32", shape: [2], values: [3, 4] },
      "only.in.b": { dtype: "F32", shape: [1], values: [1] },
      "cond_stage_model.transformer.text_model.embeddings.position_ids_float": { dtype: "F32", shape: [1], values: [7] },
    });
  });

  for (const engine of ENGINES) {
    it(`keeps A's order, copies buffers, keeps A for missing keys, merges shared channels (${engine})`, async () => {
      const out = join(dir.path, `out-${engine}.safetensors`);
      const report = await merge({ a, b, method: "weighted-sum", multiplier: 0.5, dtype: "fp32", out, engine });
      const r = readModel(out);
      assert.deepEqual(r.order, [
        "z.last",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "cond_stage_model.transformer.text_model.embeddings.position_ids_float",
        "other.position_ids",
        "betas",
        "model_ema.num_updates",
        "only.in.a",
        CONV,
        "a.weight",
      ]);
      const v = (k: string) => r.tensors.get(k)!;
      assert.deepEqual(v("z.last").values, [2, 3]);
      assert.deepEqual(v("a.weight").values, [20, 30]);
      // buffers: copied from A as they are, in their own dtype
      assert.equal(v("cond_stage_model.transformer.text_model.embeddings.position_ids").dtype, "I64");
      assert.deepEqual(v("cond_stage_model.transformer.text_model.embeddings.position_ids").values, [0, 1, 2]);
      assert.deepEqual(v("other.position_ids").values, [0, 1, 2]);
      assert.deepEqual(v("betas").values, [f(0.1), f(0.2)]);
      assert.deepEqual(v("model_ema.num_updates").values, [7]);
      // a name that merely contains position_ids is an ordinary weight
      assert.deepEqual(v("cond_stage_model.transformer.text_model.embeddings.position_ids_float").values, [6]);
      // missing in B: A's values in the output dtype, counted
      assert.equal(v("only.in.a").dtype, "F32");
      assert.deepEqual(v("only.in.a").values, [3, 4]);
      assert.equal(report.stats.missing.b, 1);
      assert.equal(report.stats.extraKeys, 1);
      assert.equal(r.tensors.has("only.in.b"), false);
      // inpainting conv: per output channel, first 4 input channels merged, the other 5 from A
      const expected = convA.map((x, i) => {
        const o = Math.floor(i / 9), ch = i % 9;
        return ch < 4 ? f(f(x * 0.5) + f(convB[o * 4 + ch]! * 0.5)) : x;
      });
      assert.deepEqual(v(CONV).values, expected);
      assert.deepEqual(report.stats.partial, [CONV]);
    });
  }

  it("refuses a float key whose shape differs, naming the key and both shapes, before creating the output", async () => {
    const c = join(dir.path, "c.safetensors");
    writeModel(c, { "a.weight": { dtype: "F32", shape: [1, 2], values: [1, 2] } });
    const out = join(dir.path, "never.safetensors");
    await assert.rejects(merge({ a, b: c, method: "weighted-sum", out }), (e: unknown) => {
      assert.ok(e instanceof MergeError);
      assert.equal(e.code, "SHAPE_MISMATCH");
      assert.equal(e.tensor, "a.weight");
      assert.match(e.message, /\[2\].*\[1, 2\]/);
      return true;
    });
    const { existsSync, readdirSync } = await import("node:fs");
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(dir.path).filter((n) => n.includes("tensormerge")), []);
  });

  for (const engine of ENGINES) {
    it(`add difference: a key C lacks keeps A's values and is counted; F8 tensors are copied from A byte for byte (${engine})`, async () => {
      const f8A = new Uint8Array([0x38, 0xb8, 0x7e, 0x01]), f8B = new Uint8Array([0x40, 0x40, 0x40, 0x40]);
      const a2 = join(dir.path, `a2-${engine}.safetensors`), b2 = join(dir.path, `b2-${engine}.safetensors`), c2 = join(dir.path, `c2-${engine}.safetensors`);
      writeModel(a2, { "w.x": { dtype: "F32", shape: [2], values: [1, 2] }, "w.y": { dtype: "F32", shape: [2], values: [3, 4] }, "q.f8": { dtype: "F8_E4M3", shape: [4], raw: f8A } });
      writeModel(b2, { "w.x": { dtype: "F32", shape: [2], values: [5, 6] }, "w.y": { dtype: "F32", shape: [2], values: [7, 8] }, "q.f8": { dtype: "F8_E4M3", shape: [4], raw: f8B } });
      writeModel(c2, { "w.x": { dtype: "F32", shape: [2], values: [1, 1] }, "q.f8": { dtype: "F8_E4M3", shape: [4], raw: f8B } });
      const out = join(dir.path, `ad-missing-c-${engine}.safetensors`);
      const report = await merge({ a: a2, b: b2, c: c2, method: "add-difference", multiplier: 0.5, out, engine });
      const r = readModel(out);
      // w.x: A + (B − C)·0.5 = [1 + 2, 2 + 2.5]; w.y: C lacks it, so A's values.
      assert.deepEqual(r.tensors.get("w.x")!.values, [3, 4.5]);
      assert.deepEqual(r.tensors.get("w.y")!.values, [3, 4]);
      assert.equal(report.stats.missing.c, 1);
      assert.equal(report.stats.missing.b ?? 0, 0);
      assert.equal(r.tensors.get("q.f8")!.dtype, "F8_E4M3");
      assert.deepEqual([...r.tensors.get("q.f8")!.bytes], [...f8A]);
    });
  }

  it("refuses an inpainting add difference whose B keeps 9 channels while C has 4, and channel counts other than 9 or 8 vs 4", async () => {
    const c4 = join(dir.path, "c4.safetensors");
    writeModel(c4, { [CONV]: { dtype: "F32", shape: [2, 4, 1, 1], values: convB } });
    const out = join(dir.path, "never-ad.safetensors");
    await assert.rejects(merge({ a, b: a, c: c4, method: "add-difference", out }), (e: unknown) => {
      assert.ok(e instanceof MergeError && e.code === "SHAPE_MISMATCH", String(e));
      assert.equal(e.tensor, CONV);
      assert.match(e.message, /\[2, 9, 1, 1\] in B .* but \[2, 4, 1, 1\] in C/);
      return true;
    });
    const six = join(dir.path, "six.safetensors");
    writeModel(six, { [CONV]: { dtype: "F32", shape: [2, 6, 1, 1], values: Array.from({ length: 12 }, (_, i) => i) } });
    await assert.rejects(merge({ a: six, b: c4, method: "weighted-sum", out }), (e: unknown) => e instanceof MergeError && e.code === "SHAPE_MISMATCH" && e.tensor === CONV);
    assert.equal(existsSync(out), false);
  });

  it("refuses B as the inpainting model (A must have the extra channels)", async () => {
    await assert.rejects(merge({ a: b, b: a, method: "weighted-sum", out: join(dir.path, "x.safetensors") }), (e: unknown) => e instanceof MergeError && e.code === "SHAPE_MISMATCH" && e.tensor === CONV);
  });
});
