/**
 * Sweeps of model folders: `merge()` with several multipliers and folders as inputs writes one
 * sharded folder per value (`out-<M>`, or `<M>` in `out` replaced), every folder complete (index,
 * config, tokenizer, card, the recipe of its own value), the inputs read once for all of them.
 * Values checked against the weighted-sum formula written out here.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { reproduceModel } from "../../lib/recipes/reproduce";
import { tempDir } from "../helpers/models";
import { writeLlmFolder, toBf16, weightedSumF32, type StoredTensors } from "./fixtures";
import { readHfFolder } from "./reader";

const CLI = join(__dirname, "../../lib/cli/main.js");
const ws = weightedSumF32;

describe("hf: sweeps into folders", () => {
  const tmp = tempDir("tm-hf-sweep-");
  after(() => tmp.cleanup());
  let A: { dir: string; stored: StoredTensors }, B: { dir: string; stored: StoredTensors };
  before(() => {
    A = { dir: join(tmp.path, "A"), stored: writeLlmFolder(join(tmp.path, "A"), { family: "mistral", layers: 3, seed: 31, shards: 2, tokenizerTag: "A" }) };
    B = { dir: join(tmp.path, "B"), stored: writeLlmFolder(join(tmp.path, "B"), { family: "mistral", layers: 3, seed: 32, shards: 2 }) };
  });

  it("one sharded folder per value, each with its values, files and recipe; the inputs read once", async () => {
    const out = join(tmp.path, "mix");
    const values = [0.2, 0.65];
    const report = await merge({ a: A.dir, b: B.dir, method: "weighted-sum", multiplier: values, out, shardSize: "3KB" });
    const single = await merge({ a: A.dir, b: B.dir, method: "weighted-sum", multiplier: 0.2, out: join(tmp.path, "single"), shardSize: "3KB" });
    // Every input shard file read once (header and data) for both folders, as for one.
    const inputBytes = [A.dir, B.dir].flatMap((d) => readdirSync(d).filter((n) => n.endsWith(".safetensors")).map((n) => statSync(join(d, n)).size)).reduce((x, y) => x + y, 0);
    assert.equal(report.bytesRead, inputBytes, "each input read once for both folders");
    assert.equal(single.bytesRead, inputBytes);
    assert.deepEqual(report.outputs.map((o) => o.path), [join(tmp.path, "mix-0.2"), join(tmp.path, "mix-0.65")]);
    assert.ok(!existsSync(out));
    for (const m of values) {
      const dir = join(tmp.path, `mix-${m}`);
      const r = readHfFolder(dir);
      assert.ok(r.shards.length > 1 && r.index !== undefined, "sharded, with an index");
      for (const [name, t] of r.tensors) {
        const a = A.stored.get(name)!.values, b = B.stored.get(name)!.values;
        t.values.forEach((v, i) => assert.equal(v, toBf16(ws(a[i]!, b[i]!, m)), `${dir} ${name}[${i}]`));
      }
      assert.equal(JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")).tag, "A");
      assert.equal(r.config!.model_type, "mistral");
      assert.ok(readFileSync(join(dir, "README.md"), "utf8").includes(`mix-${m}`));
      for (const s of r.shards) assert.equal(JSON.parse(s.metadata.tensormerge_merge!).multiplier, m, `${dir}/${s.name}`);
    }
    // Each variant reproduces alone, from its own recipe.
    const rebuilt = await reproduceModel(join(tmp.path, "mix-0.65"), { out: join(tmp.path, "mix-0.65-rebuilt") });
    assert.equal(rebuilt.identical, true);
  });

  it("<M> in the output name is replaced; the CLI sweeps folders too", () => {
    const r = spawnSync(process.execPath, [CLI, "merge", "--method", "weighted-sum", "--a", A.dir, "--b", B.dir, "--multiplier", "0.1,0.3", "--out", join(tmp.path, "t<M>-merged"), "--shard-size", "4KB", "-q"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const made = readdirSync(tmp.path).filter((n) => n.endsWith("-merged")).sort();
    assert.deepEqual(made, ["t0.1-merged", "t0.3-merged"]);
    const t = readHfFolder(join(tmp.path, "t0.3-merged")).tensors.get("model.norm.weight")!;
    const a = A.stored.get("model.norm.weight")!.values, b = B.stored.get("model.norm.weight")!.values;
    t.values.forEach((v, i) => assert.equal(v, toBf16(ws(a[i]!, b[i]!, 0.3))));
  });
});
