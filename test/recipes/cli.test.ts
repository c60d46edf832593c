/** `tensormerge run` and `tensormerge reproduce` as a user meets them. */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseHistory } from "../../lib/recipes/history";
import { tempDir } from "../helpers/models";
import { filesIn, SAMPLE, sameBytes, writeSampleModels } from "./helpers";

const CLI = join(__dirname, "../../lib/cli/main.js");

describe("recipes: CLI", function () {
  this.timeout(60_000);
  const dir = tempDir("tm-recipe-cli-");
  after(() => dir.cleanup());
  const models = join(dir.path, "models");
  const recipe = join(dir.path, "sample.txt");
  const env = { ...process.env, TENSORMERGE_CACHE_DIR: join(dir.path, "cache"), TENSORMERGE_MODELS: "" };
  const run = (args: string[], cwd = dir.path) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env, cwd });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const vars = ["--var", "SD14=sd14", "--var", "SD15=sd15", "--var", "__F222__=f222", "--var", "WD13=models/wd13.safetensors"];
  before(() => {
    mkdirSync(models);
    writeSampleModels(models);
    writeFileSync(recipe, SAMPLE);
  });

  it("runs the sample with --var bindings (names found in --model-dir, or paths), with progress and a history", () => {
    const out = join(dir.path, "out1");
    const r = run(["run", recipe, ...vars, "--model-dir", models, "--out-dir", out]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(filesIn(out), ["a14.ckpt", "a15.ckpt", "mix14.safetensors", "mix15.safetensors", "tensormerge-history.jsonl"]);
    assert.match(r.err, /merging, pass 1\/1: 100%/);
    // Each output's state: writing before the pass, done after it.
    assert.match(r.err, /writing\s+mix15\.safetensors[\s\S]*merging, pass 1\/1[\s\S]*done\s+mix15\.safetensors/);
    assert.match(r.out, /wrote .*mix15\.safetensors .*sha256 [0-9a-f]{10}/);
    assert.match(r.out, /read .* once, wrote .* in 1 pass/);
    const history = parseHistory(readFileSync(join(out, "tensormerge-history.jsonl"), "utf8"));
    assert.deepEqual(history.map((h) => h.name), ["a14", "a15", "mix14", "mix15"]);
    assert.equal(history[0]!.recipe, recipe);
  });

  it("prints the plan with --dry-run and writes nothing", () => {
    const out = join(dir.path, "dry");
    mkdirSync(out);
    const r = run(["run", recipe, ...vars, "--model-dir", models, "--out-dir", out, "--dry-run"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /4 rows, 1 pass/);
    assert.match(r.out, /inputs \(each read once\):\n(\s+\S+\.safetensors .*\n){4}/);
    assert.match(r.out, /row 4\s+mix15\.safetensors .* M=1\s+write/);
    assert.match(r.out, /read [\d.]+ \w+, write [\d.]+ \w+/);
    assert.match(r.out, /disk: .* needs [\d.]+ \w+, [\d.]+ \w+ free/);
    assert.deepEqual(filesIn(out), []);
  });

  it("reads a bindings file, exports to JSON, and the JSON recipe writes the same files", () => {
    const bindings = join(dir.path, "bindings.txt");
    writeFileSync(bindings, "# where my models are\nSD14 = models/sd14.safetensors\nSD15 = sd15\nF222 = f222\nWD13 = wd13\nUNUSED = anything\n");
    const out = join(dir.path, "out2");
    assert.equal(run(["run", recipe, "--vars", bindings, "--model-dir", models, "--out-dir", out, "-q"]).code, 0);
    const json = join(dir.path, "sample.json");
    const e = run(["run", recipe, "--export", json]);
    assert.equal(e.code, 0, e.err);
    assert.match(readFileSync(json, "utf8"), /"format": "tensormerge-recipe"/);
    const out3 = join(dir.path, "out3");
    assert.equal(run(["run", json, "--vars", bindings, "--model-dir", models, "--out-dir", out3, "-q", "--no-history"]).code, 0);
    for (const f of ["a14.ckpt", "a15.ckpt", "mix14.safetensors", "mix15.safetensors"]) assert.ok(sameBytes(join(out, f), join(out3, f)), f);
    assert.deepEqual(filesIn(out3), ["a14.ckpt", "a15.ckpt", "mix14.safetensors", "mix15.safetensors"]);
  });

  it("reports a mistake as one line with its code, writing nothing", () => {
    const out = join(dir.path, "bad");
    mkdirSync(out);
    const typo = run(["run", recipe, ...vars, "--var", "SD41=sd14", "--model-dir", models, "--out-dir", out]);
    assert.equal(typo.code, 1);
    assert.match(typo.err, /^tensormerge: error \[RECIPE_INVALID\]: unknown variable __SD41__/);
    assert.equal(typo.err.trim().split("\n").length, 1);
    const unbound = run(["run", recipe, "--var", "SD14=sd14", "--model-dir", models, "--out-dir", out]);
    assert.match(unbound.err, /RECIPE_INVALID.*unbound variables __F222__ .*__SD15__ .*__WD13__/);
    assert.deepEqual(filesIn(out), []);
    // An output folder that does not exist yet is created only once the recipe passed its checks.
    const fresh = join(dir.path, "not-yet");
    const refused = run(["run", recipe, "--var", "SD14=sd14", "--model-dir", models, "--out-dir", fresh]);
    assert.match(refused.err, /RECIPE_INVALID/);
    assert.equal(existsSync(fresh), false, "a refused recipe created its output folder");
    assert.equal(run(["run", "--out-dir", join(fresh, "deeper"), recipe, ...vars, "--model-dir", models, "-q"]).code, 0);
    assert.ok(filesIn(join(fresh, "deeper")).includes("mix15.safetensors"));
    assert.equal(run(["run"]).code, 2);
  });

  it("skips existing outputs with --skip-existing, refuses them without", () => {
    const out = join(dir.path, "out1");
    const again = run(["run", recipe, ...vars, "--model-dir", models, "--out-dir", out, "-q"]);
    assert.equal(again.code, 1);
    assert.match(again.err, /OUTPUT_EXISTS/);
    const skip = run(["run", recipe, ...vars, "--model-dir", models, "--out-dir", out, "--skip-existing"]);
    assert.equal(skip.code, 0, skip.err);
    assert.match(skip.out, /skipped .*mix15\.safetensors \(exists\)/);
  });

  it("reproduce rebuilds a model from its metadata, identical, and prints its recipe", () => {
    const target = join(dir.path, "out1", "mix15.safetensors");
    const rebuilt = join(dir.path, "mix15.again.safetensors");
    const r = run(["reproduce", target, "--model-dir", models, "--out", rebuilt]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /identical to mix15\.safetensors/);
    assert.ok(sameBytes(target, rebuilt));
    const p = run(["reproduce", target, "--print-recipe"]);
    assert.equal(p.code, 0);
    assert.deepEqual((JSON.parse(p.out) as { rows: { name: string }[] }).rows.map((x) => x.name), ["a15", "mix15"]); // a15.ckpt carries its recipe too
  });
});
