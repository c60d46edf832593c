/**
 * The board planner: a chained board run as one pass equals running its rows one by one with
 * merge() and re-reading each saved file, byte for byte (rounding, missing keys, buffers and
 * the input-conv exception included).
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { executePlan, preflight } from "../../lib/board";
import { openModel } from "../../lib/formats";
import { merge } from "../../lib/merge";
import { resolveMethod } from "../../lib/methods/registry";
import { planBoard } from "../../lib/plan";
import { MergeError } from "../../lib/errors";
import { ENGINES } from "../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";

const CONV = "model.diffusion_model.input_blocks.0.0.weight";

function model(path: string, seed: number, opts: { inpaint?: boolean; lacks?: string } = {}): void {
  const t: Record<string, TestTensor> = {
    "x.weight": { dtype: "F32", shape: [7, 5], values: randomValues(35, seed, true) },
    "h.weight": { dtype: "F16", shape: [33], values: randomValues(33, seed + 1) },
    [CONV]: { dtype: "F32", shape: [3, opts.inpaint ? 9 : 4, 1, 1], values: randomValues(opts.inpaint ? 27 : 12, seed + 2) },
    "cond_stage_model.transformer.text_model.embeddings.position_ids": { dtype: "I64", shape: [1, 4], values: [0, 1, 2, 3] },
    "b.bias": { dtype: "BF16", shape: [9], values: randomValues(9, seed + 3) },
  };
  if (opts.lacks) delete t[opts.lacks];
  writeModel(path, t);
}

describe("board: chained rows in one pass", function () {
  this.timeout(60_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const A = join(dir.path, "A.safetensors"), B = join(dir.path, "B.safetensors"), C = join(dir.path, "C.safetensors");
  before(() => {
    model(A, 10, { inpaint: true });
    model(B, 20, { lacks: "b.bias" });
    model(C, 30);
  });

  for (const engine of ENGINES) {
    it(`three chained rows (fp16 → unsaved → bf16) equal row-by-row merges (${engine})`, async () => {
      // row by row, saving every intermediate
      const r1 = join(dir.path, `r1-${engine}.safetensors`), r2 = join(dir.path, `r2-${engine}.safetensors`), r3 = join(dir.path, `r3-${engine}.safetensors`);
      await merge({ recipeMetadata: false, a: A, b: B, method: "weighted-sum", multiplier: 0.3, dtype: "fp16", out: r1, engine });
      await merge({ recipeMetadata: false, a: r1, b: B, c: C, method: "add-difference", multiplier: 0.5, out: r2, engine });
      await merge({ recipeMetadata: false, a: r2, b: A, method: "sigmoid", multiplier: 0.4, dtype: "bf16", out: r3, engine });

      const [ma, mb, mc] = [await openModel(A), await openModel(B), await openModel(C)];
      const o1 = join(dir.path, `o1-${engine}.safetensors`), o3 = join(dir.path, `o3-${engine}.safetensors`);
      const meta = { format: "pt" };
      const plan = planBoard({
        rows: [
          { name: "o1", method: resolveMethod("weighted-sum"), inputs: { a: { model: ma }, b: { model: mb } }, multipliers: [0.3], dtype: "fp16", outputs: [{ path: o1, format: "safetensors", metadata: meta }] },
          { name: "o2", method: resolveMethod("add-difference"), inputs: { a: { row: 0 }, b: { model: mb }, c: { model: mc } }, multipliers: [0.5] },
          { name: "o3", method: resolveMethod("sigmoid"), inputs: { a: { row: 1 }, b: { model: ma } }, multipliers: [0.4], dtype: "bf16", outputs: [{ path: o3, format: "safetensors", metadata: meta }] },
        ],
      });
      assert.equal(plan.inputs.length, 3, "each input file once");
      assert.equal(plan.passes.length, 1);
      await preflight(plan, false);
      await executePlan(plan, { engine });
      assert.ok(readFileSync(o1).equals(readFileSync(r1)), "O1");
      assert.ok(readFileSync(o3).equals(readFileSync(r3)), "O3");
    });
  }

  it("refuses a reference to a later row and a swept row feeding another, before writing", () => {
    const ws = resolveMethod("weighted-sum");
    assert.throws(() => planBoard({ rows: [{ name: "x", method: ws, inputs: { a: { row: 1 }, b: { row: 0 } }, multipliers: [0.5] }] }), (e: unknown) => e instanceof MergeError && e.code === "RECIPE_INVALID");
  });
});
