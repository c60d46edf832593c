/**
 * Running recipes: the sample runs as is, a chained board in one pass equals its rows run one by
 * one, a sweep equals single merges, each input is opened and read once, and every mistake is
 * refused before anything is written.
 */
import { strict as assert } from "node:assert";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openModel } from "../../lib/formats";
import { merge } from "../../lib/merge";
import type { ModelFile } from "../../lib/model";
import { parseRecipe } from "../../lib/recipes";
import { parseHistory } from "../../lib/recipes/history";
import { inputReadReport } from "../../lib/recipes/reads";
import { runRecipe, type RunRecipeOptions } from "../../lib/recipes/run";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir } from "../helpers/models";
import { filesIn, isCode, SAMPLE, sameBytes, writeSampleModels, writeTinyModel } from "./helpers";

describe("recipes: running a board", function () {
  this.timeout(60_000);
  const dir = tempDir("tm-recipes-");
  after(() => dir.cleanup());
  let models: ReturnType<typeof writeSampleModels>;
  const fresh = dir.fresh;
  before(() => {
    models = writeSampleModels(dir.path);
  });

  for (const engine of ENGINES) {
    it(`runs the sample recipe as is, and equals the rows merged one by one (${engine})`, async () => {
      const out = fresh("sample");
      const report = await runRecipe(parseRecipe(SAMPLE), { bindings: models, outDir: out, engine, recipeMetadata: false });
      assert.deepEqual(filesIn(out), ["a14.ckpt", "a15.ckpt", "mix14.safetensors", "mix15.safetensors"]);
      assert.equal(report.passes, 1);
      assert.equal(report.outputs.length, 4);

      // Row by row with merge(), each row reading the file the previous one saved.
      const rbr = fresh("sample-rbr");
      const o = (f: string) => join(rbr, f);
      await merge({ recipeMetadata: false, a: models.SD14, b: models.F222, method: "weighted-sum", multiplier: 0.5, out: o("a14.ckpt"), engine });
      await merge({ recipeMetadata: false, a: models.SD15, b: models.F222, method: "weighted-sum", multiplier: 0.5, dtype: "fp16", out: o("a15.ckpt"), engine });
      await merge({ recipeMetadata: false, a: o("a14.ckpt"), b: models.WD13, c: models.SD14, method: "add-difference", multiplier: 1, out: o("mix14.safetensors"), engine });
      await merge({ recipeMetadata: false, a: o("a15.ckpt"), b: models.WD13, c: models.SD14, method: "add-difference", multiplier: 1, dtype: "fp16", out: o("mix15.safetensors"), engine });
      for (const f of filesIn(out)) assert.ok(sameBytes(join(out, f), o(f)), f);
      // And the values are what the formulas say (independent reader, one tensor checked by hand).
      const w = "model.diffusion_model.out.weight";
      const [sd14, f222, wd13] = [models.SD14, models.F222, models.WD13].map((p) => readModel(p).tensors.get(w)!.values);
      const mix14 = readModel(join(out, "mix14.safetensors")).tensors.get(w)!.values;
      mix14.forEach((v, i) => {
        const a14 = Math.fround(Math.fround(sd14![i]! * Math.fround(0.5)) + Math.fround(f222![i]! * Math.fround(0.5)));
        const expect = Math.fround(a14 + Math.fround(Math.fround(wd13![i]! - sd14![i]!) * 1));
        if (!(Number.isNaN(v) && Number.isNaN(expect))) assert.equal(v, expect, `element ${i}`);
      });
    });

    it(`a chained board with fp16, unsaved and bf16 rows equals row-by-row merges byte for byte (${engine})`, async () => {
      const text = JSON.stringify({
        rows: [
          { name: "r1", a: models.SD14, b: models.F222, multiplier: 0.3, dtype: "fp16" },
          { name: "r2", method: "add-difference", a: "r1", b: models.WD13, c: models.SD15, multiplier: 0.5, save: false },
          { name: "r3", method: "sigmoid", a: "r2", b: models.SD14, multiplier: 0.4, dtype: "bf16" },
          { name: "r4", method: "inverse-sigmoid", a: "r3", b: "r1", multiplier: 0.7, format: "ckpt" },
        ],
      });
      const out = fresh("chain");
      await runRecipe(parseRecipe(text), { outDir: out, engine, recipeMetadata: false });
      assert.deepEqual(filesIn(out), ["r1.safetensors", "r3.safetensors", "r4.ckpt"]);
      const rbr = fresh("chain-rbr");
      const o = (f: string) => join(rbr, f);
      await merge({ recipeMetadata: false, a: models.SD14, b: models.F222, method: "weighted-sum", multiplier: 0.3, dtype: "fp16", out: o("r1.safetensors"), engine });
      await merge({ recipeMetadata: false, a: o("r1.safetensors"), b: models.WD13, c: models.SD15, method: "add-difference", multiplier: 0.5, out: o("r2.safetensors"), engine });
      await merge({ recipeMetadata: false, a: o("r2.safetensors"), b: models.SD14, method: "sigmoid", multiplier: 0.4, dtype: "bf16", out: o("r3.safetensors"), engine });
      await merge({ recipeMetadata: false, a: o("r3.safetensors"), b: o("r1.safetensors"), method: "inverse-sigmoid", multiplier: 0.7, out: o("r4.ckpt"), engine });
      for (const f of filesIn(out)) assert.ok(sameBytes(join(out, f), o(f)), f);
    });

    it(`a sweep of N values equals N single merges (${engine})`, async () => {
      const out = fresh("sweep");
      const recipe = parseRecipe(`sw = ${models.SD15} + ${models.WD13} + ${models.SD14}, 0.1:0.3:0.1, bf16, safetensors\n`);
      const report = await runRecipe(recipe, { outDir: out, engine, recipeMetadata: false });
      assert.deepEqual(filesIn(out), ["sw-0.1.safetensors", "sw-0.2.safetensors", "sw-0.3.safetensors"]);
      assert.equal(report.passes, 1);
      for (const m of [0.1, 0.2, 0.3]) {
        const single = join(dir.path, `single-${engine}-${m}.safetensors`);
        await merge({ recipeMetadata: false, a: models.SD15, b: models.WD13, c: models.SD14, method: "add-difference", multiplier: m, dtype: "bf16", out: single, engine });
        assert.ok(sameBytes(single, join(out, `sw-${m}.safetensors`)), `M=${m}`);
      }
    });
  }

  it("opens and reads each input once, however many rows and slots use it", async () => {
    const opened = new Map<string, number>();
    const counting = async (path: string): Promise<ModelFile> => {
      opened.set(path, (opened.get(path) ?? 0) + 1);
      return openModel(path);
    };
    // SD14 is used by five slots in four rows, F222 by three, two rows sweep.
    const text = [
      "a = __SD14__ + __F222__, 0.5, nosave",
      "b = __O1__ + __SD14__ + __F222__, 0.2:0.4:0.1, safetensors",
      "c = __O1__ + __SD14__, 0.5, fp16, safetensors",
      "d = __O3__ + __F222__ + __SD14__, 0.1:0.2:0.1, safetensors",
    ].join("\n");
    const out = fresh("reads");
    const report = await runRecipe(parseRecipe(text), { bindings: { SD14: models.SD14, F222: models.F222 }, outDir: out, openModel: counting, recipeMetadata: false });
    assert.deepEqual([...opened.entries()].sort(), [[models.F222, 1], [models.SD14, 1]].sort());
    assert.deepEqual(report.inputs.map((i) => i.opens), [1, 1]);
    assert.equal(report.passes, 1);
    const reads = inputReadReport(report.plan!);
    assert.equal(reads.length, 2);
    for (const r of reads) {
      assert.equal(r.passes, 1, r.path);
      assert.equal(r.bytesReadTwice, 0, r.path);
      assert.ok(r.bytesRead > 0 && r.bytesRead <= r.size, r.path);
    }
    assert.equal(report.outputs.length, 6);
    assert.equal(filesIn(out).length, 6);
  });

  it("the read counter sees a range read twice (it can fail)", async () => {
    const report = await runRecipe(parseRecipe(`x = ${models.SD14} + ${models.F222}, 0.5, safetensors\n`), { outDir: fresh("reads2"), dryRun: true, recipeMetadata: false });
    const plan = report.plan!;
    const twice = { ...plan, passes: [...plan.passes, plan.passes[0]!] };
    assert.ok(inputReadReport(twice).every((r) => r.passes === 2 && r.bytesReadTwice > 0));
  });

  describe("mistakes are refused before anything is written", () => {
    const cases: [string, string, Partial<RunRecipeOptions>, string][] = [
      ["an unbound variable", "a = __SD14__ + __NOPE__, 0.5, safetensors", {}, "RECIPE_INVALID"],
      ["a --var for a variable the recipe lacks", "a = __SD14__ + __F222__, 0.5, safetensors", { bindings: { SD14: "x", F222: "y", SD41: "z" } }, "RECIPE_INVALID"],
      ["a reference to a later row", "a = __O2__ + __SD14__, 0.5, safetensors\nb = __SD14__ + __F222__, 0.5, safetensors", {}, "RECIPE_INVALID"],
      ["a cycle", "a = b + __SD14__, 0.5, safetensors\nb = a + __F222__, 0.5, safetensors", {}, "RECIPE_INVALID"],
      ["a missing C for add-difference", '{"rows": [{"name": "a", "method": "add-difference", "a": "__SD14__", "b": "__F222__", "multiplier": 1}]}', {}, "RECIPE_INVALID"],
      ["a model that does not exist", "a = __SD14__ + nowhere-model, 0.5, safetensors", { bindings: { SD14: "sd14" } }, "MODEL_NOT_FOUND"],
    ];
    for (const [what, text, extra, code] of cases) {
      it(what, async () => {
        const out = fresh("refuse");
        await assert.rejects(async () => runRecipe(parseRecipe(text), { bindings: { SD14: models.SD14, F222: models.F222 }, outDir: out, modelDirs: [dir.path], ...extra }), isCode(code));
        assert.deepEqual(filesIn(out), []);
      });
    }

    it("models of different structures (a later row fails, the first wrote nothing)", async () => {
      const odd = join(dir.path, "odd.safetensors");
      writeFileSync(odd, readFileSync(models.SD14)); // same file, then break one shape
      const { writeModel } = await import("../helpers/models");
      writeModel(odd, { "model.diffusion_model.out.weight": { dtype: "F32", shape: [7, 5] }, "model.diffusion_model.input_blocks.0.0.weight": { dtype: "F32", shape: [3, 4, 1, 1] } });
      const out = fresh("refuse-shape");
      await assert.rejects(runRecipe(parseRecipe(`a = ${models.SD14} + ${models.F222}, 0.5, safetensors\nb = __O1__ + ${odd}, 0.5, safetensors`), { outDir: out }), isCode("SHAPE_MISMATCH"));
      assert.deepEqual(filesIn(out), []);
    });

    it("an output that exists (without --overwrite or --skip-existing)", async () => {
      const out = fresh("exists");
      writeFileSync(join(out, "b.safetensors"), "keep me");
      await assert.rejects(runRecipe(parseRecipe(`a = ${models.SD14} + ${models.F222}, 0.5, safetensors\nb = __O1__ + ${models.WD13}, 0.5, safetensors`), { outDir: out }), isCode("OUTPUT_EXISTS"));
      assert.deepEqual(filesIn(out), ["b.safetensors"]);
      assert.equal(readFileSync(join(out, "b.safetensors"), "utf8"), "keep me");
    });
  });

  it("skips existing outputs and reads them for later rows (--skip-existing); dry run writes nothing", async () => {
    const out = fresh("skip");
    const recipe = parseRecipe(SAMPLE);
    await runRecipe(recipe, { bindings: models, outDir: out, recipeMetadata: false });
    const before = new Map(filesIn(out).map((f) => [f, readFileSync(join(out, f))]));
    rmSync(join(out, "mix14.safetensors"));
    const dry = await runRecipe(recipe, { bindings: models, outDir: out, skipExisting: true, dryRun: true });
    assert.deepEqual(dry.outputs.map((o) => [o.name, o.state]), [["mix14", "planned"], ["a14", "skipped"], ["a15", "skipped"], ["mix15", "skipped"]]);
    assert.ok(dry.bytesWritten > 0 && dry.bytesRead > 0);
    assert.equal(existsSync(join(out, "mix14.safetensors")), false);
    const opened: string[] = [];
    const report = await runRecipe(recipe, { bindings: models, outDir: out, skipExisting: true, recipeMetadata: false, openModel: async (p) => { opened.push(p); return openModel(p); } });
    assert.deepEqual(report.outputs.filter((o) => o.state === "written").map((o) => o.name), ["mix14"]);
    assert.ok(opened.includes(join(out, "a14.ckpt")), "row 3 reads the existing a14.ckpt");
    assert.ok(!opened.includes(models.SD15), "a15 is not recomputed, so SD15 is not even opened");
    for (const [f, bytes] of before) assert.ok(readFileSync(join(out, f)).equals(bytes), f);
  });

  it("appends one history line per output with input and output hashes", async () => {
    const out = fresh("history");
    const history = join(out, "history.jsonl");
    await runRecipe(parseRecipe(SAMPLE), { bindings: models, outDir: out, history, recipeSource: "sample.txt" });
    await runRecipe(parseRecipe(SAMPLE), { bindings: models, outDir: out, history, skipExisting: true });
    const lines = parseHistory(readFileSync(history, "utf8"));
    assert.equal(lines.length, 8);
    const mix15 = lines[3]!;
    assert.equal(mix15.recipe, "sample.txt");
    assert.equal(mix15.row, 4);
    assert.equal(mix15.state, "written");
    const { sha256Of } = await import("./helpers");
    assert.equal(mix15.output.sha256, sha256Of(join(out, "mix15.safetensors")));
    assert.equal(mix15.inputs.a!.row, 2);
    assert.equal(mix15.inputs.a!.sha256, sha256Of(join(out, "a15.ckpt")));
    assert.equal(mix15.inputs.b!.sha256, sha256Of(models.WD13));
    assert.equal(mix15.inputs.c!.sha256, sha256Of(models.SD14));
    assert.ok(!Number.isNaN(Date.parse(mix15.time)));
    assert.deepEqual(lines.slice(4).map((l) => l.state), ["skipped", "skipped", "skipped", "skipped"]);
  });

  it("copies the model config of the first input that has one beside each output, as the classic tool does", async () => {
    const cfgDir = fresh("cfg-models");
    const [a, b] = [join(cfgDir, "v2base.safetensors"), join(cfgDir, "other.safetensors")];
    writeTinyModel(a, 21);
    writeTinyModel(b, 22);
    writeFileSync(join(cfgDir, "other.yaml"), "model: {params: {parameterization: v}}\n");
    const out = fresh("cfg-out");
    await runRecipe(parseRecipe(`x = ${a} + ${b}, 0.5, safetensors\ny = __O1__ + ${a}, 0.5\n`), { outDir: out });
    assert.equal(readFileSync(join(out, "x.yaml"), "utf8"), "model: {params: {parameterization: v}}\n");
    assert.equal(readFileSync(join(out, "y.yaml"), "utf8"), "model: {params: {parameterization: v}}\n", "through the earlier row to the file that has one");
    // A row's own source: only A (which has none), only B, or none; A1111's config_source index.
    const out2 = fresh("cfg-out2");
    const rows = [
      { name: "only-a", a: a, b: b, multiplier: 0.5, config: "a" },
      { name: "only-b", a: a, b: b, multiplier: 0.5, config: "b" },
      { name: "nothing", a: b, b: a, multiplier: 0.5, config: "none" },
    ];
    await runRecipe(parseRecipe(JSON.stringify({ rows })), { outDir: out2 });
    assert.deepEqual(filesIn(out2).filter((f) => f.endsWith(".yaml")), ["only-b.yaml"]);
    const source = (name: string) => (JSON.parse(readModel(join(out2, `${name}.safetensors`)).metadata.sd_merge_recipe!) as { config_source: number }).config_source;
    assert.deepEqual(["only-a", "only-b", "nothing"].map(source), [0, 1, 3]);
  });

  it("keeps an inpainting A's extra channels and says so in the metadata", async () => {
    const inpaint = join(dir.path, "inpaint.safetensors");
    writeTinyModel(inpaint, 9, { inpaint: true });
    const out = fresh("inpaint");
    await runRecipe(parseRecipe(`ip = ${inpaint} + ${models.WD13} + ${models.SD14}, 1, safetensors\n`), { outDir: out });
    const recipe = JSON.parse(readModel(join(out, "ip.safetensors")).metadata.sd_merge_recipe!) as Record<string, unknown>;
    assert.equal(recipe.is_inpainting, true);
  });
});
