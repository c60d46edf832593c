/** The command line as a user meets it: help, one-line errors with exit codes, progress, sweeps. */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
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

  it("runs the demo: a merge checked against the formula, engines bit-identical", () => {
    const r = run(["demo"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /in mix \(fp16\) = \S+ ok/);
    assert.match(r.out, /bit-identical/);
  });
});
