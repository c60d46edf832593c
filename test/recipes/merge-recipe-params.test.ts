/**
 * `sd_merge_recipe` of block and per-key merges: after A1111's keys, what SuperMerger's recipe
 * shows for its block merges (scripts/mergers/mergers.py writes `mbw`, `weights_alpha` /
 * `weights_beta` as comma-separated text, `weights_*_orig` as typed, `base_beta`), then the
 * per-key values and clamp. Expected strings are written out here: SuperMerger's published
 * GRAD_V values (its mbwpresets), Python's json.dumps text for the keys A1111 writes.
 */
import { strict as assert } from "node:assert";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { runRecipe } from "../../lib/recipes/run";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../../lib/synthetic";
import { readModel, tempDir } from "../helpers/models";

// SuperMerger's GRAD_V for SD 1.x (26 values, BASE first), as its presets file prints them.
const GRAD_V = [0, 1, 0.9166666667, 0.8333333333, 0.75, 0.6666666667, 0.5833333333, 0.5, 0.4166666667, 0.3333333333, 0.25, 0.1666666667, 0.0833333333, 0, 0.0833333333, 0.1666666667, 0.25, 0.3333333333, 0.4166666667, 0.5, 0.5833333333, 0.6666666667, 0.75, 0.8333333333, 0.9166666667, 1];
const A1111_KEYS = ["type", "primary_model_hash", "secondary_model_hash", "tertiary_model_hash", "interp_method", "multiplier", "save_as_half", "custom_name", "config_source", "bake_in_vae", "discard_weights", "is_inpainting", "is_instruct_pix2pix"];

describe("recipes: sd_merge_recipe of block and per-key merges", function () {
  this.timeout(120_000);
  const dir = tempDir("tm-recipe-params-");
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(async () => {
    const layout = shrinkLayout(loadBuiltinLayout("sd15"), 64);
    await writeSyntheticModel(a, layout, { seed: 1 });
    await writeSyntheticModel(b, layout, { seed: 2 });
    await writeSyntheticModel(c, layout, { seed: 3 });
  });
  const recipeOf = (path: string) => readModel(path).metadata.sd_merge_recipe!;
  const betaList = Array.from({ length: 26 }, (_, i) => (i % 5) / 4);

  it("shows the blocks (resolved and as typed), β, the per-key values and clamp, after A1111's keys", async () => {
    const out = join(dir.path, "blocks.safetensors");
    await merge({
      a, b, c, method: "triple-sum", multiplier: 0.4, beta: 0.3, blocks: "GRAD_V", betaBlocks: betaList,
      weights: [{ pattern: "first_stage_model\\.", value: 0 }, { pattern: "cond_stage_model\\.", value: 0.25 }],
      betaWeights: [{ pattern: "time_embed", value: 1 }], clamp: true, out,
    });
    const text = recipeOf(out);
    const recipe = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(Object.keys(recipe), [
      ...A1111_KEYS, "mbw", "weights_alpha", "weights_alpha_orig", "weights_beta", "weights_beta_orig", "base_beta", "key_weights_alpha", "key_weights_beta", "clamp",
    ]);
    assert.equal(recipe.interp_method, "triple-sum");
    assert.equal(recipe.mbw, true);
    assert.deepEqual((recipe.weights_alpha as string).split(",").map(Number), GRAD_V);
    assert.equal(recipe.weights_alpha_orig, "GRAD_V");
    assert.equal(recipe.weights_beta, "0,0.25,0.5,0.75,1,0,0.25,0.5,0.75,1,0,0.25,0.5,0.75,1,0,0.25,0.5,0.75,1,0,0.25,0.5,0.75,1,0");
    assert.equal(recipe.weights_beta_orig, recipe.weights_beta);
    assert.equal(recipe.base_beta, 0.3);
    assert.deepEqual(recipe.key_weights_alpha, ["first_stage_model\\.=0", "cond_stage_model\\.=0.25"]);
    assert.deepEqual(recipe.key_weights_beta, ["time_embed=1"]);
    assert.equal(recipe.clamp, true);
    // Python's json.dumps text for the new keys (", " and ": " separators, floats by repr)
    assert.ok(text.includes(`"mbw": true, "weights_alpha": "0,1,0.9166666667,`), text);
    assert.ok(text.endsWith(`"base_beta": 0.3, "key_weights_alpha": ["first_stage_model\\\\.=0", "cond_stage_model\\\\.=0.25"], "key_weights_beta": ["time_embed=1"], "clamp": true}`), text);
  });

  it("a merge with only a multiplier keeps exactly A1111's keys", async () => {
    const out = join(dir.path, "plain.safetensors");
    await merge({ a, b, method: "weighted-sum", multiplier: 0.4, out });
    assert.deepEqual(Object.keys(JSON.parse(recipeOf(out)) as object), A1111_KEYS);
  });

  it("a recipe row with blocks writes the same fields (the map of its A, also for a preset)", async () => {
    const recipe = parseRecipe(JSON.stringify({ rows: [{ name: "mbw", method: "weighted-sum", a, b, multiplier: 0.5, blocks: { alpha: "FLAT_25" } }] }));
    const outDir = join(dir.path, "run");
    mkdirSync(outDir);
    await runRecipe(recipe, { outDir });
    const fields = JSON.parse(recipeOf(join(outDir, "mbw.safetensors"))) as Record<string, unknown>;
    assert.equal(fields.weights_alpha_orig, "FLAT_25");
    assert.deepEqual((fields.weights_alpha as string).split(",").map(Number), [0, ...Array(25).fill(0.25)]);
    assert.equal(fields.mbw, true);
  });
});
