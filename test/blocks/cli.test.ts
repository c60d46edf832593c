/** `tensormerge blocks`, run as a user runs it, on small models with the real keys. */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { shrinkLayout, writeSyntheticModel, type LayoutEntry } from "../../lib/synthetic";
import { tempDir } from "../helpers/models";
import { loadLayout, writeShrunkModel } from "../library/fixtures";
import { readLayout } from "./layouts";
import { expectedFlux, expectedLdm } from "./rules";

const CLI = join(__dirname, "../../lib/cli/main.js");

interface BlocksJson {
  path: string;
  architecture: string;
  map: { id: string; names: string[]; legend: Record<string, string> } | null;
  blocks: { block: string; tensors: number; params: number }[];
  unassigned: { name: string; params: number }[];
}

/** Tensors and parameters per block by the independent rule. */
function expectedCounts(layout: LayoutEntry[], rule: (key: string) => string | null) {
  const blocks = new Map<string, { tensors: number; params: number }>();
  const none: string[] = [];
  for (const [name, shape] of layout) {
    const b = rule(name);
    if (b === null) {
      none.push(name);
      continue;
    }
    const c = blocks.get(b) ?? { tensors: 0, params: 0 };
    c.tensors++;
    c.params += shape.reduce((p, d) => p * d, 1);
    blocks.set(b, c);
  }
  return { blocks, none };
}

describe("CLI: blocks", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-cli-blocks-");
  after(() => tmp.cleanup());
  const cacheDir = join(tmp.path, "cache");
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, TENSORMERGE_CACHE_DIR: cacheDir, TENSORMERGE_MODELS: tmp.path } });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const sd15 = join(tmp.path, "sd15.safetensors");
  const sd15Layout = shrinkLayout(loadLayout("sd15"), 64);
  const flux = join(tmp.path, "flux.safetensors");
  const fluxLayout = shrinkLayout(readLayout("flux1_dev"), 256);

  before(async () => {
    await writeShrunkModel(sd15, loadLayout("sd15"), 64, 1);
    await writeSyntheticModel(flux, fluxLayout, { seed: 2 });
  });

  it("--json: the SD 1.5 blocks with tensors and params each, and the keys with no block", () => {
    const r = run(["blocks", sd15, "--json"]);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as BlocksJson;
    assert.equal(j.architecture, "sd1");
    assert.equal(j.map!.id, "sd");
    assert.equal(j.map!.names.length, 26);
    const expected = expectedCounts(sd15Layout, (k) => expectedLdm(k, false));
    assert.deepEqual(j.blocks.map((b) => b.block), j.map!.names);
    for (const b of j.blocks) assert.deepEqual({ tensors: b.tensors, params: b.params }, expected.blocks.get(b.block), b.block);
    assert.deepEqual(j.unassigned.map((u) => u.name).sort(), expected.none.sort());
  });

  it("--json: FLUX.1, 61 blocks (no text encoders in a bare transformer file)", () => {
    const r = run(["blocks", flux, "--json"]);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as BlocksJson;
    assert.equal(j.architecture, "flux");
    assert.equal(j.blocks.length, 61);
    const expected = expectedCounts(fluxLayout, expectedFlux);
    for (const b of j.blocks) {
      assert.deepEqual({ tensors: b.tensors, params: b.params }, expected.blocks.get(b.block) ?? { tensors: 0, params: 0 }, b.block);
    }
    assert.deepEqual(j.unassigned, []);
  });

  it("the table: one row per block with its keys, the count of keys with no block", () => {
    const r = run(["blocks", sd15]);
    assert.equal(r.code, 0, r.err);
    const rows = r.out.split("\n").filter((l) => /^(BASE|IN\d\d|M00|OUT\d\d)\s+\d+\s/.test(l));
    assert.equal(rows.length, 26);
    const expected = expectedCounts(sd15Layout, (k) => expectedLdm(k, false));
    for (const row of rows) {
      const [block, tensors] = row.split(/\s+/);
      assert.equal(Number(tensors), expected.blocks.get(block!)!.tensors, block);
      if (block === "IN00") assert.ok(row.endsWith("input_blocks.0, time_embed"), row);
      if (block === "OUT11") assert.ok(row.endsWith("output_blocks.11, out"), row);
    }
    assert.ok(r.out.includes(`no block (copied from A): ${expected.none.length} tensors`), r.out);
  });

  it("an architecture without a map, a missing model, no model", () => {
    const other = join(tmp.path, "other.safetensors");
    return writeSyntheticModel(other, [["layer.weight", [4, 4], "F32"]], { seed: 3 }).then(() => {
      const r = run(["blocks", other, "--json"]);
      assert.equal(r.code, 0, r.err);
      const j = JSON.parse(r.out) as BlocksJson;
      assert.equal(j.architecture, "unknown");
      assert.equal(j.map, null);
      assert.equal(j.unassigned.length, 1);
      const missing = run(["blocks", join(tmp.path, "nope.safetensors")]);
      assert.notEqual(missing.code, 0);
      assert.match(missing.err, /MODEL_NOT_FOUND|FILE_NOT_FOUND/);
      assert.equal(run(["blocks"]).code, 2);
    });
  });
});
