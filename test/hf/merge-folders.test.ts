/** `merge()` and `tensormerge merge` with Hugging Face folders: classic methods, per-layer blocks, a sharded folder out. */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { tempDir } from "../helpers/models";
import { layerOf, writeLlmFolder, toBf16, weightedSumF32, type StoredTensors } from "./fixtures";
import { readHfFolder } from "./reader";

const CLI = join(__dirname, "../../lib/cli/main.js");
const ws = weightedSumF32;

describe("hf: merge() with model folders", () => {
  const tmp = tempDir("tm-hf-merge-");
  after(() => tmp.cleanup());
  let A: { dir: string; stored: StoredTensors }, B: { dir: string; stored: StoredTensors };
  before(() => {
    A = { dir: join(tmp.path, "A"), stored: new Map() };
    B = { dir: join(tmp.path, "B"), stored: new Map() };
    A.stored = writeLlmFolder(A.dir, { family: "mistral", layers: 4, seed: 21, shards: 2, tokenizerTag: "A" });
    B.stored = writeLlmFolder(B.dir, { family: "mistral", layers: 4, seed: 22, shards: 3, tokenizerTag: "B" });
  });

  it("weighted-sum with a value per layer (EMB, L00…L03, OUT blocks) into a sharded folder", async () => {
    const out = join(tmp.path, "ws");
    const blocks = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9];
    const report = await merge({ a: A.dir, b: B.dir, method: "weighted-sum", blocks, out, shardSize: "3KB" });
    assert.ok(report.shards!.length > 1);
    const r = readHfFolder(out);
    for (const [name, t] of r.tensors) {
      const l = layerOf(name);
      const m = name.startsWith("model.embed_tokens") ? blocks[0]! : l >= 0 ? blocks[1 + l]! : blocks[5]!;
      const a = A.stored.get(name)!.values, b = B.stored.get(name)!.values;
      assert.deepEqual(t.values, a.map((x, i) => toBf16(ws(x, b[i]!, m))), name);
    }
    assert.equal(r.config!.torch_dtype, "bfloat16");
    assert.equal(JSON.parse(readFileSync(join(out, "tokenizer.json"), "utf8")).tag, "A");
    assert.ok(JSON.parse(r.shards[0]!.metadata.tensormerge_merge!).method === "weighted-sum");
  });

  it("per-key weights and a dtype: torch_dtype follows", async () => {
    const out = join(tmp.path, "fp16");
    await merge({ a: A.dir, b: B.dir, method: "weighted-sum", multiplier: 0.25, weights: [{ pattern: "mlp", value: 1 }], dtype: "fp16", out });
    const r = readHfFolder(out);
    assert.equal(r.config!.torch_dtype, "float16");
    const name = "model.layers.2.mlp.up_proj.weight";
    assert.equal(r.tensors.get(name)!.dtype, "F16");
    const b = B.stored.get(name)!.values;
    r.tensors.get(name)!.values.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= 2 ** -10 * Math.abs(b[i]!) + 2 ** -24));
  });

  it("refuses a file as B, a sweep into one folder twice, and options that only fit single files", async () => {
    const out = join(tmp.path, "refused");
    const file = join(A.dir, "model-00001-of-00002.safetensors");
    await assert.rejects(merge({ a: A.dir, b: file, method: "weighted-sum", out }), (e: { code: string; message: string }) => e.code === "INVALID_ARGUMENT" && e.message.startsWith("b:"));
    await assert.rejects(merge({ a: A.dir, b: B.dir, method: "weighted-sum", multiplier: [0.1, 0.1], out }), (e: { code: string; message: string }) => e.code === "INVALID_ARGUMENT" && /same folder/.test(e.message));
    await assert.rejects(merge({ a: A.dir, b: B.dir, method: "weighted-sum", prune: true, out }), (e: { message: string }) => e.message.startsWith("prune:"));
    assert.ok(!existsSync(out));
  });

  it("tensormerge blocks FOLDER lists EMB, L00…L03, OUT", () => {
    const r = spawnSync(process.execPath, [CLI, "blocks", A.dir, "--json"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).map.names, ["EMB", "L00", "L01", "L02", "L03", "OUT"]);
  });

  it("the CLI: tensormerge merge --a FOLDER --b FOLDER --out FOLDER --shard-size", () => {
    const out = join(tmp.path, "cli");
    const r = spawnSync(process.execPath, [CLI, "merge", "--method", "weighted-sum", "--a", A.dir, "--b", B.dir, "--multiplier", "0.5", "--out", out, "--shard-size", "2KB", "-q"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readHfFolder(out).shards.length > 2);
    const dry = spawnSync(process.execPath, [CLI, "merge", "--a", A.dir, "--b", B.dir, "--out", join(tmp.path, "cli-dry"), "--dry-run"], { encoding: "utf8" });
    assert.equal(dry.status, 0, dry.stderr);
    assert.ok(!existsSync(join(tmp.path, "cli-dry")));
  });
});

describe("hf: merge() over a base folder and model folders (ties)", () => {
  const tmp = tempDir("tm-hf-many-merge-");
  after(() => tmp.cleanup());
  it("ties with density 1 and two models is base + Σ agreeing w·δ / Σ their w, element by element", async () => {
    const dirs = ["base", "x", "y"].map((n) => join(tmp.path, n));
    const [base, x, y] = dirs.map((d, i) => writeLlmFolder(d, { family: "llama", layers: 2, seed: 40 + i, dtype: "F32", shards: 2 }));
    const out = join(tmp.path, "ties");
    const report = await merge({ method: "ties", base: dirs[0]!, models: [dirs[1]!, dirs[2]!], modelWeights: [0.5, 1.5], out, shardSize: "3KB" });
    assert.deepEqual(report.inputs.map((i) => i.slot), ["base", "model", "model"]);
    for (const [name, t] of readHfFolder(out).tensors) {
      const b = base!.get(name)!.values, p = x!.get(name)!.values, q = y!.get(name)!.values;
      t.values.forEach((v, i) => {
        // TIES (Yadav et al.) with nothing trimmed: elect the sign of Σ w·δ, average the agreeing w·δ.
        const d = [0.5 * (p[i]! - b[i]!), 1.5 * (q[i]! - b[i]!)];
        const w = [0.5, 1.5];
        const sign = d[0]! + d[1]! >= 0 ? 1 : -1;
        let num = 0, den = 0;
        d.forEach((dj, j) => { if (Math.sign(dj) === sign) { num += dj; den += w[j]!; } });
        const expected = b[i]! + (den === 0 ? 0 : num / den);
        assert.ok(Math.abs(v - expected) <= 1e-6 * (Math.abs(b[i]!) + Math.abs(d[0]!) + Math.abs(d[1]!)), `${name}[${i}]: ${v} vs ${expected}`);
      });
    }
  });
});
