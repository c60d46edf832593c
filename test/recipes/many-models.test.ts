/**
 * Base + models rows in recipes: the JSON forms of a model list (strings, objects with weights
 * and per-model parameters, pinned hashes), written back to the same JSON, refused by the classic
 * text, validated (base required, duplicates, per-model parameters), and compatibility checks of
 * every model against the base.
 */
import { strict as assert } from "node:assert";
import { linkSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { openModel } from "../../lib/formats";
import { assertCompatible, assertDistinctModels } from "../../lib/library/compat";
import { METHODS } from "../../lib/methods/registry";
import { formatClassicRecipe } from "../../lib/recipes/classic";
import { compileRecipe } from "../../lib/recipes/compile";
import { formatJsonRecipe, parseJsonRecipe, readJson, recipeToJson, RECIPE_SCHEMA } from "../../lib/recipes/json";
import { embeddedRecipe, outputMetadata } from "../../lib/recipes/metadata";
import { parseHistory } from "../../lib/recipes/history";
import { reproduce } from "../../lib/recipes/reproduce";
import { runRecipe } from "../../lib/recipes/run";
import { rowInputs, usedVariables } from "../../lib/recipes/types";
import { validateRecipe } from "../../lib/recipes/validate";
import { readModel, tempDir, writeModel } from "../helpers/models";
import { isCode } from "./helpers";

const invalid = isCode("RECIPE_INVALID");
const SHA = "0123456789abcdef".repeat(4);

/** A base + models row as a user writes it: every form a model entry may take. */
const ROW = {
  name: "tied",
  method: "ties",
  base: "__SD15__",
  models: [
    "a.safetensors",
    { input: "__STYLE__", weight: 0.8 },
    { model: "c.safetensors", sha256: SHA, weight: 0.6, params: { density: 0.3 } },
    { row: "first" },
  ],
  multiplier: 1,
  params: { density: 0.2 },
};
const RECIPE = {
  rows: [{ name: "first", a: "x", b: "y", multiplier: 0.5, save: false }, ROW],
};

describe("recipes: base + models rows (JSON)", () => {
  it("reads every form of a model entry", () => {
    const r = readJson(RECIPE);
    const row = r.rows[1]!;
    assert.deepEqual(row.inputs, {});
    assert.deepEqual(row.base, { kind: "var", name: "SD15" });
    assert.deepEqual(row.models, [
      { input: { kind: "model", ref: "a.safetensors" } },
      { input: { kind: "var", name: "STYLE" }, weight: 0.8 },
      { input: { kind: "model", ref: "c.safetensors", sha256: SHA }, weight: 0.6, params: { density: 0.3 } },
      { input: { kind: "row", row: 0 } },
    ]);
    assert.deepEqual(usedVariables(r), ["SD15", "STYLE"]);
    assert.deepEqual(rowInputs(row).map((i) => i.label), ["base", "model 1", "model 2", "model 3", "model 4"]);
  });

  it("writes the same JSON back (bare inputs as strings, the rest as objects)", () => {
    const json = recipeToJson(readJson(RECIPE)) as { rows: Record<string, unknown>[] };
    assert.deepEqual(json.rows[1]!.base, "__SD15__");
    assert.deepEqual(json.rows[1]!.models, [...ROW.models.slice(0, 3), "first"]); // a row by its name, as A/B/C

    assert.deepEqual(readJson(json), readJson(RECIPE));
  });

  it("refuses malformed entries, naming the row and the entry", () => {
    const cases: [unknown, RegExp][] = [
      [{ ...ROW, models: "a" }, /row 1 \(tied\) models: expected a list/],
      [{ ...ROW, models: [{ input: "a", model: "b" }] }, /models\[0\]: "input" and "model" both say which model/],
      [{ ...ROW, models: [{ input: "a", weight: "1" }] }, /models\[0\] weight: expected a number/],
      [{ ...ROW, models: [{ input: "a", params: { density: "x" } }] }, /models\[0\] params\.density: expected a number/],
      [{ ...ROW, models: [{ weight: 1 }] }, /models\[0\]: an input object has "var", "row" or "model"/],
      [{ name: "x", base: "b", models: ["a"] }, /names its "method"/],
    ];
    for (const [row, message] of cases) {
      assert.throws(() => readJson({ rows: [row] }), (e: unknown) => invalid(e) && message.test((e as Error).message), JSON.stringify(row));
    }
  });

  it("a classic method refuses a base and models, naming the row", () => {
    assert.throws(() => parseJsonRecipe({ rows: [{ name: "w", method: "weighted-sum", base: "b", models: ["a", "c"], multiplier: 0.5 }] }),
      (e: unknown) => invalid(e) && /row 1 \(w\): weighted-sum takes models A, B, not a base and a list of models/.test((e as Error).message));
  });
});

/** The tests below need the base + models methods of the registry. */
const ties = METHODS.find((m) => m.name === "ties");
const haveMany = ties !== undefined && ties.many !== undefined;

describe("recipes: base + models rows (validation and export)", function () {
  before(function () {
    if (!haveMany) this.skip(); // until the ties method is in the registry
  });

  it("validates a well-formed row and writes it as JSON", () => {
    const r = parseJsonRecipe(RECIPE);
    assert.equal(r.rows[1]!.models!.length, 4);
    assert.deepEqual(JSON.parse(formatJsonRecipe(r)).rows[1].models, [...ROW.models.slice(0, 3), "first"]);
    // Without a multiplier, the row takes the method's default α.
    const { multiplier: _m, ...bare } = ROW;
    assert.deepEqual(parseJsonRecipe({ rows: [RECIPE.rows[0], bare] }).rows[1]!.multipliers, [ties!.params[0]!.default]);
  });

  it("refuses a missing base, too few models, a model twice, a model that is the base, bad weights and row parameters given per model", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...ROW, base: undefined }, /ties needs a base/],
      [{ ...ROW, models: [] }, /ties needs at least \d+ models?, got 0/],
      [{ ...ROW, models: ["a.safetensors", "b", "a.safetensors"] }, /model 3 \(a\.safetensors\) is the same as model 1/],
      [{ ...ROW, models: ["__SD15__", "b"] }, /model 1 \(__SD15__\) is the same as the base/],
      [{ ...ROW, models: [{ input: "a", weight: 1e300 }] }, /model 1: weight .* must be a finite number/],
      [{ ...ROW, models: [{ input: "a", params: { density: 7 } }, "b"] }, /model 1: .*density = 7 is outside ties's range/],
      [{ ...ROW, models: [{ input: "a", params: { nope: 1 } }, "b"] }, /model 1: .*ties has no parameter "nope"/],
      [{ ...ROW, a: "m" }, /ties takes a base and a list of models, not model A/],
      [{ ...ROW, config: "b" }, /config "b" names a model slot ties does not have/],
      [{ ...ROW, params: { density: -1 } }, /density = -1 is outside/],
    ];
    for (const [row, message] of cases) {
      const recipe = { rows: [RECIPE.rows[0], row] };
      assert.throws(() => parseJsonRecipe(recipe), (e: unknown) => invalid(e) && /row 2 \(tied\)/.test((e as Error).message) && message.test((e as Error).message), `${JSON.stringify(row)}: ${(() => { try { parseJsonRecipe(recipe); return "accepted"; } catch (e) { return (e as Error).message; } })()}`);
    }
  });

  it("the classic text cannot express the row: export refuses it, naming the row", () => {
    assert.throws(() => formatClassicRecipe(parseJsonRecipe(RECIPE)), (e: unknown) => invalid(e) && /row 2 \(tied\): the classic text cannot express a ties row's base and list of models/.test((e as Error).message));
  });

  it("a later row may take a base + models row's output, and a sweep cannot feed one", () => {
    const chained = { rows: [{ ...ROW, models: ["a", "b"] }, { name: "after", a: "tied", b: "z", multiplier: 0.5 }] };
    assert.deepEqual(parseJsonRecipe(chained).rows[1]!.inputs.a, { kind: "row", row: 0 });
    assert.deepEqual(validateRecipe(parseJsonRecipe(chained)).warnings, []);
    const later = { rows: [{ ...ROW, models: ["a", "next"] }, { name: "next", a: "x", b: "y", multiplier: 0.5 }] };
    assert.throws(() => parseJsonRecipe(later), (e: unknown) => invalid(e) && /input model 2 is row 2 \(next\), which comes later/.test((e as Error).message));
  });
});

describe("compatibility of a base and its models", function () {
  this.timeout(30_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const base = join(dir.path, "base.safetensors"), m1 = join(dir.path, "m1.safetensors"), wide = join(dir.path, "wide.safetensors");
  const link = join(dir.path, "sub", "m1-link.safetensors");
  const layout = (rows: number) => ({
    "model.diffusion_model.out.weight": { dtype: "F32" as const, shape: [rows, 2], values: new Array(rows * 2).fill(1) },
    "model.diffusion_model.in.weight": { dtype: "F32" as const, shape: [3], values: [1, 2, 3] },
  });
  before(() => {
    writeModel(base, layout(2));
    writeModel(m1, layout(2));
    writeModel(wide, layout(3));
    mkdirSync(join(dir.path, "sub"));
    linkSync(m1, link);
  });

  it("checks every model against the base, naming the model that does not fit", async () => {
    const models = await Promise.all([base, m1, wide].map((p) => openModel(p)));
    assert.throws(() => assertCompatible(models, { labels: ["base (base.safetensors)", "model 1 (m1.safetensors)", "model 2 (wide.safetensors)"] }),
      (e: unknown) => isCode("SHAPE_MISMATCH")(e) && /model 2 \(wide\.safetensors\) does not fit base/.test((e as Error).message) && (e as { path?: string }).path === wide);
  });

  it("refuses the same file twice, by path or through a hard link", async () => {
    const [b, a1, a2, l] = await Promise.all([base, m1, m1, link].map((p) => openModel(p)));
    assert.throws(() => assertDistinctModels([b!, a1!, a2!], { labels: ["base", "model 1", "model 2"] }), /model 2 is the same file as model 1/);
    assert.throws(() => assertDistinctModels([b!, a1!, l!]), /C \(m1-link\.safetensors\) is the same file as B \(m1\.safetensors\)/);
    assertDistinctModels([b!, a1!]);
  });

  it("compile refuses two references to one file among a row's models", async function () {
    if (!haveMany) this.skip();
    const recipe = parseJsonRecipe({ rows: [{ name: "t", method: "ties", base: base, models: [m1, link] }] });
    await assert.rejects(compileRecipe(recipe, { outDir: dir.path, hashCache: null }), (e: unknown) => isCode("INVALID_ARGUMENT")(e) && /row 1 \(t\): model 2 \(.*m1-link.*\) is the same file as model 1/.test((e as Error).message));
  });
});

describe("recipes: base + models rows in the output's metadata", () => {
  const id = (c: string, name: string, metadata: Record<string, string> = {}) => ({ sha256: c.repeat(64), legacy: c.repeat(8), name, metadata, virtual: false });
  const step = {
    row: {
      name: "tied", method: "ties" as never, inputs: {}, multipliers: [1], params: { density: 0.2 }, dtype: "fp16" as const, format: "safetensors" as const, save: true,
      base: { kind: "model" as const, ref: "base.safetensors" },
      models: [{ input: { kind: "model" as const, ref: "m1.safetensors" }, weight: 1 }, { input: { kind: "model" as const, ref: "m2.safetensors" }, weight: 0.5, params: { density: 0.3 } }],
    },
    multiplier: 1, format: "safetensors" as const, inputs: {},
    base: id("b", "base.safetensors"),
    // m2 was itself merged by the classic tool: its own models are flattened in.
    models: [id("1", "m1.safetensors"), id("2", "m2.safetensors", { sd_merge_models: `{"${"9".repeat(64)}": {"name": "old.ckpt", "legacy_hash": "99999999", "sd_merge_recipe": null}}` })],
    isInpainting: false, isInstructPix2Pix: false,
  };

  it("writes sd_merge_recipe and sd_merge_models as Python's json.dumps would, the base as the primary model", () => {
    const meta = outputMetadata(step, { recipe: true });
    // Written out by hand, with Python's separators and float reprs.
    assert.equal(meta.sd_merge_recipe, `{"type": "tensormerge", "primary_model_hash": "${"b".repeat(64)}", "secondary_model_hash": null, "tertiary_model_hash": null, ` +
      `"interp_method": "TIES", "multiplier": 1.0, "model_hashes": ["${"1".repeat(64)}", "${"2".repeat(64)}"], "model_names": ["m1.safetensors", "m2.safetensors"], ` +
      `"model_weights": [1.0, 0.5], "save_as_half": true, "custom_name": "tied", "config_source": 0, "bake_in_vae": "None", ` +
      `"discard_weights": "", "is_inpainting": false, "is_instruct_pix2pix": false, "base_density": 0.2}`);
    assert.equal(meta.sd_merge_models, `{"${"b".repeat(64)}": {"name": "base.safetensors", "legacy_hash": "bbbbbbbb", "sd_merge_recipe": null}, ` +
      `"${"1".repeat(64)}": {"name": "m1.safetensors", "legacy_hash": "11111111", "sd_merge_recipe": null}, ` +
      `"${"2".repeat(64)}": {"name": "m2.safetensors", "legacy_hash": "22222222", "sd_merge_recipe": null}, ` +
      `"${"9".repeat(64)}": {"name": "old.ckpt", "legacy_hash": "99999999", "sd_merge_recipe": null}}`);
  });

  it("pins the base and every model by sha256 in tensormerge_recipe, with weights and parameters", () => {
    const recipe = JSON.parse(outputMetadata(step, { recipe: true }).tensormerge_recipe!) as { rows: Record<string, unknown>[] };
    assert.equal(recipe.rows.length, 1);
    assert.deepEqual(recipe.rows[0], {
      name: "tied", method: "ties",
      base: { model: "base.safetensors", sha256: "b".repeat(64), legacy: "bbbbbbbb" },
      models: [
        { model: "m1.safetensors", sha256: "1".repeat(64), legacy: "11111111", weight: 1 },
        { model: "m2.safetensors", sha256: "2".repeat(64), legacy: "22222222", weight: 0.5, params: { density: 0.3 } },
      ],
      multiplier: 1, params: { density: 0.2 }, dtype: "fp16", format: "safetensors",
    });
  });

  it("a model that carries its own recipe becomes an earlier row of the lineage", function () {
    if (!haveMany) this.skip(); // reading the inner recipe back validates it: needs ties
    const inner = outputMetadata(step, { recipe: true });
    const outer = { ...step, row: { ...step.row, name: "outer", base: { kind: "model" as const, ref: "base.safetensors" } }, models: [id("3", "m3.safetensors"), { ...id("4", "tied.safetensors"), metadata: inner }] };
    const recipe = JSON.parse(outputMetadata(outer, { recipe: true }).tensormerge_recipe!) as { rows: Record<string, unknown>[] };
    assert.deepEqual(recipe.rows.map((r) => r.name), ["tied", "outer"]);
    assert.deepEqual((recipe.rows[1]!.models as unknown[])[1], { input: "tied", weight: 0.5, params: { density: 0.3 } });
    assert.deepEqual(recipe.rows[0]!.produces, { sha256: "4".repeat(64), legacy: "44444444", name: "tied.safetensors" });
  });
});

describe("recipes: a base + models row run, chained and reproduced", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const KEY = "model.diffusion_model.out.weight";
  const lib = join(dir.path, "lib");
  const file = (name: string) => join(lib, `${name}.safetensors`);
  before(function () {
    if (!haveMany) this.skip();
    mkdirSync(lib);
    const values: Record<string, number[]> = {
      base: [0.5, -1, 2, 0.25, -0.75, 1.5],
      m1: [1.4, -1.1, 2.35, -0.37, -0.7, 1.94],
      m2: [-0.02, -0.67, 2.81, 0.37, -1.69, 1.43],
      x: [1, 1, 1, 1, 1, 1],
      y: [3, 3, 3, 3, 3, 3],
    };
    for (const [name, v] of Object.entries(values)) writeModel(file(name), { [KEY]: { dtype: "F32", shape: [2, 3], values: v } });
  });

  it("feeds an unsaved row into a ties row's models and a ties row into a weighted sum; the history and metadata name every model; reproduce rebuilds it", async () => {
    const out = join(dir.path, "out");
    mkdirSync(out);
    const recipe = parseJsonRecipe({
      rows: [
        { name: "xy", a: "x", b: "y", multiplier: 0.5, save: false },
        { name: "tied", method: "ties", base: "__BASE__", models: ["m1", { input: "xy", weight: 0.5 }, { model: "m2", params: { density: 0.5 } }], params: { density: 1 } },
        { name: "final", a: "tied", b: "x", multiplier: 0.25 },
      ],
    });
    const history = join(out, "history.jsonl");
    const report = await runRecipe(recipe, { bindings: { BASE: "base" }, modelDirs: [lib], outDir: out, hashCache: null, history });
    assert.deepEqual(report.outputs.map((o) => o.name), ["tied", "final"]);
    assert.equal(report.inputs.length, 5); // base, m1, m2, x, y: each opened once
    for (const i of report.inputs) assert.equal(i.opens, 1, i.path);
    const lines = parseHistory(readFileSync(history, "utf8"));
    const tied = lines.find((l) => l.name === "tied")!;
    assert.equal(tied.inputs.base!.name, "base.safetensors");
    assert.deepEqual(tied.models!.map((m) => [m.name, m.weight ?? null, m.row ?? null]), [["m1.safetensors", null, null], ["xy", 0.5, 1], ["m2.safetensors", null, null]]);
    const final = join(out, "final.safetensors");
    const embedded = embeddedRecipe(readModel(final).metadata)!;
    assert.deepEqual(embedded.rows.map((r) => r.name), ["xy", "tied", "final"]);
    assert.equal(embedded.rows[1]!.models!.length, 3);
    const rebuilt = await reproduce(final, { modelDirs: [lib], out: join(dir.path, "rebuilt.safetensors"), hashCache: null });
    assert.equal(rebuilt.identical, true);
  });

  it("warns about a model that lacks keys of the base (they keep the base's values)", async () => {
    const KEY2 = "model.diffusion_model.in.weight";
    writeModel(file("base2"), { [KEY]: { dtype: "F32", shape: [2, 3], values: [1, 2, 3, 4, 5, 6] }, [KEY2]: { dtype: "F32", shape: [2], values: [1, 2] } });
    writeModel(file("full"), { [KEY]: { dtype: "F32", shape: [2, 3], values: [2, 2, 2, 2, 2, 2] }, [KEY2]: { dtype: "F32", shape: [2], values: [3, 3] } });
    const out = join(dir.path, "partial");
    mkdirSync(out);
    const recipe = parseJsonRecipe({ rows: [{ name: "p", method: "ties", base: "base2", models: ["full", "m1"] }] });
    const report = await runRecipe(recipe, { modelDirs: [lib], outDir: out, hashCache: null, recipeMetadata: false });
    assert.deepEqual(report.warnings, ["row 1 (p): model 2 (m1.safetensors) lacks 1 float key of the base: those keep the base's values"]);
    assert.deepEqual(readModel(join(out, "p.safetensors")).tensors.get(KEY2)!.values, [1, 2]); // a key some model lacks stays the base's
  });

  it("refuses a model of another shape than the base before writing, naming the model", async () => {
    writeModel(file("wide"), { [KEY]: { dtype: "F32", shape: [3, 3], values: new Array(9).fill(0) } });
    const out = join(dir.path, "refused");
    mkdirSync(out);
    const recipe = parseJsonRecipe({ rows: [{ name: "t", method: "ties", base: "base", models: ["m1", "wide"] }] });
    await assert.rejects(runRecipe(recipe, { modelDirs: [lib], outDir: out, hashCache: null }), (e: unknown) => isCode("SHAPE_MISMATCH")(e) && /row 1 \(t\): model 2 \(wide\.safetensors\) does not fit base/.test((e as Error).message));
    assert.deepEqual(readdirSync(out), []);
  });
});

describe("recipes: the schema", () => {
  it("lists exactly the registry's methods, and describes base and models", () => {
    const schema = RECIPE_SCHEMA as { $defs: { row: { properties: { method: { enum: string[] } } & Record<string, unknown> }; model: unknown } };
    assert.deepEqual([...schema.$defs.row.properties.method.enum].sort(), METHODS.map((m) => m.name).sort());
    assert.ok("base" in schema.$defs.row.properties && "models" in schema.$defs.row.properties && schema.$defs.model);
  });
});
