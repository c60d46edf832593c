/** The command line as a user meets it: help, one-line errors with exit codes, progress, sweeps. */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readModel, tempDir, writeModel } from "../helpers/models";

const CLI = join(__dirname, "../../lib/cli/main.js");
function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("CLI", function () {
  this.timeout(60_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [2], values: [0, 10] } });
    writeModel(b, { w: { dtype: "F32", shape: [2], values: [10, 20] } });
  });

  it("lists commands and every method in help", () => {
    const top = run(["--help"]);
    assert.equal(top.code, 0);
    assert.match(top.out, /merge/);
    const help = run(["merge", "--help"]);
    assert.equal(help.code, 0);
    for (const m of ["weighted-sum", "add-difference", "sigmoid", "inverse-sigmoid", "no-interpolation"]) assert.match(help.out, new RegExp(m));
  });

  it("reports errors as one line with a code and a non-zero exit, a stack only with --verbose", () => {
    const r = run(["merge", "--a", a, "--b", join(dir.path, "missing.safetensors"), "--out", join(dir.path, "o.safetensors")]);
    assert.equal(r.code, 1);
    assert.equal(r.err.trim().split("\n").length, 1);
    assert.match(r.err, /FILE_NOT_FOUND.*missing\.safetensors/);
    const v = run(["merge", "--a", a, "--b", join(dir.path, "missing.safetensors"), "--out", join(dir.path, "o.safetensors"), "--verbose"]);
    assert.match(v.err, /\n\s+at /);
    const bad = run(["merge", "--bogus"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /bogus/);
    assert.equal(run(["frobnicate"]).code, 2);
  });

  it("merges, prints plain progress lines when not on a TTY, and refuses to overwrite", () => {
    const out = join(dir.path, "mix.safetensors");
    const r = run(["merge", "--a", a, "--b", b, "--method", "weighted-sum", "--multiplier", "0.25", "--out", out]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /merging: 100%/);
    assert.doesNotMatch(r.err, /\r/);
    assert.match(r.out, /wrote .*mix\.safetensors/);
    assert.deepEqual(readModel(out).tensors.get("w")!.values, [2.5, 12.5]);
    const again = run(["merge", "--a", a, "--b", b, "--out", out]);
    assert.equal(again.code, 1);
    assert.match(again.err, /OUTPUT_EXISTS/);
  });

  it("writes a multiplier sweep as one file per value", () => {
    const r = run(["merge", "--a", a, "--b", b, "--multiplier", "0.1:0.3:0.1", "--out", join(dir.path, "sweep-<M>.safetensors"), "--quiet"]);
    assert.equal(r.code, 0, r.err);
    for (const [m, v] of [["0.1", [1, 11]], ["0.2", [2, 12]], ["0.3", [3, 13]]] as const) {
      const p = join(dir.path, `sweep-${m}.safetensors`);
      assert.ok(existsSync(p), p);
      const got = readModel(p).tensors.get("w")!.values;
      const f = Math.fround;
      assert.deepEqual(got, [0, 10].map((x, i) => f(f(x * f(1 - Number(m))) + f([10, 20][i]! * f(Number(m))))));
      assert.ok(Math.abs(got[0]! - v[0]) < 1e-5);
    }
  });

  it("says which option is missing as the user typed it", () => {
    const noA = run(["merge", "--b", b, "--out", join(dir.path, "x.safetensors")]);
    assert.equal(noA.code, 2);
    assert.match(noA.err, /\[INVALID_ARGUMENT\]: --a is required/);
    const noB = run(["merge", "--a", a, "--out", join(dir.path, "x.safetensors")]);
    assert.match(noB.err, /--b is required for weighted-sum/);
    const noOut = run(["merge", "--a", a, "--b", b]);
    assert.match(noOut.err, /--out is required/);
  });

  it("prints the version, and says so in the help", () => {
    const version = (JSON.parse(readFileSync(join(__dirname, "../../../package.json"), "utf8")) as { version: string }).version;
    for (const flag of ["--version", "-v"]) {
      const r = run([flag]);
      assert.equal(r.code, 0);
      assert.equal(r.out, `${version}\n`);
    }
    assert.match(run(["--help"]).out, /--version/);
  });

  it("merge --dry-run prints the plan (inputs, outputs, bytes, disk) and writes nothing", () => {
    const sub = join(dir.path, "dry");
    mkdirSync(sub);
    const args = ["merge", "--a", a, "--b", b, "--multiplier", "0.1,0.2", "--out", join(sub, "mix-<M>.safetensors")];
    const r = run([...args, "--dry-run"]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(readdirSync(sub), []);
    assert.match(r.out, /2 outputs, 1 pass/);
    assert.match(r.out, /inputs \(each read once\):\n\s+A\s+.*a\.safetensors\n\s+B\s+.*b\.safetensors\n/);
    assert.match(r.out, /mix-0\.1\.safetensors .* M=0\.1\s+write/);
    assert.match(r.out, /disk: .* needs [\d.]+ \w+, [\d.]+ \w+ free/);
    // The planned sizes are the sizes the merge then writes.
    assert.equal(run([...args, "--quiet"]).code, 0);
    const size = statSync(join(sub, "mix-0.1.safetensors")).size;
    const read = statSync(a).size + statSync(b).size;
    assert.match(r.out, new RegExp(`read ${read} B, write ${(2 * size / 1024).toFixed(1)} KiB`));
    // A dry run refuses what the merge would refuse.
    const again = run([...args, "--dry-run"]);
    assert.equal(again.code, 1);
    assert.match(again.err, /OUTPUT_EXISTS/);
  });

  it("run --out-dir through a symlinked folder onto an input, and run --export onto the recipe, are refused", () => {
    const real = join(dir.path, "models-real");
    mkdirSync(real);
    const base = join(real, "mix.safetensors");
    writeModel(base, { w: { dtype: "F32", shape: [2], values: [1, 2] } });
    symlinkSync(real, join(dir.path, "models-view"));
    const recipe = join(dir.path, "recipe.txt");
    writeFileSync(recipe, `mix = ${base} + ${b}, 0.5, safetensors\n`);
    const before = readFileSync(base);
    const r = run(["run", recipe, "--out-dir", join(dir.path, "models-view"), "--overwrite", "--no-history"]);
    assert.equal(r.code, 1);
    assert.match(r.err, /\[INPUT_IS_TARGET\]/);
    assert.ok(readFileSync(base).equals(before));
    assert.deepEqual(readdirSync(real), ["mix.safetensors"]);
    const e = run(["run", recipe, "--export", recipe, "--overwrite"]);
    assert.match(e.err, /\[INPUT_IS_TARGET\]/);
    assert.equal(readFileSync(recipe, "utf8"), `mix = ${base} + ${b}, 0.5, safetensors\n`);
  });

  it("run --export --overwrite never replaces a model the recipe reads (literal path, --var, a name in --model-dir, via a symlink)", () => {
    const models = join(dir.path, "export-models");
    mkdirSync(models);
    const named = join(models, "base.safetensors");
    writeModel(named, { w: { dtype: "F32", shape: [2], values: [3, 4] } });
    symlinkSync(models, join(dir.path, "export-view"));
    const recipe = join(dir.path, "export-recipe.txt");
    writeFileSync(recipe, `mix = base + __X__, 0.5, safetensors\nmix2 = mix + ${b}, 0.5, safetensors\n`);
    const bytes = [a, b, named].map((p) => readFileSync(p));
    for (const target of [join(dir.path, "export-view", "base.safetensors"), b, a]) {
      const r = run(["run", recipe, "--var", `X=${a}`, "--model-dir", models, "--export", target, "--overwrite"]);
      assert.equal(r.code, 1, `${target}: ${r.out}`);
      assert.match(r.err, /\[INPUT_IS_TARGET\]/);
    }
    [a, b, named].forEach((p, i) => assert.ok(readFileSync(p).equals(bytes[i]!), `${p} was overwritten by the recipe text`));
    const ok = run(["run", recipe, "--var", `X=${a}`, "--model-dir", models, "--export", join(dir.path, "export.json")]);
    assert.equal(ok.code, 0, ok.err);
  });

  it("runs the demo: a merge checked against the formula, engines bit-identical", () => {
    const r = run(["demo"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /in mix \(fp16\) = \S+ ok/);
    assert.match(r.out, /bit-identical/);
  });
});
