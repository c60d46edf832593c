/**
 * An input is never a target, under any name: an output that reaches an input through a symlink,
 * a hard link or a symlinked folder is refused (INPUT_IS_TARGET) before anything is written, with
 * --overwrite too, for merge, a sweep, a recipe run and reproduce, and for the files written
 * beside the outputs (model config, history).
 */
import { strict as assert } from "node:assert";
import { createHash } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { reproduce } from "../../lib/recipes/reproduce";
import { runRecipe } from "../../lib/recipes/run";
import { randomValues, tempDir, writeModel } from "../helpers/models";

const digest = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
const isInputIsTarget = (e: unknown) => e instanceof MergeError && e.code === "INPUT_IS_TARGET";

/** Every file under a folder with its sha256 (symlinks by their target), to prove nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isSymbolicLink()) out[e.name] = "link";
    else if (e.isDirectory()) for (const [k, v] of Object.entries(snapshot(p))) out[`${e.name}/${k}`] = v;
    else out[e.name] = digest(p);
  }
  return out;
}

/**
 * The three ways a name reaches a file. Each returns the input path to give and the output path
 * that is that same file under another name; `name` is the output's file name.
 */
type Reach = (root: string, name: string) => { input: string; output: string };
const REACHES: Record<string, Reach> = {
  "a symlink to the output given as the input": (root, name) => {
    const real = join(root, name);
    writeModel(real, tensors(1));
    symlinkSync(name, join(root, "alias.safetensors"));
    return { input: join(root, "alias.safetensors"), output: real };
  },
  "an output that is a symlink to the input": (root, name) => {
    writeModel(join(root, "in.safetensors"), tensors(1));
    symlinkSync("in.safetensors", join(root, name));
    return { input: join(root, "in.safetensors"), output: join(root, name) };
  },
  "a hard link": (root, name) => {
    writeModel(join(root, "in.safetensors"), tensors(1));
    linkSync(join(root, "in.safetensors"), join(root, name));
    return { input: join(root, "in.safetensors"), output: join(root, name) };
  },
  "a symlinked folder": (root, name) => {
    mkdirSync(join(root, "real"));
    writeModel(join(root, "real", name), tensors(1));
    symlinkSync("real", join(root, "view"));
    return { input: join(root, "real", name), output: join(root, "view", name) };
  },
};

function tensors(seed: number) {
  return { "model.diffusion_model.out.weight": { dtype: "F32" as const, shape: [4, 4], values: randomValues(16, seed) } };
}

describe("an input is never a target, under any name", function () {
  this.timeout(60_000);
  const dir = tempDir("tm-identity-");
  after(() => dir.cleanup());
  let other: string;
  before(() => {
    other = join(dir.path, "other.safetensors");
    writeModel(other, tensors(2));
  });

  for (const [how, reach] of Object.entries(REACHES)) {
    it(`merge: refuses ${how}, with --overwrite, and changes nothing`, async () => {
      const root = dir.fresh("merge");
      const { input, output } = reach(root, "mix.safetensors");
      const before = snapshot(root);
      await assert.rejects(merge({ a: input, b: other, method: "weighted-sum", out: output, overwrite: true }), isInputIsTarget);
      assert.deepEqual(snapshot(root), before);
    });

    it(`a sweep: refuses one value's output reaching an input by ${how}`, async () => {
      const root = dir.fresh("sweep");
      const { input, output } = reach(root, "mix-0.2.safetensors");
      const before = snapshot(root);
      const template = output.replace("mix-0.2", "mix-<M>");
      await assert.rejects(merge({ a: other, b: input, method: "weighted-sum", multiplier: [0.1, 0.2, 0.3], out: template, overwrite: true }), isInputIsTarget);
      assert.deepEqual(snapshot(root), before, "no other value of the sweep was written either");
    });

    it(`runRecipe with outDir: refuses a row's output reaching an input by ${how}`, async () => {
      const root = dir.fresh("run");
      const { input, output } = reach(root, "mix.safetensors");
      const before = snapshot(root);
      const recipe = parseRecipe(JSON.stringify({ rows: [{ name: "mix", a: input, b: other, multiplier: 0.5 }] }));
      const outDir = join(output, "..");
      await assert.rejects(runRecipe(recipe, { outDir, overwrite: true, history: join(root, "history.jsonl") }), isInputIsTarget);
      assert.deepEqual(snapshot(root), before);
    });
  }

  it("refuses a model config written beside the output that would replace another input's config", async () => {
    const root = dir.fresh("config");
    const a = join(root, "a.safetensors"), b = join(root, "b.safetensors");
    writeModel(a, tensors(3));
    writeModel(b, tensors(4));
    writeFileSync(join(root, "a.yaml"), "a's config\n");
    writeFileSync(join(root, "b.yaml"), "b's config\n");
    const before = snapshot(root);
    // b.ckpt's config is b.yaml: copying A's config there would replace B's.
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: join(root, "b.ckpt") }), isInputIsTarget);
    assert.deepEqual(snapshot(root), before);
    // Through a symlinked folder too.
    symlinkSync(".", join(root, "here"));
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: join(root, "here", "b.ckpt") }), isInputIsTarget);
    // An output beside its own input in another format already has that config: nothing to copy.
    const report = await merge({ a, method: "no-interpolation", out: join(root, "a.ckpt") });
    assert.deepEqual(report.configs, []);
    assert.equal(readFileSync(join(root, "a.yaml"), "utf8"), "a's config\n");
  });

  it("leaves a file already under the config's name alone without overwrite (merge and runRecipe); replaces it with overwrite", async () => {
    const root = dir.fresh("config-exists");
    const a = join(root, "a.safetensors"), b = join(root, "b.safetensors");
    writeModel(a, tensors(6));
    writeModel(b, tensors(7));
    writeFileSync(join(root, "a.yaml"), "a's config\n");
    writeFileSync(join(root, "mix.yaml"), "the user's own notes\n");
    const before = snapshot(root);
    const exists = (e: unknown) => e instanceof MergeError && e.code === "OUTPUT_EXISTS" && e.path === join(root, "mix.yaml");
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: join(root, "mix.safetensors") }), exists);
    const recipe = parseRecipe(JSON.stringify({ rows: [{ name: "mix", a, b, multiplier: 0.5 }] }));
    await assert.rejects(runRecipe(recipe, { outDir: root }), exists);
    assert.deepEqual(snapshot(root), before);
    const report = await merge({ a, b, method: "weighted-sum", out: join(root, "mix.safetensors"), overwrite: true });
    assert.deepEqual(report.configs, [join(root, "mix.yaml")]);
    assert.equal(readFileSync(join(root, "mix.yaml"), "utf8"), "a's config\n");
  });

  it("refuses a history file that is an input under another name", async () => {
    const root = dir.fresh("history");
    const a = join(root, "a.safetensors");
    writeModel(a, tensors(5));
    symlinkSync("a.safetensors", join(root, "history.jsonl"));
    const before = snapshot(root);
    const recipe = parseRecipe(JSON.stringify({ rows: [{ name: "mix", a, b: other, multiplier: 0.5 }] }));
    await assert.rejects(runRecipe(recipe, { outDir: root, history: join(root, "history.jsonl") }), isInputIsTarget);
    assert.deepEqual(snapshot(root), before);
  });

  it("reproduce: refuses to rebuild over the original reached by a symlink", async () => {
    const root = dir.fresh("reproduce");
    const a = join(root, "a.safetensors"), b = join(root, "b.safetensors");
    writeModel(a, tensors(6));
    writeModel(b, tensors(7));
    const made = join(root, "mix.safetensors");
    await merge({ a, b, method: "weighted-sum", multiplier: 0.3, out: made });
    symlinkSync("mix.safetensors", join(root, "alias.safetensors"));
    const before = snapshot(root);
    await assert.rejects(reproduce(join(root, "alias.safetensors"), { modelDirs: [root], out: made, overwrite: true, hashCache: null }), isInputIsTarget);
    assert.deepEqual(snapshot(root), before);
  });
});
