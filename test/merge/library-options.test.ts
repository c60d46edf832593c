/** merge() with the model library: compatibility refused before any file, references, VAE bake, prune, config copy. */
import { strict as assert } from "node:assert";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { reproduce } from "../../lib/recipes/reproduce";
import { runRecipe, type RecipeProgress } from "../../lib/recipes/run";
import { loadLayout, writeShrunkModel, writeSparseModel, standaloneVaeLayout } from "../library/fixtures";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel } from "../helpers/models";

describe("merge with the model library", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());

  it("refuses SD 1.x + SDXL before any file is created", async () => {
    const sd1 = join(dir.path, "sd1.safetensors"), sdxl = join(dir.path, "sdxl.safetensors");
    writeSparseModel(sd1, loadLayout("sd15"));
    writeSparseModel(sdxl, loadLayout("sdxl"));
    const before = readdirSync(dir.path).sort();
    const out = join(dir.path, "never.safetensors");
    await assert.rejects(merge({ a: sd1, b: sdxl, method: "weighted-sum", out }), (e: unknown) => {
      assert.ok(e instanceof MergeError);
      assert.equal(e.code, "ARCHITECTURE_MISMATCH");
      assert.match(e.message, /SD 1.*SDXL/);
      return true;
    });
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(dir.path).sort(), before);
  });

  it("finds models by name, bakes a VAE, prunes, and copies A's config", async () => {
    const models = join(dir.path, "models");
    (await import("node:fs")).mkdirSync(models);
    const layout = loadLayout("sd15_full_ema");
    await writeShrunkModel(join(models, "base.safetensors"), layout, 64, 1);
    await writeShrunkModel(join(models, "style.safetensors"), layout, 64, 2);
    writeFileSync(join(models, "base.yaml"), "model: {target: ldm}\n");
    const vaeLayout = standaloneVaeLayout();
    const vae = join(dir.path, "vae.safetensors");
    await writeShrunkModel(vae, vaeLayout, 64, 3);
    const out = join(dir.path, "mix.safetensors");
    const report = await merge({ a: "base", b: "style", modelDirs: [models], method: "weighted-sum", multiplier: 0.5, vae, prune: true, out });
    const got = readModel(out);
    assert.equal([...got.tensors.keys()].some((k) => k.startsWith("model_ema.")), false, "pruned");
    const vaeFile = readModel(vae);
    const [vaeKey, vaeTensor] = [...vaeFile.tensors.entries()].find(([k]) => k.startsWith("decoder."))!;
    assert.deepEqual(got.tensors.get(`first_stage_model.${vaeKey}`)!.bytes, vaeTensor.bytes, "VAE tensor copied as is");
    assert.ok(report.vae && report.vae.replaced > 0);
    assert.deepEqual(report.configs, [join(dir.path, "mix.yaml")]);
    assert.equal(readFileSync(join(dir.path, "mix.yaml"), "utf8"), "model: {target: ldm}\n");
  });
});

describe("merge(): a library caller's mistakes", function () {
  this.timeout(120_000);
  const dir = tempDir("tm-caller-");
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  const bigA = join(dir.path, "bigA.safetensors"), bigB = join(dir.path, "bigB.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [64], values: randomValues(64, 1) } });
    writeModel(b, { w: { dtype: "F32", shape: [64], values: randomValues(64, 2) } });
    // Big enough for the TS engine to run past the first progress tick (every 200 ms).
    const n = 24_000_000; // ~96 MB per model
    const big = (seed: number) => ({ "x.weight": { dtype: "F32" as const, shape: [n], raw: new Uint8Array(new Float32Array(n).fill(seed / 10).buffer) } });
    writeModel(bigA, big(3));
    writeModel(bigB, big(4));
  });
  /** Files in the folder that a merge could have written: outputs and temporary files. */
  const written = () => readdirSync(dir.path, { withFileTypes: true }).filter((e) => !e.isDirectory()).map((e) => e.name)
    .filter((n) => !["a.safetensors", "b.safetensors", "bigA.safetensors", "bigB.safetensors"].includes(n));
  const invalidNaming = (option: string) => (e: unknown) => {
    assert.ok(e instanceof MergeError, `not a MergeError: ${String(e)}`);
    assert.equal(e.code, "INVALID_ARGUMENT");
    assert.ok(e.message.includes(option), `the message names ${option}: ${e.message}`);
    return true;
  };

  for (const engine of ENGINES) {
    for (const when of ["at its first event", "at the last event"] as const) {
      it(`an onProgress that throws ${when} rejects merge() with that error, leaving no output and no temp file (${engine})`, async () => {
        const out = join(dir.path, `throwing-${engine}.safetensors`);
        const mine = new Error("a bug in the caller's progress handler");
        let calls = 0;
        const onProgress = (p: { fraction: number }) => {
          calls++;
          if (when === "at its first event" || p.fraction === 1) throw mine;
        };
        const [x, y] = when === "at its first event" ? [bigA, bigB] : [a, b];
        await assert.rejects(merge({ a: x, b: y, method: "weighted-sum", out, engine, onProgress }), (e: unknown) => e === mine);
        assert.ok(calls >= 1);
        assert.deepEqual(written(), []);
        // The process is fine and merges again.
        await merge({ a, b, method: "weighted-sum", out, engine });
        assert.deepEqual(written(), [`throwing-${engine}.safetensors`]);
        rmSync(out);
      });
    }
  }

  it("a recipe run's onProgress that throws, in any phase, rejects with that error before any output is committed", async () => {
    const recipe = parseRecipe(JSON.stringify({ rows: [{ name: "r1", a, b, multiplier: 0.5 }, { name: "r2", a: "r1", b, multiplier: 0.5 }] }));
    for (const phase of ["merge", "output"] as const) {
      const out = dir.fresh(`run-${phase}`);
      const mine = new Error(`thrown in the ${phase} phase`);
      let seen = 0;
      const onProgress = (e: RecipeProgress) => {
        // The last event of its phase: for "output", the "done" of the last output.
        if (e.phase === "merge" && phase === "merge" && e.progress.fraction === 1) throw mine;
        if (e.phase === "output" && phase === "output" && e.state === "done" && ++seen === 2) throw mine;
      };
      await assert.rejects(runRecipe(recipe, { outDir: out, onProgress, history: join(out, "h.jsonl") }), (e: unknown) => e === mine);
      assert.deepEqual(readdirSync(out), [], `${phase}: nothing written`);
    }
  });

  it("refuses each wrong-typed option up front with INVALID_ARGUMENT naming it, before any file is written", async () => {
    const out = join(dir.path, "never.safetensors");
    const base = { a, b, method: "weighted-sum" as const, out };
    const bad: [string, Record<string, unknown>][] = [
      ["metadata", { metadata: { steps: 20 } }],
      ["metadata", { metadata: { nested: { x: "1" } } }],
      ["metadata", { metadata: "title=x" }],
      ["signal", { signal: { aborted: false } }],
      ["signal", { signal: "stop" }],
      ["onProgress", { onProgress: "log" }],
      ["onProgress", { onProgress: {} }],
      ["overwrite", { overwrite: "yes" }],
      ["recipeMetadata", { recipeMetadata: 0 }],
      ["prune", { prune: "true" }],
      ["modelDirs", { modelDirs: dir.path }],
      ["modelDirs[0]", { modelDirs: [5] }],
      ["discard", { discard: /ema/ }],
      ["vae", { vae: 5 }],
      ["dryRun", { dryRun: 1 }],
    ];
    for (const [option, extra] of bad) {
      await assert.rejects(merge({ ...base, ...extra } as never), invalidNaming(option), `${option}: ${JSON.stringify(extra)}`);
    }
    assert.deepEqual(written(), []);
  });

  it("says which option is missing, by the name the caller used", async () => {
    await assert.rejects(merge({ b, method: "weighted-sum", out: join(dir.path, "x.safetensors") } as never), (e: unknown) => e instanceof MergeError && e.code === "INVALID_ARGUMENT" && /^a is required/.test(e.message));
    await assert.rejects(merge({ a, method: "weighted-sum", out: join(dir.path, "x.safetensors") }), (e: unknown) => e instanceof MergeError && /^b is required/.test(e.message));
    await assert.rejects(merge({ a, b, method: "weighted-sum" } as never), (e: unknown) => e instanceof MergeError && /^out is required/.test(e.message));
  });

  it("refuses an out that is a folder before merging (INVALID_ARGUMENT naming it), the folder untouched", async () => {
    const out = join(dir.path, "a-folder.safetensors");
    mkdirSync(out);
    writeFileSync(join(out, "keep"), "x");
    let events = 0;
    await assert.rejects(merge({ a: bigA, b: bigB, method: "weighted-sum", out, overwrite: true, engine: "js", onProgress: () => { events++; } }), (e: unknown) => {
      assert.ok(e instanceof MergeError);
      assert.equal(e.code, "INVALID_ARGUMENT");
      assert.equal(e.path, out);
      return true;
    });
    assert.equal(events, 0, "the merge ran before the refusal");
    assert.deepEqual(readdirSync(out), ["keep"]);
    rmSync(out, { recursive: true });
    assert.deepEqual(written(), []);
  });

  it("runRecipe() and reproduce() refuse wrong-typed options up front, naming them", async () => {
    const recipe = parseRecipe(JSON.stringify({ rows: [{ name: "r", a, b, multiplier: 0.5 }] }));
    const out = dir.fresh("run-bad");
    const bad: [string, Record<string, unknown>][] = [
      ["onProgress", { onProgress: 1 }],
      ["signal", { signal: {} }],
      ["overwrite", { overwrite: "no" }],
      ["history", { history: 7 }],
      ["threads", { threads: "4" }],
      ["bindings", { bindings: { SD: 1 } }],
      ["outDir", { outDir: ["x"] }],
      ["options.ovewrite", { ovewrite: true }],
    ];
    for (const [option, extra] of bad) {
      await assert.rejects(runRecipe(recipe, { outDir: out, ...extra } as never), invalidNaming(option), option);
    }
    const handMade = parseRecipe(JSON.stringify({ rows: [{ name: "r", a, b, multiplier: 0.5 }] }));
    (handMade.rows[0] as { metadata?: unknown }).metadata = { steps: 20 };
    await assert.rejects(runRecipe(handMade, { outDir: out }), invalidNaming("rows[0].metadata"));
    assert.deepEqual(readdirSync(out), []);
    const made = join(out, "..", "made.safetensors");
    await merge({ a, b, method: "weighted-sum", out: made });
    for (const [option, extra] of [["onProgress", { onProgress: 1 }], ["signal", { signal: {} }], ["out", { out: 5 }], ["dryRun", { dryRun: "yes" }]] as const) {
      await assert.rejects(reproduce(made, { modelDirs: [dir.path], hashCache: null, ...extra } as never), invalidNaming(option), option);
    }
  });
});
