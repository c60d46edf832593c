/**
 * mergekit configurations on small Llama / Mistral / Qwen2 folders, each result checked against
 * mergekit's formulas written out here (gradient interpolation, t per layer of a slice, linear and
 * task-arithmetic sums in float64), read back with the tests' own reader.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { evaluateSetting } from "../../lib/hf/mergekit-config";
import { runMergekit } from "../../lib/hf/mergekit";
import { ENGINES } from "../helpers/engines";
import { tempDir } from "../helpers/models";
import { layerOf, writeLlmFolder, type StoredTensors } from "./fixtures";
import { readHfFolder } from "./reader";

const CLI = join(__dirname, "../../lib/cli/main.js");

/** mergekit's gradient rule, written out: t·(n−1) split into an index and a fraction. */
function gradient(values: number[], t: number): number {
  const scaled = t * (values.length - 1);
  const i = Math.floor(scaled);
  const j = Math.min(values.length - 1, i + 1);
  return (1 - (scaled - i)) * values[i]! + (scaled - i) * values[j]!;
}

/** t of an output tensor in a one-slice merge of `layers` layers: embedding 0, layer i i/(L−1), the rest 1. */
function tOf(name: string, layers: number): number {
  const l = layerOf(name);
  if (l >= 0) return layers > 1 ? l / (layers - 1) : 1;
  return name.startsWith("model.embed_tokens.") ? 0 : 1;
}

/** One bf16 unit in the last place at x (8 significant bits). */
function bf16Ulp(x: number): number {
  return x === 0 ? 2 ** -133 : 2 ** (Math.floor(Math.log2(Math.abs(x))) - 7);
}

describe("hf: mergekit configurations", () => {
  const tmp = tempDir("tm-hf-mk-");
  after(() => tmp.cleanup());
  const yaml = (text: string) => {
    const path = join(tmp.fresh("cfg"), "config.yml");
    writeFileSync(path, text);
    return path;
  };
  const models: Record<string, { dir: string; stored: StoredTensors }> = {};
  before(() => {
    const make = (name: string, spec: Parameters<typeof writeLlmFolder>[1]) => {
      const dir = join(tmp.path, name);
      models[name] = { dir, stored: writeLlmFolder(dir, spec) };
    };
    make("mistralA", { family: "mistral", layers: 4, seed: 1, shards: 2, tokenizerTag: "A" });
    make("mistralB", { family: "mistral", layers: 4, seed: 2, shards: 3, tokenizerTag: "B" });
    make("mistralC", { family: "mistral", layers: 4, seed: 3, shards: 1, tokenizerTag: "C" });
    make("llamaBase", { family: "llama", layers: 3, seed: 4, dtype: "F16", shards: 2 });
    make("llama1", { family: "llama", layers: 3, seed: 5, dtype: "F16", shards: 2 });
    make("llama2", { family: "llama", layers: 3, seed: 6, dtype: "F16", shards: 1 });
    make("qwenA", { family: "qwen2", layers: 2, seed: 7, shards: 2 });
    make("qwenB", { family: "qwen2", layers: 2, seed: 8, shards: 2 });
    make("qwenVocab", { family: "qwen2", layers: 2, seed: 9, config: { vocab_size: 40, model_type: "qwen2" } });
  });

  it("evaluates parameters as mergekit's evaluate_setting: gradients, filters (first match wins), scalars", () => {
    assert.equal(evaluateSetting("x", 0.3, 0.7), 0.3);
    // [0, 0.5, 0.3, 0.7, 1] at t = 0.3: scaled 1.2 → 0.8·0.5 + 0.2·0.3.
    assert.ok(Math.abs((evaluateSetting("x", [0, 0.5, 0.3, 0.7, 1], 0.3) as number) - (0.8 * 0.5 + 0.2 * 0.3)) < 1e-15);
    assert.equal(evaluateSetting("x", [2, 4], 1), 4);
    const filtered = [{ filter: "self_attn", value: [0, 1] }, { filter: "mlp", value: 0.25 }, { value: 0.5 }];
    assert.equal(evaluateSetting("model.layers.1.self_attn.q_proj.weight", filtered, 0.5), 0.5);
    assert.equal(evaluateSetting("model.layers.1.mlp.up_proj.weight", filtered, 0.5), 0.25);
    assert.equal(evaluateSetting("model.norm.weight", filtered, 0.5), 0.5);
    assert.equal(evaluateSetting("model.norm.weight", [{ filter: "mlp", value: 1 }], 0.5), undefined);
  });

  it("passthrough of slices: a deeper model, layers renumbered, bytes as in the sources, sharded", async () => {
    const { mistralA: A, mistralB: B } = models;
    const config = yaml(`slices:\n  - sources:\n      - model: ${A!.dir}\n        layer_range: [0, 3]\n  - sources:\n      - model: ${B!.dir}\n        layer_range: [1, 4]\nmerge_method: passthrough\ndtype: bfloat16\n`);
    const out = join(tmp.path, "franken");
    const report = await runMergekit({ config, out, shardSize: "2500" });
    assert.equal(report.layers, 6);
    const r = readHfFolder(out);
    assert.ok(r.shards.length > 2);
    for (const s of r.shards) assert.ok(s.dataBytes <= 2500 || s.tensors.length === 1, `${s.name} holds ${s.dataBytes} bytes`);
    // Output layer o: A's layer o for o < 3, B's layer o − 3 + 1 after; embedding from A, the rest from B.
    const source = (name: string) => {
      const o = layerOf(name);
      if (o < 0) return name.startsWith("model.embed_tokens.") ? { m: A!, name } : { m: B!, name };
      const suffix = name.slice(`model.layers.${o}.`.length);
      return o < 3 ? { m: A!, name: `model.layers.${o}.${suffix}` } : { m: B!, name: `model.layers.${o - 3 + 1}.${suffix}` };
    };
    const expectedNames = [...A!.stored.keys()].filter((n) => n.startsWith("model.embed_tokens"));
    for (let o = 0; o < 6; o++) for (const n of A!.stored.keys()) if (layerOf(n) === 0) expectedNames.push(n.replace("model.layers.0.", `model.layers.${o}.`));
    for (const n of B!.stored.keys()) if (layerOf(n) < 0 && !n.startsWith("model.embed_tokens")) expectedNames.push(n);
    assert.deepEqual([...r.tensors.keys()].sort(), [...expectedNames].sort());
    // State-dict order across the shards: embedding, layers 0…5, then norm and lm_head.
    const order = r.shards.flatMap((s) => s.tensors);
    const rank = (n: string) => (n.startsWith("model.embed_tokens") ? -1 : layerOf(n) >= 0 ? layerOf(n) : 99);
    for (let i = 1; i < order.length; i++) assert.ok(rank(order[i - 1]!) <= rank(order[i]!), `${order[i - 1]} before ${order[i]}`);
    for (const [name, t] of r.tensors) {
      const s = source(name);
      assert.deepEqual(t.values, s.m.stored.get(s.name)!.values, name);
    }
    assert.equal(r.config!.num_hidden_layers, 6);
    assert.equal(r.config!.torch_dtype, "bfloat16");
    assert.equal(r.config!.model_type, "mistral");
    assert.equal(JSON.parse(readFileSync(join(out, "tokenizer.json"), "utf8")).tag, "A", "tokenizer from the base (the first source)");
    assert.ok(existsSync(join(out, "generation_config.json")));
    const card = readFileSync(join(out, "README.md"), "utf8");
    assert.ok(card.includes("passthrough") && card.includes("layer_range: [1, 4]"));
    assert.ok(r.shards.every((s) => s.metadata.format === "pt" && s.metadata.tensormerge_mergekit_config!.includes("passthrough")));
  });

  for (const engine of ENGINES) {
    it(`linear of three models with gradient and filtered weights, float32 out (${engine} engine)`, async () => {
      const { mistralA: A, mistralB: B, mistralC: C } = models;
      const config = yaml([
        "models:",
        `  - model: ${A!.dir}`,
        "    parameters:",
        "      weight:",
        "        - filter: self_attn",
        "          value: [1, 0.5, 0]",
        "        - filter: mlp",
        "          value: 0.25",
        "        - value: 1",
        `  - model: ${B!.dir}`,
        "    parameters:",
        "      weight: [0, 2]",
        `  - model: ${C!.dir}`,
        "    parameters:",
        "      weight: 0.5",
        "merge_method: linear",
        "out_dtype: float32",
        "tokenizer_source: " + B!.dir,
        "",
      ].join("\n"));
      const out = join(tmp.path, `linear-${engine}`);
      await runMergekit({ config, out, engine, shardSize: "4KB" });
      const r = readHfFolder(out);
      assert.equal(r.tensors.size, A!.stored.size);
      for (const [name, t] of r.tensors) {
        const tt = tOf(name, 4);
        const wA = name.includes("self_attn") ? gradient([1, 0.5, 0], tt) : name.includes("mlp") ? 0.25 : 1;
        const wB = gradient([0, 2], tt);
        const wC = 0.5;
        const a = A!.stored.get(name)!.values, b = B!.stored.get(name)!.values, c = C!.stored.get(name)!.values;
        assert.equal(t.dtype, "F32");
        t.values.forEach((v, i) => {
          const expected = (wA * a[i]! + wB * b[i]! + wC * c[i]!) / (wA + wB + wC);
          // fp32 steps: a few roundings of the terms' size (they may cancel), far below a wrong weight's effect.
          const scale = (Math.abs(wA * a[i]!) + Math.abs(wB * b[i]!) + Math.abs(wC * c[i]!)) / (wA + wB + wC);
          assert.ok(Math.abs(v - expected) <= 1e-6 * scale + 1e-12, `${name}[${i}]: ${v} vs ${expected}`);
        });
      }
      assert.equal(r.config!.torch_dtype, "float32");
      assert.equal(JSON.parse(readFileSync(join(out, "tokenizer_config.json"), "utf8")).tag, "B", "tokenizer_source");
    });
  }

  for (const normalize of [false, true]) {
    it(`task_arithmetic over a Llama base, per-model weights, normalize ${normalize}, fp16 like the base`, async () => {
      const { llamaBase: base, llama1: m1, llama2: m2 } = models;
      const config = yaml([
        "merge_method: task_arithmetic",
        `base_model: ${base!.dir}`,
        "models:",
        `  - model: ${m1!.dir}`,
        "    parameters:",
        "      weight: [0.7, 0.3]",
        `  - model: ${m2!.dir}`,
        "    parameters:",
        "      weight: 0.4",
        "parameters:",
        `  normalize: ${normalize}`,
        "",
      ].join("\n"));
      const out = join(tmp.path, `ta-${normalize}`);
      await runMergekit({ config, out });
      const r = readHfFolder(out);
      assert.equal(r.shards.length, 1, "5GB default: one shard");
      for (const [name, t] of r.tensors) {
        const w1 = gradient([0.7, 0.3], tOf(name, 3)), w2 = 0.4;
        const d = normalize ? w1 + w2 : 1;
        const x0 = base!.stored.get(name)!.values, x1 = m1!.stored.get(name)!.values, x2 = m2!.stored.get(name)!.values;
        assert.equal(t.dtype, "F16");
        t.values.forEach((v, i) => {
          const expected = x0[i]! + (w1 * (x1[i]! - x0[i]!) + w2 * (x2[i]! - x0[i]!)) / d;
          // fp16 has 11 significant bits: within one unit in the last place.
          const ulp = Math.abs(expected) < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(Math.abs(expected))) - 10);
          assert.ok(Math.abs(v - expected) <= ulp, `${name}[${i}]: ${v} vs ${expected}`);
        });
      }
      assert.equal(r.config!.torch_dtype, "float16");
    });
  }

  it("linear of two Qwen2 models in bf16 stays within a bf16 unit of mergekit's sum", async () => {
    const { qwenA: A, qwenB: B } = models;
    const config = yaml(`models:\n  - model: ${A!.dir}\n    parameters:\n      weight: 3\n  - model: ${B!.dir}\n    parameters:\n      weight: 1\nmerge_method: linear\ndtype: bfloat16\n`);
    const out = join(tmp.path, "qwen-linear");
    await runMergekit({ config, out, shardSize: "3KB" });
    const r = readHfFolder(out);
    assert.ok(r.tensors.has("model.layers.1.self_attn.q_proj.bias"));
    for (const [name, t] of r.tensors) {
      const a = A!.stored.get(name)!.values, b = B!.stored.get(name)!.values;
      t.values.forEach((v, i) => {
        const expected = (3 * a[i]! + b[i]!) / 4;
        assert.ok(Math.abs(v - expected) <= bf16Ulp(expected), `${name}[${i}]`);
      });
    }
  });

  describe("refuses what it does not do, naming the field", () => {
    const refuses = async (text: (m: typeof models) => string, code: string, mention: RegExp) => {
      const config = yaml(text(models));
      const out = join(tmp.path, `refused-${Math.random().toString(16).slice(2)}`);
      await assert.rejects(runMergekit({ config, out }), (e: { code: string; message: string }) => {
        assert.equal(e.code, code, e.message);
        assert.match(e.message, mention);
        return true;
      });
      assert.ok(!existsSync(out));
    };
    const two = (m: typeof models, extra = "") => `models:\n  - model: ${m.mistralA!.dir}\n    parameters:\n      weight: 1\n  - model: ${m.mistralB!.dir}\n    parameters:\n      weight: 1\n${extra}`;
    it("an unknown top-level field", () => refuses((m) => `${two(m)}merge_method: linear\nfoo: 1\n`, "RECIPE_INVALID", /foo/));
    it("modules", () => refuses((m) => `${two(m)}merge_method: linear\nmodules: {}\n`, "RECIPE_INVALID", /modules/));
    it("an unsupported merge_method", () => refuses((m) => `${two(m)}merge_method: della\n`, "RECIPE_INVALID", /merge_method.*della/));
    it("tokenizer_source: union", () => refuses((m) => `${two(m)}merge_method: linear\ntokenizer_source: union\n`, "RECIPE_INVALID", /tokenizer_source/));
    it("a parameter the method does not read", () => refuses((m) => `${two(m)}merge_method: linear\nparameters:\n  density: 0.5\n`, "RECIPE_INVALID", /parameters\.density/));
    it("a missing weight", () => refuses((m) => `models:\n  - model: ${m.mistralA!.dir}\n  - model: ${m.mistralB!.dir}\n    parameters: {weight: 1}\nmerge_method: linear\n`, "RECIPE_INVALID", /weight/));
    it("a list of strings", () => refuses((m) => `models:\n  - model: ${m.mistralA!.dir}\n    parameters: {weight: [a, b]}\nmerge_method: linear\n`, "RECIPE_INVALID", /models\[0\]\.parameters\.weight/));
    it("a layer_range past the model's layers", () => refuses((m) => `slices:\n  - sources:\n      - model: ${m.mistralA!.dir}\n        layer_range: [2, 5]\nmerge_method: passthrough\n`, "RECIPE_INVALID", /layer_range/));
    it("an empty layer_range", () => refuses((m) => `slices:\n  - sources:\n      - model: ${m.mistralA!.dir}\n        layer_range: [2, 2]\nmerge_method: passthrough\n`, "RECIPE_INVALID", /layer_range.*half-open/));
    it("slice sources of different lengths", () => refuses((m) => `slices:\n  - sources:\n      - model: ${m.mistralA!.dir}\n        layer_range: [0, 2]\n      - model: ${m.mistralB!.dir}\n        layer_range: [0, 3]\nmerge_method: linear\n`, "RECIPE_INVALID", /sources/));
    it("a model that is not a local folder", () => refuses(() => `models:\n  - model: mistralai/Mistral-7B-v0.1\n    parameters: {weight: 1}\nmerge_method: linear\n`, "RECIPE_INVALID", /models\[0\]\.model.*local folder/));
    it("duplicate keys in the YAML", () => refuses((m) => `${two(m)}merge_method: linear\nmerge_method: ties\n`, "RECIPE_INVALID", /YAML/));
    it("density in task_arithmetic (mergekit ignores it there)", () => refuses((m) => `merge_method: task_arithmetic\nbase_model: ${m.llamaBase!.dir}\nmodels:\n  - model: ${m.llama1!.dir}\n    parameters: {weight: 1, density: 0.5}\n`, "RECIPE_INVALID", /density/));
    it("models of different families", () => refuses((m) => `models:\n  - model: ${m.mistralA!.dir}\n    parameters: {weight: 1}\n  - model: ${m.llama1!.dir}\n    parameters: {weight: 1}\nmerge_method: linear\n`, "ARCHITECTURE_MISMATCH", /model_type differs/));
    it("a vocabulary mismatch, clearly", () => refuses((m) => `models:\n  - model: ${m.mistralA!.dir}\n    parameters: {weight: 1}\n  - model: ${m.qwenVocab!.dir}\n    parameters: {weight: 1}\nmerge_method: linear\n`, "ARCHITECTURE_MISMATCH", /model_type differs|vocab_size differs/));
  });

  describe("the output folder", () => {
    const linear = () => yaml(`models:\n  - model: ${models.qwenA!.dir}\n    parameters: {weight: 1}\n  - model: ${models.qwenB!.dir}\n    parameters: {weight: 1}\nmerge_method: linear\n`);
    const temps = () => readdirSync(tmp.path).filter((n) => n.includes(".tensormerge-"));

    it("a dry run writes nothing and lists the shards", async () => {
      const out = join(tmp.path, "dry");
      const r = await runMergekit({ config: linear(), out, dryRun: true, shardSize: "3KB" });
      assert.equal(r.dryRun, true);
      assert.ok(r.shards.length > 1);
      assert.ok(r.files.includes("model.safetensors.index.json"));
      assert.ok(!existsSync(out));
    });

    it("a failed run leaves nothing under the final name, and no temporary folder", async () => {
      const out = join(tmp.path, "failed");
      let calls = 0;
      await assert.rejects(
        runMergekit({ config: linear(), out, shardSize: "3KB", engine: "js", onProgress: (p) => { if ((p.pass ?? 1) >= 2 && ++calls >= 1) throw new Error("stop in the second shard"); } }),
        (e: Error) => /second shard|cancelled/.test(e.message),
      );
      assert.ok(!existsSync(out));
      assert.deepEqual(temps(), []);
    });

    it("an existing folder is kept unless --overwrite, which replaces only a model folder", async () => {
      const out = join(tmp.path, "exists");
      await runMergekit({ config: linear(), out });
      await assert.rejects(runMergekit({ config: linear(), out }), (e: { code: string }) => e.code === "OUTPUT_EXISTS");
      writeFileSync(join(out, "marker"), "old");
      await runMergekit({ config: linear(), out, overwrite: true });
      assert.ok(!existsSync(join(out, "marker")), "replaced as a whole");
      readHfFolder(out);
      const notModel = tmp.fresh("not-a-model");
      writeFileSync(join(notModel, "notes.txt"), "mine");
      await assert.rejects(runMergekit({ config: linear(), out: notModel, overwrite: true }), (e: { code: string }) => e.code === "INVALID_ARGUMENT");
      assert.equal(readFileSync(join(notModel, "notes.txt"), "utf8"), "mine");
      await assert.rejects(runMergekit({ config: linear(), out: join(models.qwenA!.dir, "sub") }), (e: { code: string }) => e.code === "INPUT_IS_TARGET");
      assert.deepEqual(temps(), []);
    });

    it("removes the temporary folder a killed run left (dead writer, untouched for a while), and only that", async () => {
      const out = join(tmp.path, "after-kill");
      const stale = join(tmp.path, ".after-kill.tensormerge-4194305-00aa11bb.tmp"); // above Linux's pid_max: no such process
      const live = join(tmp.path, `.after-kill.tensormerge-${process.pid}-00cc22dd.tmp`);
      const other = join(tmp.path, ".someone-else.tensormerge-4194305-00aa11bb.tmp");
      for (const d of [stale, live, other]) {
        mkdirSync(d);
        writeFileSync(join(d, "model-00001-of-00002.safetensors"), "partial");
        utimesSync(d, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
      }
      const r = await runMergekit({ config: linear(), out });
      assert.deepEqual(r.removedTemps, [stale]);
      assert.ok(!existsSync(stale) && existsSync(live) && existsSync(other));
      for (const d of [live, other]) rmSync(d, { recursive: true });
    });

    it("the CLI runs a config and inspects the result", () => {
      const out = join(tmp.path, "cli-out");
      const r = spawnSync(process.execPath, [CLI, "mergekit", linear(), out, "--shard-size", "3KB", "-q"], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /wrote .*cli-out: linear/);
      const shards = readHfFolder(out).shards.length;
      const i = spawnSync(process.execPath, [CLI, "inspect", out], { encoding: "utf8" });
      assert.equal(i.status, 0, i.stderr);
      assert.match(i.stdout, /qwen2/);
      assert.match(i.stdout, new RegExp(`in ${shards} shards`));
      assert.match(i.stdout, /tensormerge_mergekit_config/);
      const bad = spawnSync(process.execPath, [CLI, "mergekit", linear(), join(tmp.path, "cli-bad"), "--shard-size", "lots"], { encoding: "utf8" });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--shard-size/);
    });
  });
});
