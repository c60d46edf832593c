/**
 * Per-key parameters: for each tensor, the first matching --weight pattern sets α (over the
 * multiplier), --beta-weight sets β; a sweep varies the multiplier while overrides stay; the
 * block hook sits between them. Then the recipe side: JSON round trip, the metadata recipe and
 * `reproduce` rebuilding a per-key merge bit for bit, and classic text refusing what it cannot say.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { resolveMethod } from "../../lib/methods/registry";
import { paramResolver } from "../../lib/methods/params";
import { formatJsonRecipe, parseJsonRecipe } from "../../lib/recipes/json";
import { formatClassicRecipe } from "../../lib/recipes/classic";
import { reproduce } from "../../lib/recipes/reproduce";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir, writeModel } from "../helpers/models";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../../lib/synthetic";
import { getFloat16, setFloat16 } from "@petamoriken/float16";

const f = Math.fround;
const KEYS = ["first_stage_model.decoder.w", "cond_stage_model.transformer.w", "model.diffusion_model.input_blocks.0.w", "model.diffusion_model.out.w"];
const A = [1, 2, 3, 4], B = [5, 7, 11, 13], C = [0.5, 0.25, 2, 1];
const CLI = join(__dirname, "../../lib/cli/main.js");
const runCli = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, stderr: r.stderr };
};
/** A value as an fp16 file holds it (round to nearest even), read back. */
const readBackF16 = (x: number) => {
  const v = new DataView(new ArrayBuffer(2));
  setFloat16(v, 0, x);
  return getFloat16(v, 0);
};
const ws = (a: number, b: number, m: number) => f(f(a * f(1 - m)) + f(b * f(m)));

describe("per-key parameters", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const ing = join(dir.path, "models");
  const a = join(ing, "a.safetensors"), b = join(ing, "b.safetensors"), c = join(ing, "c.safetensors");
  before(() => {
    const model = (values: number[]) => Object.fromEntries(KEYS.map((k, i) => [k, { dtype: "F32" as const, shape: [2], values: [values[i]!, -values[i]!] }]));
    mkdirSync(ing);
    writeModel(a, model(A));
    writeModel(b, model(B));
    writeModel(c, model(C));
  });
  const values = (path: string) => KEYS.map((k) => readModel(path).tensors.get(k)!.values[0]!);

  for (const engine of ENGINES) {
    it(`the first matching pattern wins; unmatched keys take the multiplier (${engine})`, async () => {
      const out = join(dir.path, `w-${engine}.safetensors`);
      await merge({
        a, b, method: "weighted-sum", multiplier: 0.5, out, engine,
        // "first_stage" matches key 0 before the broader "_model\." does; key 1 matches only "_model\."
        weights: [{ pattern: "^first_stage", value: 0 }, { pattern: "_stage_model\\.", value: 0.25 }, { pattern: "input_blocks\\.0\\.", value: 1 }],
      });
      assert.deepEqual(values(out), [A[0], ws(A[1]!, B[1]!, 0.25), B[2], ws(A[3]!, B[3]!, 0.5)]);
    });

    it(`a sweep varies the multiplier; per-key values stay in every output (${engine})`, async () => {
      const out = join(dir.path, `sweep-${engine}-<M>.safetensors`);
      const report = await merge({ a, b, method: "weighted-sum", multiplier: [0.2, 0.8], out, engine, weights: [{ pattern: "cond_stage_model", value: 0.6 }] });
      assert.equal(report.outputs.length, 2);
      for (const m of [0.2, 0.8]) {
        const got = values(out.replace("<M>", String(m)));
        assert.deepEqual(got, [ws(A[0]!, B[0]!, m), ws(A[1]!, B[1]!, 0.6), ws(A[2]!, B[2]!, m), ws(A[3]!, B[3]!, m)]);
      }
    });

    it(`--beta-weight sets β per key (${engine})`, async () => {
      const out = join(dir.path, `beta-${engine}.safetensors`);
      await merge({ a, b, c, method: "triple-sum", alpha: 0.25, beta: 0.5, betaWeights: [{ pattern: "diffusion_model", value: 0 }], out, engine });
      const ts = (x: number, y: number, z: number, al: number, be: number) => f(f(f(x * f(1 - al - be)) + f(y * f(al))) + f(z * f(be)));
      assert.deepEqual(values(out), KEYS.map((k, i) => ts(A[i]!, B[i]!, C[i]!, 0.25, k.includes("diffusion_model") ? 0 : 0.5)));
    });
  }

  it("the block hook sits between key patterns and the row value; a key in no block stays A", () => {
    const resolve = paramResolver(resolveMethod("triple-sum"), {
      values: { beta: 0.1 },
      weights: { alpha: [{ pattern: "^x", value: 0.9 }], beta: [{ pattern: "^y", value: 0.2 }] },
      blockValue: { alpha: (k) => (k.includes("blk") ? 0.4 : null), beta: (k) => (k.startsWith("x") ? 0.3 : undefined) },
    });
    assert.deepEqual(resolve("x.blk", 0.5), [0.9, 0.3]); // pattern over block
    assert.deepEqual(resolve("y.blk", 0.5), [0.4, 0.2]);
    assert.equal(resolve("z.blk", 0.5), null); // in no β block, no β pattern: not merged
    assert.equal(resolve("y", 0.5), null); // in no α block
    assert.deepEqual(paramResolver(resolveMethod("triple-sum"), { values: { beta: 0.1 } })("y", 0.5), [0.5, 0.1]); // no blocks: multiplier and row β
    assert.throws(() => paramResolver(resolveMethod("multiply-difference"), { blockValue: { alpha: () => 3 } })("k", 0.5), /k: .*block value of alpha = 3 is outside/);
  });

  it("refuses unknown parameters, values out of range and bad patterns, naming them", async () => {
    const out = join(dir.path, "bad.safetensors");
    const rejects = (opts: object, re: RegExp) => assert.rejects(merge({ a, b, c, out, ...opts } as never), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && re.test(e.message));
    await rejects({ method: "weighted-sum", beta: 0.3 }, /weighted-sum has no parameter "beta"/);
    await rejects({ method: "multiply-difference", beta: 1.5 }, /beta = 1.5 is outside multiply-difference's range/);
    await rejects({ method: "weighted-sum", weights: [{ pattern: "(", value: 0.5 }] }, /"\(" is not a valid regular expression/);
    await rejects({ method: "weighted-sum", weights: [{ pattern: "x", value: 9 }] }, /per-key alpha\[0\] \(x\) = 9 is outside/);
    await rejects({ method: "weighted-sum", alpha: 0.5, multiplier: 0.5 }, /alpha and multiplier/);
  });

  it("the CLI takes --alpha, --beta, --weight REGEX=VALUE (split at the last =) and --beta-weight", async () => {
    const out = join(dir.path, "cli.safetensors");
    const r = runCli(["merge", "--a", a, "--b", b, "--c", c, "--method", "sum-twice", "--alpha", "0.5", "--beta", "0.25", "--weight", "(?=first)first_stage=0", "--beta-weight", "out\\.w=1", "--out", out, "-q"]);
    assert.equal(r.code, 0, r.stderr);
    const st = (x: number, y: number, z: number, al: number, be: number) => f(f(f(f(x * f(1 - al)) + f(y * f(al))) * f(1 - be)) + f(z * f(be)));
    assert.deepEqual(values(out), [st(A[0]!, B[0]!, C[0]!, 0, 0.25), st(A[1]!, B[1]!, C[1]!, 0.5, 0.25), st(A[2]!, B[2]!, C[2]!, 0.5, 0.25), st(A[3]!, B[3]!, C[3]!, 0.5, 1)]);
    const bad = runCli(["merge", "--a", a, "--b", b, "--weight", "novalue", "--out", join(dir.path, "x.safetensors")]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--weight "novalue": expected REGEX=VALUE/);
  });

  it("JSON recipes carry params, per-key weights and clamp; classic text refuses them", () => {
    const text = JSON.stringify({
      format: "tensormerge-recipe", version: 1,
      rows: [{ name: "r", a: "__A__", b: "__B__", c: "__C__", method: "triple-sum", multiplier: 0.3, params: { beta: 0.2 }, weights: { alpha: [{ pattern: "^cond", value: 0 }], beta: [{ pattern: "out", value: 0.5 }] }, clamp: true }],
    });
    const recipe = parseJsonRecipe(text);
    assert.deepEqual(recipe.rows[0]!.params, { beta: 0.2 });
    assert.deepEqual(recipe.rows[0]!.weights, { alpha: [{ pattern: "^cond", value: 0 }], beta: [{ pattern: "out", value: 0.5 }] });
    assert.equal(recipe.rows[0]!.clamp, true);
    assert.deepEqual(parseJsonRecipe(formatJsonRecipe(recipe)), recipe);
    assert.throws(() => formatClassicRecipe(recipe), /per-key weights|parameters|clamp/);
  });

  for (const engine of ENGINES) {
    it(`reproduce rebuilds a per-key merge bit for bit from its recorded recipe (${engine})`, async () => {
      const out = join(dir.path, `repro-${engine}.safetensors`);
      await merge({ a, b, c, method: "similarity-add-difference", multiplier: 0.8, beta: 0.3, weights: [{ pattern: "first_stage", value: 0.1 }], betaWeights: [{ pattern: "out", value: 0.9 }], clamp: true, out, engine });
      const recorded = JSON.parse(readModel(out).metadata.tensormerge_recipe!);
      assert.deepEqual(recorded.rows.at(-1).params, { beta: 0.3 });
      assert.deepEqual(recorded.rows.at(-1).weights, { alpha: [{ pattern: "first_stage", value: 0.1 }], beta: [{ pattern: "out", value: 0.9 }] });
      assert.equal(recorded.rows.at(-1).clamp, true);
      const rebuilt = join(dir.path, `rebuilt-${engine}.safetensors`);
      const r = await reproduce(out, { modelDirs: [ing], out: rebuilt, engine });
      assert.equal(r.identical, true);
      assert.ok(readFileSync(out).equals(readFileSync(rebuilt)));
      // And the per-key values did change the result (the test would pass vacuously otherwise).
      const plain = join(dir.path, `plain-${engine}.safetensors`);
      await merge({ a, b, c, method: "similarity-add-difference", multiplier: 0.8, beta: 0.3, clamp: true, out: plain, engine, recipeMetadata: false });
      assert.notDeepEqual(values(plain), values(out));
    });
  }
});

describe("--blocks: α per block of A's architecture (lib/blocks)", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  const layout = shrinkLayout(loadBuiltinLayout("sd15"), 64);
  before(async () => {
    await writeSyntheticModel(a, layout, { seed: 1 });
    await writeSyntheticModel(b, layout, { seed: 2 });
  });
  // SuperMerger's 26 values: BASE, IN00…IN11, M00, OUT00…OUT11. IN04 = 0.25, OUT11 = 1, M00 = 0.75, BASE 0.5, rest 0.4.
  const list = Array.from({ length: 26 }, (_, i) => (i === 5 ? 0.25 : i === 25 ? 1 : i === 13 ? 0.75 : i === 0 ? 0.5 : 0.4));
  const expectedAlpha = (key: string): number | undefined => {
    // The SD 1.x rules, written out for the keys checked below (README "Block weights").
    if (key.startsWith("model.diffusion_model.input_blocks.4.")) return 0.25;
    if (key.startsWith("model.diffusion_model.middle_block.")) return 0.75;
    if (key.startsWith("model.diffusion_model.output_blocks.11.")) return 1;
    if (key.startsWith("model.diffusion_model.output_blocks.3.")) return 0.4;
    if (key.startsWith("first_stage_model.")) return 0.5; // the VAE is in BASE on SD, as SuperMerger has it
    return NaN; // not checked
  };
  for (const engine of ENGINES) {
    it(`each key takes its block's α; --weight wins; reproduce rebuilds it (${engine})`, async () => {
      const out = join(dir.path, `blocks-${engine}.safetensors`);
      await merge({ a, b, method: "weighted-sum", blocks: list.join(","), weights: [{ pattern: "output_blocks\\.3\\.", value: 0 }], out, engine, modelDirs: [dir.path] });
      const A = readModel(a).tensors, B = readModel(b).tensors, O = readModel(out).tensors;
      let checked = 0;
      for (const [key, t] of O) {
        if (t.dtype !== "F32" && t.dtype !== "F16") continue;
        const want = key.startsWith("model.diffusion_model.output_blocks.3.") ? 0 : expectedAlpha(key);
        if (want !== undefined && Number.isNaN(want)) continue;
        const va = A.get(key)!.values, vb = B.get(key)!.values;
        const rt = t.dtype === "F16" ? (x: number) => readBackF16(x) : f;
        const exp = want === undefined ? va : va.map((x, i) => rt(ws(x, vb[i]!, want)));
        assert.deepEqual(t.values, exp, key);
        checked++;
      }
      assert.ok(checked > 10, `${checked} keys checked`);
      const recorded = JSON.parse(readModel(out).metadata.tensormerge_recipe!);
      assert.deepEqual(recorded.rows.at(-1).blocks, { alpha: list.join(",") });
      const rebuilt = join(dir.path, `blocks-rebuilt-${engine}.safetensors`);
      const r = await reproduce(out, { modelDirs: [dir.path], out: rebuilt, engine });
      assert.equal(r.identical, true);
    });
  }
  it("refuses a multiplier sweep with α blocks (every output would be the same)", async () => {
    await assert.rejects(merge({ a, b, method: "weighted-sum", blocks: "GRAD_V", multiplier: [0.2, 0.4], out: join(dir.path, "x-<M>.safetensors") }), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /sweep/.test(e.message));
  });
  it("is refused, naming the option, for a list of the wrong length", async () => {
    await assert.rejects(merge({ a, b, method: "weighted-sum", blocks: "0.5,1", out: join(dir.path, "x.safetensors") }), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /--blocks/.test(e.message));
  });
});
