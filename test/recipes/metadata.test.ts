/**
 * Recipes in the model: the classic tool's keys exactly as A1111 writes them (checked against
 * strings written out by hand from Python's json rules), ancestors flattened, our complete recipe,
 * one pass = row by row with metadata, and `reproduce` rebuilding files bit for bit.
 */
import { strict as assert } from "node:assert";
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { openModel } from "../../lib/formats";
import type { ModelFile } from "../../lib/model";
import { parseRecipe } from "../../lib/recipes";
import { embeddedRecipe } from "../../lib/recipes/metadata";
import { pyDumps, pyFloatRepr, pyLoads } from "../../lib/recipes/pyjson";
import { reproduce } from "../../lib/recipes/reproduce";
import { runRecipe } from "../../lib/recipes/run";
import { randomValues, readModel, tempDir, writeModel } from "../helpers/models";
import { filesIn, isCode, legacyOf, sameBytes, sha256Of, writeTinyModel } from "./helpers";

describe("recipes: Python-compatible JSON", () => {
  it("writes floats as Python's repr", () => {
    const cases: [number, string][] = [
      [0.5, "0.5"], [1, "1.0"], [0.1 + 0.2, "0.30000000000000004"], [1e-5, "1e-05"], [0.0001, "0.0001"],
      [2.5e-7, "2.5e-07"], [1e16, "1e+16"], [1e15, "1000000000000000.0"], [123456789012345680000, "1.2345678901234568e+20"],
      [-0, "-0.0"], [-1.5, "-1.5"], [0.144, "0.144"], [NaN, "NaN"], [-Infinity, "-Infinity"], [5e-324, "5e-324"],
    ];
    for (const [x, text] of cases) assert.equal(pyFloatRepr(x), text, String(x));
  });

  it("dumps with Python's separators and ASCII escapes, and keeps ints, floats and key order through loads", () => {
    assert.equal(pyDumps(pyLoads('{"b":1,"a":[1.0,2,1E-5,null,true],"é":"x\\"y😀\\u0001"}')), '{"b": 1, "a": [1.0, 2, 1e-05, null, true], "\\u00e9": "x\\"y\\ud83d\\ude00\\u0001"}');
    assert.equal(pyDumps(pyLoads('{"k": 1, "j": 2, "k": 3}')), '{"k": 3, "j": 2}'); // a repeated key: first place, last value
    assert.equal(pyDumps(pyLoads("[-0, 10000000000000000000001, -Infinity, NaN]")), "[0, 10000000000000000000001, -Infinity, NaN]");
    assert.throws(() => pyLoads("{'a': 1}"));
    assert.throws(() => pyLoads('{"a": 1} x'));
  });
});

describe("recipes: metadata in the outputs", function () {
  this.timeout(60_000);
  const dir = tempDir("tm-recipe-meta-");
  after(() => dir.cleanup());
  const ing = join(dir.path, "models"); // ingredients only: reproduce searches it
  const X = join(ing, "x.safetensors"), Y = join(ing, "y.safetensors"), Z = join(ing, "z.safetensors"), P = join(ing, "p.safetensors");
  const G = "a".repeat(64);
  let n = 0;
  const fresh = (name: string) => {
    const p = join(dir.path, `${name}-${++n}`);
    mkdirSync(p);
    return p;
  };
  before(() => {
    mkdirSync(ing);
    // X is larger than 1 MiB + 64 KiB so its legacy hash is not the hash of nothing.
    writeModel(X, {
      "model.diffusion_model.out.weight": { dtype: "F32", shape: [5, 7], values: randomValues(35, 1) },
      "model.diffusion_model.big.weight": { dtype: "F32", shape: [300000], values: randomValues(300000, 2) },
    });
    writeModel(Y, { "model.diffusion_model.out.weight": { dtype: "F32", shape: [5, 7], values: randomValues(35, 3) }, "model.diffusion_model.big.weight": { dtype: "F16", shape: [300000], values: randomValues(300000, 4) } });
    writeModel(Z, { "model.diffusion_model.out.weight": { dtype: "F32", shape: [5, 7], values: randomValues(35, 5) }, "model.diffusion_model.big.weight": { dtype: "F32", shape: [300000], values: randomValues(300000, 6) } });
    // P was merged by the classic tool: compact JSON, a float written 0.30, an int, an ancestor.
    writeModel(P, { "model.diffusion_model.out.weight": { dtype: "F32", shape: [5, 7], values: randomValues(35, 7) }, "model.diffusion_model.big.weight": { dtype: "F32", shape: [300000], values: randomValues(300000, 8) } }, {
      format: "pt",
      sd_merge_recipe: `{"type":"webui","primary_model_hash":"${G}","multiplier":0.30,"config_source":0,"weird":0.00001,"save_as_half":false}`,
      sd_merge_models: `{"${G}":{"name":"g.safetensors","legacy_hash":"12345678","sd_merge_recipe":null}}`,
    });
  });

  it("writes sd_merge_recipe and sd_merge_models exactly as A1111 would, ancestors flattened", async () => {
    const out = fresh("a1111");
    await runRecipe(parseRecipe(`ws = ${P} + ${X} + ${Y}, 0.3, fp16, safetensors\n`), { outDir: out });
    const meta = readModel(join(out, "ws.safetensors")).metadata;
    const [p, x, y] = [P, X, Y].map((f) => ({ sha: sha256Of(f), legacy: legacyOf(f) }));
    assert.notEqual(x!.legacy, "e3b0c442");
    assert.equal(meta.format, "pt");
    assert.equal(meta.sd_merge_recipe,
      `{"type": "tensormerge", "primary_model_hash": "${p!.sha}", "secondary_model_hash": "${x!.sha}", "tertiary_model_hash": "${y!.sha}", ` +
      `"interp_method": "Add difference", "multiplier": 0.3, "save_as_half": true, "custom_name": "ws", "config_source": 0, "bake_in_vae": "None", ` +
      `"discard_weights": "", "is_inpainting": false, "is_instruct_pix2pix": false}`);
    assert.equal(meta.sd_merge_models,
      `{"${p!.sha}": {"name": "p.safetensors", "legacy_hash": "${p!.legacy}", "sd_merge_recipe": {"type": "webui", "primary_model_hash": "${G}", "multiplier": 0.3, "config_source": 0, "weird": 1e-05, "save_as_half": false}}, ` +
      `"${G}": {"name": "g.safetensors", "legacy_hash": "12345678", "sd_merge_recipe": null}, ` +
      `"${x!.sha}": {"name": "x.safetensors", "legacy_hash": "${x!.legacy}", "sd_merge_recipe": null}, ` +
      `"${y!.sha}": {"name": "y.safetensors", "legacy_hash": "${y!.legacy}", "sd_merge_recipe": null}}`);
    const recipe = embeddedRecipe(meta)!;
    assert.equal(recipe.rows.length, 1);
    assert.deepEqual(recipe.rows[0]!.inputs.a, { kind: "model", ref: "p.safetensors", sha256: p!.sha, legacy: p!.legacy });
  });

  it("leaves the recipe out when asked", async () => {
    const out = fresh("private");
    await runRecipe(parseRecipe(`s = ${X} + ${Y}, 0.3, safetensors\nc = ${X} + ${Y}, 0.3\n`), { outDir: out, recipeMetadata: false });
    assert.deepEqual(readModel(join(out, "s.safetensors")).metadata, { format: "pt" });
    assert.deepEqual((await openModel(join(out, "c.ckpt"))).metadata, {}); // the ckpt writer drops format=pt: exactly {"state_dict": …}
  });

  it("a chain through saved .ckpt rows carries the recipe in the archives and reproduces from the ingredients alone", async () => {
    const out = fresh("ckpt-chain");
    // c2 is a .ckpt whose header names c1.ckpt's hash: laid out with a placeholder, patched after the pass.
    await runRecipe(parseRecipe(`c1 = ${X} + ${Y}, 0.3\nc2 = __O1__ + ${Z}, 0.6, fp16\nfin = __O2__ + ${P} + ${Z}, 0.5, safetensors\n`), { outDir: out });
    const c2 = await openModel(join(out, "c2.ckpt"));
    assert.equal((JSON.parse(c2.metadata.sd_merge_recipe!) as Record<string, unknown>).primary_model_hash, sha256Of(join(out, "c1.ckpt")));
    // Row by row on the saved files gives the same archives.
    const rbr = fresh("ckpt-rbr");
    await runRecipe(parseRecipe(`c1 = ${X} + ${Y}, 0.3\n`), { outDir: rbr });
    await runRecipe(parseRecipe(`c2 = ${join(rbr, "c1.ckpt")} + ${Z}, 0.6, fp16\n`), { outDir: rbr });
    assert.ok(sameBytes(join(out, "c1.ckpt"), join(rbr, "c1.ckpt")));
    assert.ok(sameBytes(join(out, "c2.ckpt"), join(rbr, "c2.ckpt")));
    const r = await reproduce(join(out, "fin.safetensors"), { modelDirs: [ing], out: join(dir.path, `fin-${++n}.safetensors`) });
    assert.equal(r.identical, true);
    const rc = await reproduce(join(out, "c2.ckpt"), { modelDirs: [ing], out: join(dir.path, `c2-${++n}.ckpt`) });
    assert.equal(rc.identical, true);
  });

  const chain = (saveMiddle: boolean) => JSON.stringify({
    rows: [
      { name: "m1", a: X, b: Y, multiplier: 0.25, dtype: "fp16" },
      { name: "m2", method: "add-difference", a: "m1", b: P, c: Z, multiplier: 0.6, save: saveMiddle },
      { name: "m3", method: "sigmoid", a: "m2", b: "m1", multiplier: 0.4, metadata: { author: "test" } },
    ],
  });

  it("one pass with metadata equals the rows run one by one on the saved files, byte for byte", async () => {
    const one = fresh("one-pass");
    await runRecipe(parseRecipe(chain(true)), { outDir: one });
    const rbr = fresh("row-by-row");
    const f = (name: string) => join(rbr, `${name}.safetensors`);
    await runRecipe(parseRecipe(JSON.stringify({ rows: [{ name: "m1", a: X, b: Y, multiplier: 0.25, dtype: "fp16" }] })), { outDir: rbr });
    await runRecipe(parseRecipe(JSON.stringify({ rows: [{ name: "m2", method: "add-difference", a: f("m1"), b: P, c: Z, multiplier: 0.6 }] })), { outDir: rbr });
    await runRecipe(parseRecipe(JSON.stringify({ rows: [{ name: "m3", method: "sigmoid", a: f("m2"), b: f("m1"), multiplier: 0.4, metadata: { author: "test" } }] })), { outDir: rbr });
    for (const name of ["m1", "m2", "m3"]) assert.ok(sameBytes(join(one, `${name}.safetensors`), f(name)), name);
    // m3 names the files it read by their real hashes, and carries the whole lineage.
    const meta = readModel(join(one, "m3.safetensors")).metadata;
    assert.equal(meta.author, "test");
    const a1111 = JSON.parse(meta.sd_merge_recipe!) as Record<string, unknown>;
    assert.equal(a1111.primary_model_hash, sha256Of(f("m2")));
    assert.equal(a1111.secondary_model_hash, sha256Of(f("m1")));
    const models = JSON.parse(meta.sd_merge_models!) as Record<string, unknown>;
    for (const file of [f("m2"), f("m1"), X, Y, P, Z]) assert.ok(sha256Of(file) in models, file);
    assert.ok(G in models, "P's ancestor");
    const lineage = embeddedRecipe(meta)!;
    assert.deepEqual(lineage.rows.map((r) => [r.name, r.save, r.produces?.sha256]), [
      ["m1", false, sha256Of(f("m1"))],
      ["m2", false, sha256Of(f("m2"))],
      ["m3", true, undefined],
    ]);
  });

  it("row metadata keys and variables named like Object.prototype members reach the outputs, and reproduce", async () => {
    const out = fresh("proto-names");
    const pairs: [string, string][] = [["__proto__", "p"], ["constructor", "c"], ["toString", "t"], ["valueOf", "v"]];
    const metadata = Object.fromEntries(pairs);
    const text = JSON.stringify({ rows: [
      { name: "s", a: "__constructor__", b: "__toString__", multiplier: 0.3, metadata },
      { name: "k", a: "__constructor__", b: "__toString__", multiplier: 0.3, format: "ckpt", metadata },
    ] });
    await runRecipe(parseRecipe(text), { outDir: out, bindings: Object.fromEntries([["constructor", X], ["toString", Y]]) });
    const meta = readModel(join(out, "s.safetensors")).metadata; // the test's own reader: JSON.parse, own keys
    for (const [k, v] of pairs) assert.ok(Object.hasOwn(meta, k) && meta[k] === v, k);
    const embedded = embeddedRecipe(meta)!;
    assert.deepEqual(Object.entries(embedded.rows.at(-1)!.metadata!), pairs);
    const ckptMeta = (await openModel(join(out, "k.ckpt"))).metadata;
    for (const [k, v] of pairs) assert.ok(Object.hasOwn(ckptMeta, k) && ckptMeta[k] === v, k);
    const rebuilt = join(dir.path, `rebuilt-${++n}.safetensors`);
    const r = await reproduce(join(out, "s.safetensors"), { modelDirs: [ing], out: rebuilt });
    assert.equal(r.identical, true);
  });

  it("ancestors keyed __proto__ or constructor in an input's sd_merge_models are carried into the output's", async () => {
    const out = fresh("proto-ancestors");
    const q = join(out, "q.safetensors");
    writeModel(q, { "model.diffusion_model.out.weight": { dtype: "F32", shape: [5, 7], values: randomValues(35, 9) }, "model.diffusion_model.big.weight": { dtype: "F32", shape: [300000], values: randomValues(300000, 10) } }, {
      sd_merge_models: '{"__proto__": {"name": "p.ckpt", "legacy_hash": "11111111", "sd_merge_recipe": null}, "constructor": {"name": "c.ckpt", "legacy_hash": "22222222", "sd_merge_recipe": null}}',
    });
    await runRecipe(parseRecipe(`m = ${q} + ${X}, 0.5, safetensors\n`), { outDir: out });
    const models = readModel(join(out, "m.safetensors")).metadata.sd_merge_models!;
    assert.ok(models.includes('"__proto__": {"name": "p.ckpt", "legacy_hash": "11111111", "sd_merge_recipe": null}'), models);
    assert.ok(models.includes('"constructor": {"name": "c.ckpt", "legacy_hash": "22222222", "sd_merge_recipe": null}'), models);
  });

  it("reproduce rebuilds a model bit for bit from its ingredients, an unsaved row recomputed", async () => {
    const out = fresh("unsaved");
    await runRecipe(parseRecipe(chain(false)), { outDir: out });
    assert.deepEqual(filesIn(out), ["m1.safetensors", "m3.safetensors"]);
    const target = join(out, "m3.safetensors");
    const rebuilt = join(dir.path, `rebuilt-${++n}.safetensors`);
    const r = await reproduce(target, { modelDirs: [ing], out: rebuilt });
    assert.equal(r.identical, true);
    assert.ok(sameBytes(target, rebuilt));
    assert.ok(r.kind === "recipe");
    assert.equal(r.run.passes, 1);
  });

  it("reproduce uses a recorded intermediate when it finds it, recomputes it when it does not", async () => {
    const out = fresh("saved");
    await runRecipe(parseRecipe(chain(true)), { outDir: out });
    const target = join(out, "m3.safetensors");
    const withMiddle = fresh("with-middle");
    copyFileSync(join(out, "m2.safetensors"), join(withMiddle, "renamed-m2.safetensors")); // found by hash, whatever its name
    copyFileSync(join(out, "m1.safetensors"), join(withMiddle, "m1.safetensors"));
    const opened: string[] = [];
    const counting = async (p: string): Promise<ModelFile> => { opened.push(p); return openModel(p); };
    const r1 = await reproduce(target, { modelDirs: [ing, withMiddle], out: join(dir.path, `r-${++n}.safetensors`), openModel: counting });
    assert.equal(r1.identical, true);
    assert.ok(opened.includes(join(withMiddle, "renamed-m2.safetensors")));
    assert.ok(!opened.includes(Z) && !opened.includes(P), "m2's own ingredients are not needed");
    // Without the intermediates: recomputed from X, Y, P, Z in one pass.
    const r2 = await reproduce(target, { modelDirs: [ing], out: join(dir.path, `r-${++n}.safetensors`) });
    assert.equal(r2.identical, true);
    assert.ok(r2.kind === "recipe");
    assert.deepEqual(r2.run.inputs.map((i) => i.name).sort(), ["p.safetensors", "x.safetensors", "y.safetensors", "z.safetensors"]);
  });

  it("reproduce finds renamed ingredients by hash, rebuilds one value of a sweep, and refuses when one is missing", async () => {
    const out = fresh("sweep");
    await runRecipe(parseRecipe(`sw = ${X} + ${Y} + ${Z}, 0.1:0.3:0.1, bf16, safetensors\n`), { outDir: out });
    const renamed = fresh("renamed");
    for (const [from, to] of [[X, "first.safetensors"], [Y, "second.safetensors"], [Z, "third.safetensors"]] as const) copyFileSync(from, join(renamed, to));
    const rebuilt = join(dir.path, `sw-${++n}.safetensors`);
    const r = await reproduce(join(out, "sw-0.2.safetensors"), { modelDirs: [renamed], out: rebuilt });
    assert.equal(r.identical, true);
    rmSync(join(renamed, "third.safetensors"));
    const missing = join(dir.path, `missing-${++n}.safetensors`);
    await assert.rejects(reproduce(join(out, "sw-0.2.safetensors"), { modelDirs: [renamed], out: missing }), (e: unknown) => isCode("MODEL_NOT_FOUND")(e) && /z\.safetensors/.test((e as Error).message));
    assert.equal(existsSync(missing), false);
  });

  it("reproduce refuses a model without a recipe, saying why", async () => {
    const out = fresh("norecipe");
    await runRecipe(parseRecipe(`s = ${X} + ${Y}, 0.3, safetensors\n`), { outDir: out, recipeMetadata: false });
    await assert.rejects(reproduce(join(out, "s.safetensors"), { modelDirs: [ing], out: join(dir.path, "never.safetensors") }), (e: unknown) => isCode("RECIPE_INVALID")(e) && /carries no recipe/.test((e as Error).message));
    await assert.rejects(reproduce(P, { modelDirs: [ing], out: join(dir.path, "never.safetensors") }), (e: unknown) => isCode("RECIPE_INVALID")(e) && /sd_merge_recipe/.test((e as Error).message));
  });

  it("a tiny SD-shaped board with discard and prune round-trips through reproduce", async () => {
    const models = fresh("sd");
    const [a, b] = [join(models, "a.safetensors"), join(models, "b.safetensors")];
    writeTinyModel(a, 11);
    writeTinyModel(b, 12);
    const out = fresh("sd-out");
    const text = JSON.stringify({ rows: [{ name: "v", a, b, multiplier: 0.5, discard: ["final_layer_norm"], prune: true }] });
    await runRecipe(parseRecipe(text), { outDir: out });
    const result = readModel(join(out, "v.safetensors"));
    assert.ok(!result.tensors.has("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
    assert.equal((JSON.parse(result.metadata.sd_merge_recipe!) as Record<string, unknown>).discard_weights, "final_layer_norm");
    const moved = fresh("sd-moved");
    for (const f of ["a", "b"]) renameSync(join(models, `${f}.safetensors`), join(moved, `${f}.safetensors`));
    const r = await reproduce(join(out, "v.safetensors"), { modelDirs: [moved], out: join(dir.path, `v-${++n}.safetensors`) });
    assert.equal(r.identical, true);
  });

  it("a baked-in VAE keeps A's key names (planner)", async () => {
    const models = fresh("vae");
    const [a, b, vae] = [join(models, "a.safetensors"), join(models, "b.safetensors"), join(models, "vae.safetensors")];
    writeTinyModel(a, 13);
    writeTinyModel(b, 14);
    writeModel(vae, { "decoder.conv_out.bias": { dtype: "F32", shape: [3], values: [1, 2, 3] } }); // a standalone VAE: no prefix
    const out = fresh("vae-out");
    await runRecipe(parseRecipe(JSON.stringify({ rows: [{ name: "v", a, b, multiplier: 0.5, vae }] })), { outDir: out });
    const result = readModel(join(out, "v.safetensors"));
    assert.equal((JSON.parse(result.metadata.sd_merge_recipe!) as Record<string, unknown>).bake_in_vae, "vae.safetensors");
    assert.deepEqual(result.order, readModel(a).order, "same keys as A, in A's order");
    assert.deepEqual(result.tensors.get("first_stage_model.decoder.conv_out.bias")!.values, [1, 2, 3]); // A's dtype is BF16: 1, 2, 3 are exact
  });
});
