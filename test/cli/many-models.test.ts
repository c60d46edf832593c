/**
 * The command line of base + models merges: several values after one flag, the model-folder
 * flag's new name (--model-dir) and a clear error for its old one, parameter flags made from the
 * method registry, and per-model weights.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expandVariadic, parseCommandArgs, type Command } from "../../lib/cli/command";
import { mergeCommand } from "../../lib/cli/commands/merge";
import { runCommand } from "../../lib/cli/commands/run";
import { reproduceCommand } from "../../lib/cli/commands/reproduce";
import { methodParamOptions, modelWeightsArg, namedParams, paramFlag } from "../../lib/cli/method-params";
import { defineMethod, alphaParam } from "../../lib/methods/define";
import { METHODS } from "../../lib/methods/registry";
import { readModel, tempDir, writeModel } from "../helpers/models";

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
    // Its value flag, and beside it the per-key and per-block ones (as --beta-weight, --beta-blocks).
    assert.deepEqual(Object.keys(options), ["keep-share", "keep-share-weight", "keep-share-blocks"]);
    assert.match(options["keep-share"]!.description, /probe: share kept \[0, 1\] \(default 0\.2; a comma list gives one value per model\)/);
  });

  it("the registry's own parameters never take a fixed option's name", () => {
    // A clash would leave the fixed option in place: the flag would not be the parameter's.
    for (const p of namedParams()) {
      const option = mergeCommand.options[p.flag];
      assert.ok(option?.description.startsWith(`${p.methods.map((m) => m.name).join(", ")}: `), `--${p.flag} is ${p.name}'s flag, not a fixed option`);
    }
    // Every named parameter of every method has its flag (α and a classic β have theirs).
    // (a base + models method's per-model weight is --weights).
    for (const m of METHODS) for (const q of m.params.slice(m.many ? 1 : 2)) if (!(m.many && q.name === "weight")) assert.ok(paramFlag(q.name) in mergeCommand.options, `${m.name} ${q.name}`);
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

  it("list takes --model-dir as it takes a DIR argument", () => {
    const r = run(["list", "--model-dir", lib, "--no-hash"], { TENSORMERGE_MODELS: join(dir.path, "none") });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^style\b/m);
  });

  it("run, reproduce and list refuse --models DIR the same way, and their help shows --model-dir only", () => {
    for (const command of ["run", "reproduce", "list"]) {
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

/**
 * TIES written out (mergekit's `ties`, arXiv 2306.01708): task vectors δᵢ = Mᵢ − base; keep
 * the k = density·n largest |δᵢ| of each (the values here have no ties at the threshold, and
 * density·n is a whole number, so every rounding rule agrees); elect the sign of Σ wᵢ·δᵢ
 * (trimmed); average the agreeing trimmed deltas weighted by wᵢ (Σ wᵢ·δᵢ / Σ wᵢ over those that
 * agree, 0 where none does); result = base + λ·that.
 */
function tiesByHand(base: number[], models: number[][], weights: number[], density: number | number[], lambda: number): number[] {
  const n = base.length;
  const trimmed = models.map((m, i) => {
    const k = Math.round((typeof density === "number" ? density : density[i]!) * n);
    const delta = m.map((v, j) => v - base[j]!);
    const threshold = [...delta].map(Math.abs).sort((x, y) => y - x)[k - 1]!;
    return delta.map((d) => (Math.abs(d) >= threshold ? d : 0));
  });
  return base.map((b, j) => {
    const sum = trimmed.reduce((s, t, i) => s + weights[i]! * t[j]!, 0);
    const sign = Math.sign(sum);
    let num = 0, den = 0;
    trimmed.forEach((t, i) => {
      if (t[j] !== 0 && Math.sign(t[j]!) === sign) {
        num += weights[i]! * t[j]!;
        den += weights[i]!;
      }
    });
    return b + lambda * (den === 0 ? 0 : num / den);
  });
}

describe("CLI: a TIES merge of a base and three models, end to end", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const KEY = "model.diffusion_model.out.weight";
  const base = [0.5, -1, 2, 0.25, -0.75, 1.5, -2, 0.125, 1, -0.5];
  // Distinct magnitudes in each task vector, signs that disagree across models.
  const deltas = [
    [0.9, -0.1, 0.35, -0.62, 0.05, 0.44, -0.83, 0.27, -0.16, 0.71],
    [-0.52, 0.33, 0.81, 0.12, -0.94, -0.07, 0.61, -0.38, 0.23, 0.49],
    [0.15, -0.77, -0.28, 0.66, 0.41, -0.55, 0.09, 0.88, -0.34, -0.19],
  ];
  const fp32 = (v: number) => Math.fround(v);
  const models = deltas.map((d) => d.map((x, j) => fp32(base[j]! + x)));
  const paths = { base: join(dir.path, "base.safetensors"), m: [1, 2, 3].map((i) => join(dir.path, `m${i}.safetensors`)) };
  before(function () {
    if (!METHODS.some((m) => m.name === "ties" && m.many)) this.skip(); // until the ties method is in the registry
    writeModel(paths.base, { [KEY]: { dtype: "F32", shape: [2, 5], values: base } });
    paths.m.forEach((p, i) => writeModel(p, { [KEY]: { dtype: "F32", shape: [2, 5], values: models[i]! } }));
  });

  it("matches the formula, with per-model --weights and --density / --lambda flags", () => {
    const out = join(dir.path, "ties.safetensors");
    const r = run(["merge", "--method", "ties", "--base", paths.base, "--models", ...paths.m, "--weights", "1,0.8,0.6", "--density", "0.4", "--lambda", "1", "--out", out, "-q"]);
    assert.equal(r.code, 0, r.err);
    const got = readModel(out).tensors.get(KEY)!.values;
    const want = tiesByHand(base.map(fp32), models, [1, 0.8, 0.6], 0.4, 1);
    got.forEach((v, j) => assert.ok(Math.abs(v - want[j]!) <= 1e-6 * Math.max(1, Math.abs(want[j]!)), `element ${j}: ${v} vs ${want[j]}`));
  });

  it("takes one density per model as a comma list, and refuses a list for a row parameter", () => {
    const out = join(dir.path, "ties-per-model.safetensors");
    const r = run(["merge", "--method", "ties", "--base", paths.base, "--models", ...paths.m, "--density", "0.4,0.2,0.6", "--lambda", "0.5", "--out", out, "-q"]);
    assert.equal(r.code, 0, r.err);
    const got = readModel(out).tensors.get(KEY)!.values;
    const want = tiesByHand(base.map(fp32), models, [1, 1, 1], [0.4, 0.2, 0.6], 0.5);
    got.forEach((v, j) => assert.ok(Math.abs(v - want[j]!) <= 1e-6 * Math.max(1, Math.abs(want[j]!)), `element ${j}: ${v} vs ${want[j]}`));
    const recipe = JSON.parse(readModel(out).metadata.tensormerge_recipe!) as { rows: { models: { params?: Record<string, number> }[] }[] };
    assert.deepEqual(recipe.rows[0]!.models.map((m) => m.params?.density), [0.4, 0.2, 0.6]);
    const seeds = run(["merge", "--method", "dare", "--base", paths.base, "--models", ...paths.m, "--seed", "1,2,3", "--out", join(dir.path, "no.safetensors")]);
    assert.equal(seeds.code, 2);
    assert.match(seeds.err, /--seed "1,2,3": one number; dare's seed is the row's/);
    const short = run(["merge", "--method", "ties", "--base", paths.base, "--models", ...paths.m, "--density", "0.4,0.2", "--out", join(dir.path, "no.safetensors")]);
    assert.match(short.err, /2 values for 3 models/);
  });

  it("--dry-run lists the base and the models, and writes nothing", () => {
    const out = join(dir.path, "planned.safetensors");
    const r = run(["merge", "--method", "ties", "--base", paths.base, "--models", ...paths.m, "--density", "0.4", "--out", out, "--dry-run"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /base .*base\.safetensors/);
    for (const i of [1, 2, 3]) assert.match(r.out, new RegExp(`model ${i} .*m${i}\\.safetensors`));
    assert.ok(!readdirSync(dir.path).includes("planned.safetensors"));
  });

  it("refuses a missing base, a model twice, a density out of range and a flag ties does not have, before writing", () => {
    const out = join(dir.path, "bad.safetensors");
    const cases: [string[], RegExp][] = [
      [["--models", ...paths.m], /--base is required for ties/],
      [["--base", paths.base, "--models", paths.m[0]!, paths.m[1]!, paths.m[0]!], /models\[2\] \(.*m1\.safetensors\) is the same as models\[0\]/],
      [["--base", paths.base, "--models", ...paths.m, "--density", "1.5"], /density/],
      [["--base", paths.base, "--models", ...paths.m, "--beta", "0.3"], /beta/],
      [["--base", paths.base, "--models", ...paths.m, "--weights", "1,2"], /2 weights for 3 models/],
    ];
    for (const [args, message] of cases) {
      const r = run(["merge", "--method", "ties", ...args, "--out", out]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
      assert.match(r.err, message, args.join(" "));
    }
    assert.ok(!readdirSync(dir.path).includes("bad.safetensors"));
  });

  it("dare-ties finds the base and models by name in --model-dir; the same seed gives the same bytes, another seed other bytes", () => {
    const out = (name: string) => join(dir.path, `${name}.safetensors`);
    const merge = (name: string, seed: string) => run(["merge", "--method", "dare-ties", "--base", "base", "--models", "m1", "m2", "--drop-rate", "0.5", "--seed", seed, "--model-dir", dir.path, "--out", out(name), "-q"]);
    for (const [name, seed] of [["dare-1", "42"], ["dare-2", "42"], ["dare-3", "7"]] as const) assert.equal(merge(name, seed).code, 0, name);
    // (The files differ in their metadata only: each records its own name.)
    assert.deepEqual(readModel(out("dare-2")).tensors.get(KEY)!.values, readModel(out("dare-1")).tensors.get(KEY)!.values);
    assert.notDeepEqual(readModel(out("dare-3")).tensors.get(KEY)!.values, readModel(out("dare-1")).tensors.get(KEY)!.values);
    const recipe = JSON.parse(readModel(out("dare-1")).metadata.tensormerge_recipe!) as { rows: { params?: Record<string, number> }[] };
    assert.deepEqual(recipe.rows[0]!.params, { "drop-rate": 0.5, seed: 42 });
    const shown = JSON.parse(readModel(out("dare-1")).metadata.sd_merge_recipe!) as Record<string, unknown>;
    assert.equal(shown.interp_method, "DARE-TIES");
    assert.deepEqual(shown.model_names, ["m1.safetensors", "m2.safetensors"]);
  });

  it("model-stock needs two models at least, said before writing", () => {
    const r = run(["merge", "--method", "model-stock", "--base", paths.base, "--models", paths.m[0]!, "--out", join(dir.path, "stock.safetensors")]);
    assert.equal(r.code, 2);
    assert.match(r.err, /model-stock takes 2 to \d+ models/);
  });

  it("reproduce rebuilds the TIES merge bit for bit from the recipe in its metadata", () => {
    const out = join(dir.path, "to-reproduce.safetensors");
    assert.equal(run(["merge", "--method", "ties", "--base", paths.base, "--models", ...paths.m, "--weights", "1,0.8,0.6", "--density", "0.4", "--out", out, "-q"]).code, 0);
    const recipe = JSON.parse(readModel(out).metadata.tensormerge_recipe!) as { rows: { base: { sha256: string }; models: { sha256: string; weight?: number }[]; params?: Record<string, number> }[] };
    const row = recipe.rows[recipe.rows.length - 1]!;
    assert.equal(row.models.length, 3);
    assert.deepEqual(row.models.map((m) => m.weight ?? 1), [1, 0.8, 0.6]);
    assert.equal(row.params?.density, 0.4);
    const rebuilt = join(dir.path, "rebuilt.safetensors");
    const r = run(["reproduce", out, "--model-dir", dir.path, "--out", rebuilt, "-q"]);
    assert.equal(r.code, 0, r.err + r.out);
    assert.match(r.out, /identical/);
    assert.ok(readFileSync(rebuilt).equals(readFileSync(out)));
  });
});

describe("CLI: tensormerge methods", () => {
  it("lists every method of the registry with its inputs and the flags of its parameters", () => {
    const r = run(["methods"]);
    assert.equal(r.code, 0, r.err);
    for (const m of METHODS) assert.match(r.out, new RegExp(`^${m.name}: `, "m"), m.name);
    const json = JSON.parse(run(["methods", "ties", "--json"]).out) as { name: string; many?: { min: number }; params: { name: string; flags: string }[] }[];
    assert.equal(json.length, 1);
    assert.equal(json[0]!.name, "ties");
    assert.ok(json[0]!.many);
    const flags = Object.fromEntries(json[0]!.params.map((p) => [p.name, p.flags]));
    assert.equal(flags.density, "--density");
    assert.equal(flags.weight, "--weights (one per model)");
    assert.match(flags.alpha!, /--lambda/);
    for (const p of json[0]!.params.slice(1)) if (p.name !== "weight") assert.ok(p.flags.slice(2) in mergeCommand.options, p.flags);
    const typo = run(["methods", "tie"]);
    assert.equal(typo.code, 1);
    assert.match(typo.err, /METHOD_UNKNOWN.*did you mean "ties"/);
  });
});
