/**
 * 2022-era SD 1.x checkpoints name the CLIP text encoder without `text_model.`; tensormerge
 * renames those keys on load as the classic tool does (AUTOMATIC1111's
 * checkpoint_dict_replacements_sd1), so their text encoder merges with a modern model's. A B or C
 * that lacks a large share of A's float keys, or a whole component, is a warning, not a count.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { normaliseKeyName, normaliseModelKeys } from "../../lib/keys";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { runRecipe } from "../../lib/recipes/run";
import { identifyModel } from "../../lib/library/identify";
import { openModel } from "../../lib/formats";
import { loadBuiltinLayout, shrinkLayout } from "../../lib/synthetic";
import { ENGINES } from "../helpers/engines";
import { numel, randomValues, readModel, tempDir, writeModel, type TestDtype, type TestTensor } from "../helpers/models";

const CLI = join(__dirname, "../../lib/cli/main.js");
const MODERN = "cond_stage_model.transformer.text_model.";
const OLD = "cond_stage_model.transformer.";
const f = Math.fround;

/** The SD 1.5 layout, shrunk, with seeded values; `rename` maps each key (old-layout names, dropped components). */
function sd15(seed: number, rename: (name: string) => string | null = (n) => n): Record<string, TestTensor> {
  const out: Record<string, TestTensor> = {};
  shrinkLayout(loadBuiltinLayout("sd15"), 64).forEach(([name, shape, dtype], i) => {
    const key = rename(name);
    if (key === null) return;
    const n = numel(shape);
    out[key] = dtype === "I64" ? { dtype, shape, values: Array.from({ length: n }, (_, k) => k) } : { dtype: dtype as TestDtype, shape, values: randomValues(n, seed * 10_000 + i) };
  });
  return out;
}
const toOld = (n: string) => (n.startsWith(MODERN) ? OLD + n.slice(MODERN.length) : n);

describe("2022-era key names and missing components", function () {
  this.timeout(60_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const modern = join(dir.path, "modern.safetensors");
  const old = join(dir.path, "old.safetensors");
  const noVae = join(dir.path, "no-vae.safetensors");
  const probe = `${MODERN}encoder.layers.0.mlp.fc1.weight`;
  let A: Record<string, TestTensor>, B: Record<string, TestTensor>;
  before(() => {
    A = sd15(1);
    B = sd15(2, toOld);
    writeModel(modern, A);
    writeModel(old, B);
    writeModel(noVae, sd15(3, (n) => (n.startsWith("first_stage_model.") ? null : n)));
  });

  it("renames exactly the classic tool's three prefixes; a key whose modern name also exists keeps its old name", () => {
    assert.equal(normaliseKeyName(`${OLD}embeddings.token_embedding.weight`), `${MODERN}embeddings.token_embedding.weight`);
    assert.equal(normaliseKeyName(`${OLD}encoder.layers.3.self_attn.q_proj.bias`), `${MODERN}encoder.layers.3.self_attn.q_proj.bias`);
    assert.equal(normaliseKeyName(`${OLD}final_layer_norm.weight`), `${MODERN}final_layer_norm.weight`);
    for (const k of [`${MODERN}encoder.layers.0.mlp.fc1.weight`, `${OLD}pooler.weight`, "cond_stage_model.model.ln_final.weight", "model.diffusion_model.encoder.x"]) assert.equal(normaliseKeyName(k), k);
    const { tensors, renames } = normaliseModelKeys([{ name: `${OLD}final_layer_norm.weight` }, { name: `${MODERN}final_layer_norm.weight` }, { name: `${OLD}final_layer_norm.bias` }]);
    assert.deepEqual(tensors.map((t) => t.name), [`${OLD}final_layer_norm.weight`, `${MODERN}final_layer_norm.weight`, `${MODERN}final_layer_norm.bias`]);
    assert.deepEqual(renames, { renamed: 1, collisions: [`${OLD}final_layer_norm.weight`] });
  });

  it("opens an old-layout model under the modern names (text_model.), and identify calls it SD 1.x", async () => {
    const model = await openModel(old);
    assert.equal(model.renamedKeys, 197);
    assert.ok(model.byName.has(probe) && !model.byName.has(toOld(probe)));
    assert.ok(model.notes.some((n) => n.includes("renamed")), model.notes.join("; "));
    const raw = Object.entries(B).map(([name, t]) => ({ name, shape: t.shape, dtype: t.dtype as "F32" }));
    const id = identifyModel({ tensors: raw });
    assert.equal(id.architecture, "sd1");
    assert.ok(id.components.some((c) => c.id === "text_encoder" && c.tensors === 197));
    assert.ok(id.notes.some((n) => n.includes("2022")), id.notes.join("; "));
  });

  for (const engine of ENGINES) {
    it(`merges an old-layout B's text encoder into a modern A, under the modern names (${engine})`, async () => {
      const out = join(dir.path, `ab-${engine}.safetensors`);
      const report = await merge({ a: modern, b: old, method: "weighted-sum", multiplier: 0.25, out, engine, recipeMetadata: false });
      assert.deepEqual(report.stats.missing, {});
      assert.deepEqual(report.renamedKeys, [{ slot: "b", path: old, keys: 197 }]);
      assert.deepEqual(report.missingKeys, []);
      const result = readModel(out);
      assert.ok(!result.order.some((n) => n.startsWith(OLD) && !n.startsWith(MODERN)), "no old names in the output");
      const a = A[probe]!.values!, b = B[toOld(probe)]!.values!;
      const got = result.tensors.get(probe)!.values;
      for (let i = 0; i < got.length; i++) assert.equal(got[i], f(f(f(a[i]!) * f(0.75)) + f(f(b[i]!) * f(0.25))), `${probe}[${i}]`);
    });
  }

  it("writes the modern names when A is the old-layout model", async () => {
    const out = join(dir.path, "ba.safetensors");
    const report = await merge({ a: old, b: modern, method: "weighted-sum", multiplier: 0.5, out, recipeMetadata: false });
    assert.deepEqual(report.renamedKeys, [{ slot: "a", path: old, keys: 197 }]);
    assert.deepEqual(report.stats.missing, {});
    assert.ok(readModel(out).tensors.has(probe));
  });

  it("warns in the report when B lacks a whole component (the VAE)", async () => {
    const out = join(dir.path, "novae.safetensors");
    const report = await merge({ a: modern, b: noVae, method: "weighted-sum", multiplier: 0.5, out, recipeMetadata: false });
    assert.equal(report.missingKeys.length, 1);
    const w = report.missingKeys[0]!;
    assert.equal(w.slot, "b");
    assert.deepEqual(w.components, ["VAE"]);
    assert.equal(w.missing, report.stats.missing.b);
    assert.match(report.warnings[0]!, /B \(.*no-vae\.safetensors\) lacks \d+ of A's \d+ float tensors .*whole VAE/);
  });

  it("no warning when the missing keys are baked in from a VAE file", async () => {
    const vae = join(dir.path, "vae.safetensors");
    writeModel(vae, Object.fromEntries(Object.entries(A).filter(([n]) => n.startsWith("first_stage_model.")).map(([n, t]) => [n.slice("first_stage_model.".length), t])));
    const report = await merge({ a: modern, b: noVae, vae, method: "weighted-sum", multiplier: 0.5, out: join(dir.path, "baked.safetensors"), recipeMetadata: false });
    assert.deepEqual(report.missingKeys, []);
  });

  it("a recipe row whose B lacks a whole component gets the warning in the run report", async () => {
    const recipe = parseRecipe(`x = ${modern} + ${noVae}, 0.5, safetensors\ny = ${modern} + ${old}, 0.5, safetensors\n`);
    const report = await runRecipe(recipe, { outDir: join(dir.path, "run"), dryRun: true, recipeMetadata: false });
    const lacking = report.warnings.filter((w) => w.includes(" lacks "));
    assert.equal(lacking.length, 1, report.warnings.join("\n"));
    assert.match(lacking[0]!, /^row 1 \(x\): B \(.*no-vae\.safetensors\) lacks .*whole VAE/);
  });

  it("the CLI prints the warning on stderr, also with --quiet, and exits 0", () => {
    for (const quiet of [false, true]) {
      const out = join(dir.path, `cli-${quiet}.safetensors`);
      const r = spawnSync(process.execPath, [CLI, "merge", "--a", modern, "--b", noVae, "--multiplier", "0.5", "--out", out, ...(quiet ? ["--quiet"] : [])], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /warning: B \(.*no-vae\.safetensors\) lacks .* whole VAE/);
    }
    const r = spawnSync(process.execPath, [CLI, "merge", "--a", modern, "--b", old, "--out", join(dir.path, "cli-old.safetensors")], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /warning/);
    assert.match(r.stdout, /renamed 197 keys of B/);
  });
});
