/**
 * The command line of base + models merges: several values after one flag, the model-folder
 * flag's new name (--model-dir) and a clear error for its old one, parameter flags made from the
 * method registry, and per-model weights.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { expandVariadic, parseCommandArgs, type Command } from "../../lib/cli/command";
import { mergeCommand } from "../../lib/cli/commands/merge";
import { runCommand } from "../../lib/cli/commands/run";
import { reproduceCommand } from "../../lib/cli/commands/reproduce";
import { methodParamOptions, modelWeightsArg, namedParams, paramFlag } from "../../lib/cli/method-params";
import { defineMethod, alphaParam } from "../../lib/methods/define";
import { METHODS } from "../../lib/methods/registry";
import { tempDir, writeModel } from "../helpers/models";

const CLI = join(__dirname, "../../lib/cli/main.js");
function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("CLI: several values after one flag", () => {
  const cmd: Command = {
    name: "t", summary: "", usage: "", positionals: true,
    options: { models: { type: "string", variadic: true, description: "" }, out: { type: "string", description: "" }, q: { type: "boolean", description: "" } },
    run: async () => 0,
  };

  it("reads --models a b c as three values, up to the next option, and repeats add more", () => {
    assert.deepEqual(expandVariadic(cmd, ["--models", "a", "b", "c", "--out", "o"]), ["--models", "a", "--models", "b", "--models", "c", "--out", "o"]);
    const parsed = parseCommandArgs(cmd, ["--models", "a", "b", "--q", "--models", "c", "--out", "o"]);
    assert.deepEqual(parsed.values.models, ["a", "b", "c"]);
    assert.equal(parsed.values.out, "o");
    assert.equal(parsed.values.q, true);
  });

  it("keeps --models=a as one value and leaves what follows -- alone", () => {
    assert.deepEqual(parseCommandArgs(cmd, ["--models=a", "pos"]).values.models, ["a"]);
    assert.deepEqual(parseCommandArgs(cmd, ["--models=a", "pos"]).positionals, ["pos"]);
    assert.deepEqual(expandVariadic(cmd, ["--models", "a", "--", "--models", "b"]), ["--models", "a", "--", "--models", "b"]);
  });

  it("refuses --models with no value", () => {
    assert.throws(() => parseCommandArgs(cmd, ["--models", "--out", "o"]), (e: unknown) => (e as { code?: string }).code === "INVALID_ARGUMENT");
  });
});

describe("CLI: parameter flags from the method registry", () => {
  it("spells parameter names in kebab case", () => {
    assert.equal(paramFlag("drop_rate"), "drop-rate");
    assert.equal(paramFlag("dropRate"), "drop-rate");
    assert.equal(paramFlag("density"), "density");
  });

  it("turns a new method's named parameters into flags, none shadowing a fixed option", () => {
    const probe = defineMethod({
      name: "probe", summary: "", formula: "", inputs: [], many: { base: true, min: 1, max: 8 },
      params: [alphaParam("lambda", [0, 2], 1), { name: "keep_share", summary: "share kept", default: 0.2, range: [0, 1], perModel: true }, { name: "out", summary: "clash", default: 0, range: [0, 1] }],
      kernelFor: () => ({ kernel: "copy" as never, args: [], params: [] }),
    });
    const options = methodParamOptions(["out", "a", "b"], [probe]);
    assert.deepEqual(Object.keys(options), ["keep-share"]);
    assert.match(options["keep-share"]!.description, /probe: share kept \[0, 1\] \(default 0\.2\)/);
  });

  it("the registry's own parameters never take a fixed option's name", () => {
    // A clash would leave the fixed option in place: the flag would not be the parameter's.
    for (const p of namedParams()) {
      const option = mergeCommand.options[p.flag];
      assert.ok(option?.description.startsWith(`${p.methods.map((m) => m.name).join(", ")}: `), `--${p.flag} is ${p.name}'s flag, not a fixed option`);
    }
    // Every named parameter of every method has its flag (α and a classic β have theirs).
    for (const m of METHODS) for (const q of m.params.slice(m.many ? 1 : 2)) assert.ok(paramFlag(q.name) in mergeCommand.options, `${m.name} ${q.name}`);
  });

  it("reads --weights as one number per model and refuses a count that does not match", () => {
    assert.deepEqual(modelWeightsArg("1,0.8, 0.6", 3), [1, 0.8, 0.6]);
    assert.throws(() => modelWeightsArg("1,0.8", 3), /2 weights for 3 models/);
    assert.throws(() => modelWeightsArg("1,x,2", 3), /expected a number/);
  });
});

describe("CLI: --model-dir, and --models no longer a folder", function () {
  this.timeout(60_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const lib = join(dir.path, "lib");
  const a = join(dir.path, "a.safetensors");
  before(() => {
    mkdirSync(lib);
    writeModel(a, { w: { dtype: "F32", shape: [2], values: [0, 10] } });
    writeModel(join(lib, "style.safetensors"), { w: { dtype: "F32", shape: [2], values: [10, 20] } });
  });

  it("merge finds a model by name in --model-dir (and not without it)", () => {
    const out = join(dir.path, "by-name.safetensors");
    const r = run(["merge", "--a", a, "--b", "style", "--model-dir", lib, "--out", out, "-q"], { TENSORMERGE_MODELS: join(dir.path, "none") });
    assert.equal(r.code, 0, r.err);
    assert.ok(readdirSync(dir.path).includes("by-name.safetensors"));
    const without = run(["merge", "--a", a, "--b", "style", "--out", join(dir.path, "x.safetensors"), "-q"], { TENSORMERGE_MODELS: join(dir.path, "none") });
    assert.notEqual(without.code, 0);
  });

  it("merge --models DIR says what --models means now, before anything is written", () => {
    const r = run(["merge", "--a", a, "--b", "style", "--models", lib, "--out", join(dir.path, "y.safetensors")]);
    assert.equal(r.code, 2);
    assert.match(r.err, /INVALID_ARGUMENT.*--models lists the models to merge; folders to look models up in are --model-dir/);
    assert.ok(!readdirSync(dir.path).includes("y.safetensors"));
  });

  it("run and reproduce refuse --models DIR the same way, and their help shows --model-dir only", () => {
    for (const command of ["run", "reproduce"]) {
      const r = run([command, join(dir.path, "whatever"), "--models", lib]);
      assert.equal(r.code, 2, command);
      assert.match(r.err, /folders to look models up in are --model-dir/, command);
      const help = run([command, "--help"]).out;
      assert.match(help, /--model-dir DIR/, command);
      assert.doesNotMatch(help, /--models/, command);
    }
    assert.ok("model-dir" in runCommand.options && "model-dir" in reproduceCommand.options);
  });

  it("merge --help lists --base, --models (several values), --weights and --model-dir", () => {
    const help = run(["merge", "--help"]).out;
    assert.match(help, /--base MODEL/);
    assert.match(help, /--models MODEL …/);
    assert.match(help, /--weights W1,W2,…/);
    assert.match(help, /--model-dir DIR/);
  });

  it("merge refuses --base / --models / --weights with a classic method, naming the flag", () => {
    const r = run(["merge", "--method", "weighted-sum", "--a", a, "--b", a, "--base", a, "--out", join(dir.path, "z.safetensors")]);
    assert.equal(r.code, 2);
    assert.match(r.err, /--base: weighted-sum merges models A, B/);
  });
});
