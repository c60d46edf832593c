/**
 * `reproduce` of Hugging Face folder outputs: rebuilt from the recipe in their shards (the
 * mergekit YAML, or merge()'s options), the input folders found by path or by name in the model
 * folders; the rebuilt files compared here byte for byte with the test's own reads.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { cpSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runMergekit } from "../../lib/hf/mergekit";
import { merge } from "../../lib/merge";
import { reproduceModel } from "../../lib/recipes/reproduce";
import { tempDir } from "../helpers/models";
import { writeLlmFolder } from "./fixtures";

const CLI = join(__dirname, "../../lib/cli/main.js");

/** Every file but README.md, as bytes, by name. */
function filesOf(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).filter((n) => n !== "README.md").sort().map((n) => [n, readFileSync(join(dir, n))]));
}

function assertSameFiles(a: string, b: string): void {
  const [fa, fb] = [filesOf(a), filesOf(b)];
  assert.deepEqual([...fb.keys()], [...fa.keys()]);
  for (const [n, bytes] of fa) assert.ok(bytes.equals(fb.get(n)!), `${n} differs`);
}

describe("hf: reproduce folder outputs", () => {
  const tmp = tempDir("tm-hf-repro-");
  after(() => tmp.cleanup());
  let A = "", B = "", C = "";
  before(() => {
    A = join(tmp.path, "base"); B = join(tmp.path, "tuned1"); C = join(tmp.path, "tuned2");
    writeLlmFolder(A, { family: "mistral", layers: 3, seed: 1, shards: 2 });
    writeLlmFolder(B, { family: "mistral", layers: 3, seed: 2, shards: 2 });
    writeLlmFolder(C, { family: "mistral", layers: 3, seed: 3, shards: 1 });
  });

  it("a mergekit output (ties, several shards) is rebuilt identical; a changed shard is named", async () => {
    const config = join(tmp.fresh("cfg"), "ties.yml");
    writeFileSync(config, `merge_method: ties\nbase_model: ${A}\nmodels:\n  - model: ${B}\n    parameters: {weight: 0.7, density: 0.5}\n  - model: ${C}\n    parameters: {weight: [0.2, 0.9], density: 0.3}\ndtype: bfloat16\n`);
    const made = join(tmp.path, "ties-out");
    await runMergekit({ config, out: made, shardSize: "2000" });
    const shards = readdirSync(made).filter((n) => n.endsWith(".safetensors"));
    assert.ok(shards.length >= 3);
    const rebuilt = join(tmp.path, "ties-rebuilt");
    const r = await reproduceModel(made, { out: rebuilt });
    assert.ok("recipeKind" in r && r.recipeKind === "mergekit");
    assert.equal(r.identical, true);
    assertSameFiles(made, rebuilt);
    assert.ok(r.files!.some((f) => f.name === "model.safetensors.index.json") && r.files!.some((f) => f.name === "config.json"));
    // One byte of tensor data changed in a copy: the rebuild (from the same recipe) differs there, and only there.
    const tampered = join(tmp.path, "tampered");
    cpSync(made, tampered, { recursive: true });
    const victim = join(tampered, shards[1]!);
    const bytes = readFileSync(victim);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(victim, bytes);
    const t = await reproduceModel(tampered, { out: join(tmp.path, "tampered-rebuilt") });
    assert.ok("files" in t);
    assert.equal(t.identical, false);
    assert.deepEqual(t.files!.filter((f) => !f.identical).map((f) => f.name), [shards[1]]);
  });

  it("input folders that moved are found by name in the model folders", async () => {
    const models = tmp.fresh("models");
    const [a, b] = [join(models, "left"), join(models, "right")];
    writeLlmFolder(a, { family: "mistral", layers: 3, seed: 4, shards: 2 });
    writeLlmFolder(b, { family: "mistral", layers: 3, seed: 5, shards: 2 });
    const config = join(tmp.fresh("cfg"), "slerp.yml");
    writeFileSync(config, `merge_method: slerp\nbase_model: ${a}\nmodels:\n  - model: ${a}\n  - model: ${b}\nparameters:\n  t: [0, 0.3, 1]\n`);
    const made = join(tmp.path, "slerp-out");
    await runMergekit({ config, out: made, shardSize: "2500" });
    const moved = tmp.fresh("moved");
    renameSync(a, join(moved, "left"));
    renameSync(b, join(moved, "right"));
    await assert.rejects(reproduceModel(made, { out: join(tmp.path, "never") }), (e: { code?: string }) => e.code === "RECIPE_INVALID");
    const rebuilt = join(tmp.path, "slerp-rebuilt");
    const r = await reproduceModel(made, { out: rebuilt, modelDirs: [moved] });
    assert.equal(r.identical, true);
    assertSameFiles(made, rebuilt);
  });

  it("a merge() folder output (weighted sum, and ties over a base and models) is rebuilt identical", async () => {
    const ws = join(tmp.path, "ws-out");
    await merge({ method: "weighted-sum", a: A, b: B, multiplier: 0.3, dtype: "fp16", out: ws, shardSize: 1500 });
    const r1 = await reproduceModel(ws, { out: join(tmp.path, "ws-rebuilt") });
    assert.ok("recipeKind" in r1 && r1.recipeKind === "merge");
    assert.equal(r1.identical, true);
    assertSameFiles(ws, join(tmp.path, "ws-rebuilt"));
    const ties = join(tmp.path, "ties-merge-out");
    await merge({ method: "ties", base: A, models: [B, C], modelParams: [{ density: 0.4 }, { density: 0.6 }], out: ties, shardSize: 1800 });
    const r2 = await reproduceModel(ties, { out: join(tmp.path, "ties-merge-rebuilt") });
    assert.equal(r2.identical, true);
    assertSameFiles(ties, join(tmp.path, "ties-merge-rebuilt"));
  });

  it("a folder without a recipe is refused; the CLI rebuilds a folder and says so", async () => {
    await assert.rejects(reproduceModel(A, { out: join(tmp.path, "nothing") }), (e: { code?: string }) => e.code === "RECIPE_INVALID");
    const config = join(tmp.fresh("cfg"), "linear.yml");
    writeFileSync(config, `merge_method: linear\nmodels:\n  - model: ${A}\n    parameters: {weight: 1}\n  - model: ${B}\n    parameters: {weight: 3}\n`);
    const made = join(tmp.path, "linear-out");
    await runMergekit({ config, out: made, shardSize: "3000" });
    const rebuilt = join(tmp.path, "linear-rebuilt");
    const r = spawnSync(process.execPath, [CLI, "reproduce", made, "--out", rebuilt, "-q"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /identical/);
    assertSameFiles(made, rebuilt);
  });
});
