/**
 * mergekit's passthrough `scale` (merge_methods/passthrough.py: `tensor * scale` where the
 * source's scale is set, else the tensor as is), checked bit for bit against real PyTorch
 * (test/hf/mergekit_reference.py, bf16 × scalar as mergekit computes it with dtype bfloat16).
 * The scale of each output tensor is written out here from mergekit's rules: a per-model
 * parameter, the first matching filter wins (against the input name), gradients over the
 * layers of the slice (t = i/(n−1)), the embedding at t = 0 of the first slice, the rest of the
 * non-layer tensors from the last slice.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { runMergekit } from "../../lib/hf/mergekit";
import { ENGINES } from "../helpers/engines";
import { tempDir } from "../helpers/models";
import { layerOf, writeLlmFolder, type StoredTensors } from "./fixtures";
import { readHfFolder } from "./reader";

const PYTHON = "/usr/bin/python3";
const REFERENCE = resolve(__dirname, "..", "..", "..", "test", "hf", "mergekit_reference.py");
const hasTorch = () => spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" }).status === 0;

describe("hf: mergekit passthrough scale", () => {
  const tmp = tempDir("tm-hf-pt-");
  after(() => tmp.cleanup());
  let A: { dir: string; stored: StoredTensors };
  before(() => {
    const dir = join(tmp.path, "A");
    A = { dir, stored: writeLlmFolder(dir, { family: "mistral", layers: 3, seed: 11, shards: 2 }) };
  });
  const yaml = (text: string) => {
    const path = join(tmp.fresh("cfg"), "config.yml");
    writeFileSync(path, text);
    return path;
  };

  for (const engine of ENGINES) {
    it(`scales the tensors of a slice by filter and gradient, bit for bit as PyTorch (${engine} engine)`, async function () {
      if (!hasTorch()) this.skip();
      const config = yaml([
        "slices:",
        "  - sources:",
        `      - model: ${A.dir}`,
        "        layer_range: [0, 2]",
        "        parameters:",
        "          scale:",
        "            - filter: o_proj",
        "              value: 0.0",
        "            - filter: down_proj",
        "              value: [0.5, 1.5]",
        "            - value: 1.0",
        "  - sources:",
        `      - model: ${A.dir}`,
        "        layer_range: [1, 3]",
        "merge_method: passthrough",
        "dtype: bfloat16",
      ].join("\n") + "\n");
      const out = join(tmp.path, `scaled-${engine}`);
      const report = await runMergekit({ config, out, engine, shardSize: "3000" });
      assert.equal(report.layers, 4);
      // Output layer o: A's layer o (first slice, t = o/1) for o < 2, A's layer o − 1 (second slice, no scale) after.
      const sources: Record<string, string> = {};
      const scales: Record<string, number | null> = {};
      for (const name of readHfFolder(out).tensors.keys()) {
        const o = layerOf(name);
        if (o < 0) {
          sources[name] = name;
          scales[name] = name.startsWith("model.embed_tokens.") ? 1.0 : null; // embedding: first slice, no filter matches → 1.0
          continue;
        }
        const suffix = name.slice(`model.layers.${o}.`.length);
        sources[name] = `model.layers.${o < 2 ? o : o - 1}.${suffix}`;
        scales[name] = o >= 2 ? null : suffix.includes("o_proj") ? 0 : suffix.includes("down_proj") ? [0.5, 1.5][o]! : 1.0;
      }
      const r = spawnSync(PYTHON, [REFERENCE], { input: JSON.stringify({ method: "passthrough", base: A.dir, sources, scales, dtype: "bfloat16" }), encoding: "utf8", maxBuffer: 1 << 26 });
      assert.equal(r.status, 0, r.stderr);
      const want = JSON.parse(r.stdout) as Record<string, number[]>;
      const got = readHfFolder(out).tensors;
      assert.deepEqual([...got.keys()].sort(), Object.keys(want).sort());
      let changed = 0;
      for (const [name, t] of got) {
        assert.equal(t.dtype, "BF16", name);
        assert.deepEqual(t.values, want[name], name);
        if (scales[name] !== null && scales[name] !== 1) changed++;
      }
      assert.ok(changed >= 4, "o_proj and down_proj of two layers are scaled");
      // A scale of 0 zeroes the tensor; 1.5 changes it (the check above would also pass for a no-op if both were wrong alike).
      assert.ok(got.get("model.layers.0.self_attn.o_proj.weight")!.values.every((v) => v === 0));
      assert.notDeepEqual(got.get("model.layers.1.mlp.down_proj.weight")!.values, A.stored.get("model.layers.1.mlp.down_proj.weight")!.values);
      assert.deepEqual(got.get("model.layers.1.self_attn.q_proj.weight")!.values, A.stored.get("model.layers.1.self_attn.q_proj.weight")!.values);
    });
  }

  it("a models: passthrough with one scale multiplies every tensor (fp32 product, rounded once to bf16)", async () => {
    const config = yaml(`merge_method: passthrough\nmodels:\n  - model: ${A.dir}\n    parameters: {scale: 0.3}\ndtype: bfloat16\n`);
    const out = join(tmp.path, "all-scaled");
    await runMergekit({ config, out });
    // Written out: bf16 round-to-nearest-even of fround(a · fround(0.3)).
    const bf16 = (x: number) => {
      const f = new Float32Array([x]);
      const u = new Uint32Array(f.buffer);
      u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16) << 16;
      return f[0]!;
    };
    const s = Math.fround(0.3);
    for (const [name, t] of readHfFolder(out).tensors) {
      const a = A.stored.get(name)!.values;
      t.values.forEach((v, i) => assert.equal(v, bf16(Math.fround(a[i]! * s)), `${name}[${i}]`));
    }
  });

  it("refuses a scale that is not a number, naming the field", async () => {
    const config = yaml(`merge_method: passthrough\nmodels:\n  - model: ${A.dir}\n    parameters: {scale: "big"}\n`);
    await assert.rejects(runMergekit({ config, out: join(tmp.path, "bad") }), (e: { code?: string; message?: string }) => e.code === "RECIPE_INVALID" && /scale/.test(e.message ?? ""));
  });
});
