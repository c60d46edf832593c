/**
 * Named parameters of the many-model methods per key and per block, from the command line
 * (`--density-weight REGEX=X`, `--density-blocks VALUES`, generated from the registry as
 * `--beta-weight` / `--beta-blocks` are for β) and from Node (`paramWeights`, `paramBlocks`).
 * Every tensor is checked against the published formula written out in reference.ts, with the
 * value its key must take computed here: the first matching pattern, else its block's value by
 * the documented block rules (test/blocks/rules.ts, no code shared with lib/blocks), else the
 * row's; a key in no block stays the base. Then the recipe names in the metadata, `reproduce`,
 * and refusals that name the flag.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { getFloat16, setFloat16 } from "@petamoriken/float16";
import { mergeCommand } from "../../lib/cli/commands/merge";
import { namedParams } from "../../lib/cli/method-params";
import { merge } from "../../lib/merge";
import { METHODS } from "../../lib/methods/registry";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../../lib/synthetic";
import { expectedLdm } from "../blocks/rules";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir } from "../helpers/models";
import { taskMergeRef } from "./many/reference";

const CLI = join(__dirname, "../../lib/cli/main.js");
function cli(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** SD 1.x block names in SuperMerger's list order. */
const SD_BLOCKS = ["BASE", ...Array.from({ length: 12 }, (_, i) => `IN${String(i).padStart(2, "0")}`), "M00", ...Array.from({ length: 12 }, (_, i) => `OUT${String(i).padStart(2, "0")}`)];
const roundF16 = (x: number) => {
  const v = new DataView(new ArrayBuffer(2));
  setFloat16(v, 0, x);
  return getFloat16(v, 0);
};

/**
 * The value a key takes: the first matching pattern, else its block's (null: the key is in no
 * block and stays the base).
 */
function expectedValue(key: string, patterns: [RegExp, number][], blocks: number[]): number | null {
  for (const [re, v] of patterns) if (re.test(key)) return v;
  const block = expectedLdm(key, false);
  return block === null ? null : blocks[SD_BLOCKS.indexOf(block)]!;
}

describe("named parameters per key and per block (CLI and Node)", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-named-");
  after(() => dir.cleanup());
  const base = join(dir.path, "base.safetensors"), m1 = join(dir.path, "m1.safetensors"), m2 = join(dir.path, "m2.safetensors");
  before(async () => {
    const layout = shrinkLayout(loadBuiltinLayout("sd15"), 64);
    await writeSyntheticModel(base, layout, { seed: 11 });
    await writeSyntheticModel(m1, layout, { seed: 12 });
    await writeSyntheticModel(m2, layout, { seed: 13 });
  });

  // Density per block: BASE (text encoder, VAE) 1 (no trim), IN blocks rising, M00 0.05, OUT blocks falling.
  const densityBlocks = SD_BLOCKS.map((_, i) => (i === 0 ? 1 : i <= 12 ? 0.1 + 0.05 * i : i === 13 ? 0.05 : 0.9 - 0.05 * (i - 14)));
  const densityPatterns: [RegExp, number][] = [[/output_blocks\.3\./, 0.1], [/output_blocks\./, 0.7]];
  const tiesArgs = [
    "--density", "0.3,0.6", // per model; every key here is in a block or stays the base, so blocks decide
    "--density-weight", "output_blocks\\.3\\.=0.1", "--density-weight", "output_blocks\\.=0.7",
    "--density-blocks", densityBlocks.join(","),
    "--lambda", "0.8", "--weights", "1,0.5",
  ];

  /** Checks every float tensor of `out` against `ref(key, base, models)`; returns how many were merged. */
  function checkAll(out: string, ref: (key: string, b: number[], ms: number[][]) => number[] | null, only?: (key: string, n: number) => boolean): { merged: number; kept: number } {
    const B = readModel(base).tensors, M1 = readModel(m1).tensors, M2 = readModel(m2).tensors, O = readModel(out).tensors;
    let merged = 0, kept = 0;
    for (const [key, t] of O) {
      if (t.dtype !== "F32" && t.dtype !== "F16") continue;
      if (only && !only(key, t.values.length)) continue;
      const b = B.get(key)!.values;
      const want = ref(key, b, [M1.get(key)!.values, M2.get(key)!.values]);
      if (want === null) {
        assert.deepEqual(t.values, b, `${key} is in no block: the base's values`);
        kept++;
        continue;
      }
      assert.deepEqual(t.values, t.dtype === "F16" ? want.map(roundF16) : want, key);
      merged++;
    }
    return { merged, kept };
  }

  const tiesRef = (key: string, b: number[], ms: number[][]) => {
    const d = expectedValue(key, densityPatterns, densityBlocks);
    return d === null ? null : taskMergeRef(b, ms, { weights: [1, 0.5], density: [d, d], lambda: 0.8, consensus: "sum", normalize: true });
  };

  for (const engine of ENGINES) {
    it(`ties: --density-weight wins over --density-blocks, which wins over per-model --density; every tensor as the formula (${engine})`, () => {
      const out = join(dir.path, `ties-${engine}.safetensors`);
      const r = cli(["merge", "--method", "ties", "--base", base, "--models", m1, m2, ...tiesArgs, "--engine", engine, "--out", out, "-q"]);
      assert.equal(r.code, 0, r.err);
      const { merged } = checkAll(out, tiesRef);
      assert.ok(merged > 1000, `${merged} tensors merged`);
    });
  }

  it("dare: --drop-rate-weight and --drop-rate-blocks set p per key; masks and the 1/(1−p) rescale as the formula", () => {
    const out = join(dir.path, "dare.safetensors");
    const dropBlocks = SD_BLOCKS.map((_, i) => 0.2 + 0.025 * i);
    const patterns: [RegExp, number][] = [[/cond_stage_model\..*layers\.0\./, 0.05]];
    const r = cli(["merge", "--method", "dare", "--base", base, "--models", m1, m2, "--drop-rate", "0.5", "--seed", "7",
      "--drop-rate-weight", "cond_stage_model\\..*layers\\.0\\.=0.05", "--drop-rate-blocks", dropBlocks.join(","), "--out", out, "-q"]);
    assert.equal(r.code, 0, r.err);
    const seen = new Set<number>();
    // The BigInt Philox of the reference is slow: the small tensors only (every block has some).
    const { merged } = checkAll(out, (key, b, ms) => {
      const p = expectedValue(key, patterns, dropBlocks);
      if (p === null) return null;
      seen.add(p);
      return taskMergeRef(b, ms, { weights: [1, 1], lambda: 1, drop: { rates: [p, p], seed: 7, name: key, rescale: true }, normalize: false });
    }, (_key, n) => n <= 1024);
    assert.ok(merged > 100, `${merged} tensors checked`);
    assert.ok(seen.size >= 10 && seen.has(0.05), `${seen.size} distinct drop rates checked`);
  });

  it("triple-sum: --beta-blocks and --beta-weight set β per block and per key (α per key too); every tensor as the formula", () => {
    const out = join(dir.path, "triple.safetensors");
    const betaBlocks = SD_BLOCKS.map((_, i) => (i % 5) / 10);
    const r = cli(["merge", "--method", "triple-sum", "--a", base, "--b", m1, "--c", m2, "--multiplier", "0.25", "--weight", "middle_block\\.=0.6",
      "--beta-blocks", betaBlocks.join(","), "--beta-weight", "cond_stage_model\\.=0.05", "--out", out, "-q"]);
    assert.equal(r.code, 0, r.err);
    const f = Math.fround;
    // sd-meh triple_sum: (1−α−β)·A + α·B + β·C, the weights in double then fp32, one rounding per operation.
    const { merged } = checkAll(out, (key, a, [b, c]) => {
      const beta = expectedValue(key, [[/cond_stage_model\./, 0.05]], betaBlocks);
      if (beta === null) return null;
      const alpha = /middle_block\./.test(key) ? 0.6 : 0.25;
      return a.map((x, i) => f(f(f(x * f(1 - alpha - beta)) + f(b![i]! * f(alpha))) + f(c![i]! * f(beta))));
    });
    assert.ok(merged > 1000, `${merged} tensors merged`);
  });

  it("merge() takes the same as paramWeights / paramBlocks and writes the same bytes as the CLI", async () => {
    const viaCli = join(dir.path, "ties-cli.safetensors"), viaApi = join(dir.path, "ties-api.safetensors");
    assert.equal(cli(["merge", "--method", "ties", "--base", base, "--models", m1, m2, ...tiesArgs, "--no-metadata", "--out", viaCli, "-q"]).code, 0);
    await merge({
      method: "ties", base, models: [m1, m2], modelWeights: [1, 0.5], modelParams: [{ density: 0.3 }, { density: 0.6 }], multiplier: 0.8,
      paramWeights: { density: [{ pattern: "output_blocks\\.3\\.", value: 0.1 }, { pattern: "output_blocks\\.", value: 0.7 }] },
      paramBlocks: { density: densityBlocks },
      recipeMetadata: false, out: viaApi,
    });
    assert.ok(readFileSync(viaApi).equals(readFileSync(viaCli)));
  });

  it("the metadata recipe keys them by parameter name (weights.density, blocks.density); reproduce rebuilds the merge bit for bit", () => {
    const out = join(dir.path, "ties-meta.safetensors");
    assert.equal(cli(["merge", "--method", "ties", "--base", base, "--models", m1, m2, ...tiesArgs, "--out", out, "-q"]).code, 0);
    const recipe = JSON.parse(readModel(out).metadata.tensormerge_recipe!) as { rows: { weights?: Record<string, { pattern: string; value: number }[]>; blocks?: Record<string, unknown> }[] };
    const row = recipe.rows.at(-1)!;
    assert.deepEqual(row.weights, { density: [{ pattern: "output_blocks\\.3\\.", value: 0.1 }, { pattern: "output_blocks\\.", value: 0.7 }] });
    assert.deepEqual(row.blocks, { density: densityBlocks.join(",") });
    // sd_merge_recipe shows the block values resolved on the base's map, as SuperMerger's weights_alpha.
    const shown = JSON.parse(readModel(out).metadata.sd_merge_recipe!) as Record<string, unknown>;
    assert.deepEqual(String(shown.weights_density).split(",").map(Number), densityBlocks);
    assert.deepEqual(shown.key_weights_density, ["output_blocks\\.3\\.=0.1", "output_blocks\\.=0.7"]);
    const rebuilt = join(dir.path, "ties-rebuilt.safetensors");
    const r = cli(["reproduce", out, "--model-dir", dir.path, "--out", rebuilt, "-q"]);
    assert.equal(r.code, 0, r.err + r.out);
    assert.ok(readFileSync(rebuilt).equals(readFileSync(out)));
  });

  it("every named parameter of the registry has its -weight and -blocks flags, none shadowing a fixed option", () => {
    const params = namedParams();
    assert.ok(params.some((p) => p.name === "density") && params.some((p) => p.name === "drop-rate"));
    for (const p of params) {
      assert.equal(p.weightFlag, `${p.flag}-weight`);
      assert.equal(p.blocksFlag, `${p.flag}-blocks`);
      assert.ok(mergeCommand.options[p.weightFlag]?.description.startsWith(`${p.name} for keys matching REGEX`), `--${p.weightFlag}`);
      assert.ok(mergeCommand.options[p.blocksFlag]?.description.startsWith(`${p.name} per block`), `--${p.blocksFlag}`);
      assert.equal(mergeCommand.options[p.weightFlag]!.multiple, true);
    }
    const json = JSON.parse(cli(["methods", "dare", "--json"]).out) as { params: { name: string; perKey?: string; perBlock?: string }[] }[];
    const dropRate = json[0]!.params.find((p) => p.name === "drop-rate")!;
    assert.deepEqual([dropRate.perKey, dropRate.perBlock], ["--drop-rate-weight", "--drop-rate-blocks"]);
    assert.ok(METHODS.some((m) => m.name === "dare"));
  });

  describe("refusals name the flag and write nothing", () => {
    const out = () => join(dir.path, `refused-${Math.random().toString(36).slice(2)}.safetensors`);
    const refused = (extra: string[], method: string, re: RegExp) => {
      const target = out();
      const r = cli(["merge", "--method", method, "--base", base, "--models", m1, m2, ...extra, "--out", target, "-q"]);
      assert.equal(r.code, 2, r.err); // the CLI's exit code for INVALID_ARGUMENT
      assert.match(r.err, /INVALID_ARGUMENT/);
      assert.match(r.err, re);
      assert.equal(existsSync(target), false);
    };
    it("a parameter the method lacks", () => {
      refused(["--density-weight", "x=0.3"], "dare", /--density-weight: dare has no parameter density \(ties has it; dare's own: .*--drop-rate/);
      refused(["--drop-rate-blocks", "GRAD_V"], "ties", /--drop-rate-blocks: ties has no parameter drop-rate/);
    });
    it("a per-key value out of range, not a number, without REGEX=, or with a bad pattern", () => {
      refused(["--density-weight", "input_blocks=1.5"], "ties", /--density-weight "input_blocks=1.5": density = 1.5 is outside ties's range for density \[0, 1\]/);
      refused(["--density-weight", "input_blocks=0.2,0.3"], "ties", /--density-weight "input_blocks=0.2,0.3": expected a number after the last "=", got "0.2,0.3" \(one value, for every model/);
      refused(["--drop-rate-weight", "input_blocks"], "dare", /--drop-rate-weight "input_blocks": expected REGEX=VALUE/);
      refused(["--density-weight", "(=0.3"], "ties", /--density-weight "\(=0.3": "\(" is not a valid regular expression/);
      refused(["--seed-weight", "x=1.5"], "dare", /--seed-weight "x=1.5": seed must be a whole number/);
    });
    it("block values of the wrong count, an unknown preset, or out of range, naming the flag and the block", () => {
      refused(["--density-blocks", "0.5,1"], "ties", /--density-blocks: .*takes 26 values, got 2/);
      refused(["--density-blocks", "GRAD_Q"], "ties", /--density-blocks: no preset named "GRAD_Q"/);
      const high = SD_BLOCKS.map((b) => (b === "IN03" ? 1.5 : 0.5)).join(",");
      refused(["--density-blocks", high], "ties", /--density-blocks: IN03 = 1.5 is outside ties's range for density/);
      refused(["--seed-blocks", SD_BLOCKS.map(() => 0.5).join(",")], "dare", /--seed-blocks: BASE must be a whole number/);
      refused(["--density-blocks", ""], "ties", /--density-blocks is empty/);
    });
    it("merge(): α and β have their own options, unknown names are refused before a file is opened", async () => {
      const rejects = (opts: object, re: RegExp) => assert.rejects(merge({ method: "ties", base, models: [m1, m2], out: out(), ...opts } as never), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && re.test(e.message));
      await rejects({ paramWeights: { alpha: [{ pattern: "x", value: 1 }] } }, /paramWeights\.alpha: α per key is weights/);
      await rejects({ paramBlocks: { beta: "GRAD_V" } }, /paramBlocks\.beta: β per key is betaWeights, per block betaBlocks/);
      await rejects({ paramWeights: { dnsity: [{ pattern: "x", value: 0.1 }] } }, /ties has no parameter "dnsity" \(its parameters are alpha, weight, density/);
      await rejects({ paramBlocks: { dnsity: "GRAD_V" } }, /paramBlocks\.dnsity: ties has no parameter "dnsity"/);
      await rejects({ paramWeights: { density: "x=0.1" } }, /paramWeights\.density must be a list of \{ pattern, value \}/);
      await rejects({ paramBlocks: ["GRAD_V"] }, /paramBlocks must be an object by parameter name/);
      await rejects({ base: join(dir.path, "missing.safetensors"), paramBlocks: { dnsity: "GRAD_V" } }, /dnsity/); // before the missing file
    });
  });
});
