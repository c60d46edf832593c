/** merge() outputs carry the recipe (A1111 keys, inputs by sha256) unless asked not to. */
import { strict as assert } from "node:assert";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { readModel, randomValues, tempDir, writeModel } from "../helpers/models";

describe("merge metadata", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [8], values: randomValues(8, 1) } }, { format: "pt" });
    writeModel(b, { w: { dtype: "F32", shape: [8], values: randomValues(8, 2) } });
  });
  const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

  it("records the classic recipe keyed by the inputs' sha256, and our own recipe", async () => {
    const out = join(dir.path, "mix.safetensors");
    await merge({ a, b, method: "weighted-sum", multiplier: 0.25, dtype: "fp16", out });
    const meta = readModel(out).metadata;
    const recipe = JSON.parse(meta.sd_merge_recipe!) as Record<string, unknown>;
    assert.equal(recipe.primary_model_hash, sha(a));
    assert.equal(recipe.secondary_model_hash, sha(b));
    assert.equal(recipe.interp_method, "Weighted sum");
    assert.equal(recipe.multiplier, 0.25);
    assert.equal(recipe.save_as_half, true);
    const models = JSON.parse(meta.sd_merge_models!) as Record<string, { name: string }>;
    assert.deepEqual(Object.keys(models).sort(), [sha(a), sha(b)].sort());
    assert.equal(models[sha(a)]!.name, "a.safetensors");
    assert.ok(meta.tensormerge_recipe);
  });

  it("leaves the recipe out with recipeMetadata: false", async () => {
    const out = join(dir.path, "private.safetensors");
    await merge({ a, b, method: "weighted-sum", out, recipeMetadata: false });
    assert.deepEqual(readModel(out).metadata, { format: "pt" });
  });
});
