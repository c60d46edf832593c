/**
 * Bake rows in JSON recipes (`loras`): parsed and written back, refused by the classic text,
 * run after the board into a saved row's file (a text-encoder module checked against the
 * formula W + fp32(te · alpha/rank) · up·down in fp32, rounded once to fp16, computed here), the
 * same bytes as bake() on that file, and rebuilt by reproduce from the files found by sha256.
 */
import { strict as assert } from "node:assert";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { bake } from "../../lib/lora/bake";
import { formatClassicRecipe } from "../../lib/recipes/classic";
import { formatJsonRecipe, parseJsonRecipe } from "../../lib/recipes/json";
import { reproduce } from "../../lib/recipes/reproduce";
import { runRecipe } from "../../lib/recipes/run";
import { readModel, tempDir } from "../helpers/models";
import { addScaled, deltaF32, loraEntries, viaF16, writeBase, writeLora } from "../lora/fixtures";

const code = (c: string) => (e: unknown) => e instanceof MergeError && e.code === c;

describe("recipes: bake rows (loras)", function () {
  this.timeout(180_000);
  const dir = tempDir("tm-recipes-bake-");
  after(() => dir.cleanup());
  const lib = join(dir.path, "lib");
  const file = (n: string) => join(lib, n);
  const lbw = "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0.5";
  const recipeJson = {
    format: "tensormerge-recipe", version: 1,
    rows: [
      { name: "mix", a: "__A__", b: "__B__", multiplier: 0.25 },
      { name: "baked", a: "mix", loras: [{ lora: "__DETAIL__", ratio: 0.8, te: 0.3 }, "style.safetensors"], te: 0.5, loraBlocks: lbw, dtype: "fp16", metadata: { note: "two LoRAs" } },
    ],
  };
  before(async () => {
    require("node:fs").mkdirSync(lib);
    await writeBase(file("a.safetensors"), "sd15", 32, 1);
    await writeBase(file("b.safetensors"), "sd15", 32, 2);
    writeLora(file("detail.safetensors"), loraEntries("lora_sd15_kohya_r32", 32), 11, () => 8);
    writeLora(file("style.safetensors"), loraEntries("lora_sd15_kohya_r32", 32), 12, () => 4);
  });

  it("parses, writes back the same JSON, and the classic text refuses it", () => {
    const recipe = parseJsonRecipe(recipeJson);
    const row = recipe.rows[1]!;
    assert.equal(row.method, "no-interpolation");
    assert.deepEqual(row.inputs.a, { kind: "row", row: 0 });
    assert.deepEqual(row.loras, [{ input: { kind: "var", name: "DETAIL" }, ratio: 0.8, te: 0.3 }, { input: { kind: "model", ref: "style.safetensors" }, ratio: 1 }]);
    assert.equal(row.loraTe, 0.5);
    assert.deepEqual(parseJsonRecipe(formatJsonRecipe(recipe)), recipe);
    assert.throws(() => formatClassicRecipe(recipe), (e: unknown) => code("RECIPE_INVALID")(e) && /LoRA/.test((e as Error).message) && /JSON/.test((e as Error).message));
  });

  it("refuses what a bake row cannot do, before anything is written", () => {
    const rows = recipeJson.rows;
    const bad = (patch: Record<string, unknown>[], why: RegExp) => assert.throws(() => parseJsonRecipe({ ...recipeJson, rows: patch }), (e: unknown) => code("RECIPE_INVALID")(e) && why.test((e as Error).message), String(why));
    bad([rows[0]!, { ...rows[1]!, method: "weighted-sum", b: "__B__", multiplier: 0.5 }], /method is no-interpolation/);
    bad([{ ...rows[0]!, save: false }, rows[1]!], /not saved/);
    bad([rows[0]!, rows[1]!, { name: "after", a: "baked", b: "__B__", multiplier: 0.5 }], /bake rows run after the merge rows/);
    bad([rows[0]!, { ...rows[1]!, loras: ["mix"] }], /not a row/);
    bad([rows[0]!, { ...rows[1]!, vae: "__B__" }], /does not take vae/);
    bad([{ ...rows[0]!, te: 0.5 }], /belong to a row with "loras"/);
  });

  it("runs the board, then bakes into the saved row: the formula on a text-encoder module, the bytes of bake() on that file", async () => {
    const out = dir.fresh("run");
    const report = await runRecipe(parseJsonRecipe(recipeJson), { bindings: { A: file("a.safetensors"), B: file("b.safetensors"), DETAIL: file("detail.safetensors") }, modelDirs: [lib], outDir: out });
    assert.deepEqual(report.outputs.map((o) => [o.row, o.name, o.state]), [[1, "mix", "written"], [2, "baked", "written"]]);
    const mix = join(out, "mix.safetensors"), baked = join(out, "baked.safetensors");
    // te module: W + fp32(te_detail · 8/rank · BASE 1) · ΔW_detail + fp32(0.5 · 4/rank) · ΔW_style, fp32 throughout, one rounding to fp16
    const n = "lora_te_text_model_encoder_layers_3_self_attn_q_proj", key = "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight";
    const w = readModel(mix).tensors.get(key)!;
    const [rows, cols] = w.shape as [number, number];
    let acc: ArrayLike<number> = w.values;
    for (const [lora, te, alpha] of [["detail", 0.3, 8], ["style", 0.5, 4]] as const) {
      const l = readModel(file(`${lora}.safetensors`)).tensors;
      const up = l.get(`${n}.lora_up.weight`)!, down = l.get(`${n}.lora_down.weight`)!;
      const rank = down.shape[0]!;
      acc = addScaled(acc, deltaF32(up.values, down.values, rows, rank, cols), Math.fround(te * (alpha / rank)));
    }
    const got = readModel(baked).tensors.get(key)!;
    assert.equal(got.dtype, "F16");
    for (let i = 0; i < got.values.length; i++) assert.ok(Object.is(got.values[i], viaF16(acc[i]!)), `${key}[${i}]`);
    assert.equal(readModel(baked).metadata.note, "two LoRAs");
    // the whole file: bake() with the same settings on the saved row
    const direct = join(dir.fresh("direct"), "baked.safetensors");
    await bake({ model: mix, loras: [{ path: file("detail.safetensors"), ratio: 0.8, te: 0.3 }, { path: file("style.safetensors") }], te: 0.5, loraBlocks: lbw, dtype: "fp16", metadata: { note: "two LoRAs" }, out: direct });
    assert.ok(readFileSync(direct).equals(readFileSync(baked)));
    // reproduce: A (the saved row) and the LoRAs found by sha256 in the folders
    const rebuilt = join(dir.fresh("rebuilt"), "baked.safetensors");
    const r = await reproduce(baked, { modelDirs: [lib, out], out: rebuilt, hashCache: null });
    assert.equal(r.identical, true);
  });

  it("a recipe of bake rows only, the model a file; a missing LoRA is FILE_NOT_FOUND naming it, nothing written", async () => {
    const out = dir.fresh("only");
    const recipe = parseJsonRecipe({ rows: [{ name: "solo", a: "a.safetensors", loras: ["detail.safetensors"] }] });
    const report = await runRecipe(recipe, { modelDirs: [lib], outDir: out });
    assert.equal(report.outputs[0]!.state, "written");
    const direct = join(dir.fresh("solo-direct"), "solo.safetensors");
    await bake({ model: file("a.safetensors"), loras: [file("detail.safetensors")], out: direct });
    assert.ok(readFileSync(direct).equals(readFileSync(join(out, "solo.safetensors"))));
    const missing = parseJsonRecipe({ rows: [{ name: "never", a: "a.safetensors", loras: ["nowhere.safetensors"] }] });
    await assert.rejects(runRecipe(missing, { modelDirs: [lib], outDir: out }), (e: unknown) => code("FILE_NOT_FOUND")(e) && /nowhere\.safetensors/.test((e as Error).message));
    assert.ok(!existsSync(join(out, "never.safetensors")));
  });
});
