/**
 * Progress of a folder output names the shard being written ("writing shard 2/3
 * (model-00002-of-00003.safetensors)"), in the library's events and on the CLI's plain
 * (non-TTY) progress lines; the expected names come from the written index, read back here.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runMergekit } from "../../lib/hf/mergekit";
import type { MergeProgress } from "../../lib/merge";
import { tempDir } from "../helpers/models";
import { writeLlmFolder } from "./fixtures";
import { readHfFolder } from "./reader";

const CLI = join(__dirname, "../../lib/cli/main.js");

describe("hf: progress labels name the shard", () => {
  const tmp = tempDir("tm-hf-progress-");
  after(() => tmp.cleanup());
  let config = "";
  before(() => {
    const a = join(tmp.path, "A"), b = join(tmp.path, "B");
    writeLlmFolder(a, { family: "mistral", layers: 4, seed: 1, shards: 2 });
    writeLlmFolder(b, { family: "mistral", layers: 4, seed: 2, shards: 2 });
    config = join(tmp.path, "slerp.yml");
    writeFileSync(config, `merge_method: slerp\nbase_model: ${a}\nmodels:\n  - model: ${a}\n  - model: ${b}\nparameters:\n  t: 0.5\n`);
  });

  const expectedLabels = (out: string) => {
    const shards = [...new Set(Object.values(readHfFolder(out).index!.weight_map))].sort();
    assert.ok(shards.length >= 3, "the test needs several shards");
    return shards.map((name, k) => `writing shard ${k + 1}/${shards.length} (${name})`);
  };

  it("each progress event of a pass carries its shard's label, in order", async () => {
    const events: MergeProgress[] = [];
    const out = join(tmp.path, "lib-out");
    await runMergekit({ config, out, shardSize: "1500", onProgress: (p) => events.push(p) });
    const want = expectedLabels(out);
    const seen = [...new Set(events.map((e) => e.label))];
    // Progress is sampled every 200 ms, so a small pass may report no event: every label seen is the expected one for its pass, in order.
    assert.ok(seen.length >= 1);
    for (const e of events) assert.equal(e.label, want[e.pass! - 1], `pass ${e.pass}`);
    assert.deepEqual(seen, want.filter((l) => seen.includes(l)));
  });

  it("the CLI's progress lines say which shard", () => {
    const out = join(tmp.path, "cli-out");
    const r = spawnSync(process.execPath, [CLI, "mergekit", config, out, "--shard-size", "1500"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const want = expectedLabels(out);
    const lines = r.stderr.split("\n").filter((l) => l.startsWith("writing "));
    assert.ok(lines.length >= 1, r.stderr);
    for (const l of lines) assert.ok(want.some((w) => l.startsWith(`${w}: `)), l);
  });
});
