/**
 * compareModels: the relative L2 distance per block, checked against the formula computed here
 * from values decoded by the test's own reader (not the library's).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { compareModels, CHUNK_ELEMENTS } from "../../lib/compare";
import { MergeError } from "../../lib/errors";
import { SD_BLOCKS } from "../../lib/blocks";
import { randomValues, readModel, tempDir, writeModel } from "../helpers/models";
import { BLOCK_KEYS, writeBlockModel } from "./helpers";

/** ‖X − B‖ / ‖B‖ over the given keys, in double, from decoded values. */
function relativeL2(base: string, other: string, keys: string[]): number {
  const B = readModel(base).tensors, X = readModel(other).tensors;
  let d = 0, n = 0;
  for (const k of keys) {
    const b = B.get(k)!.values, x = X.get(k)!.values;
    for (let i = 0; i < b.length; i++) {
      d += (x[i]! - b[i]!) ** 2;
      n += b[i]! ** 2;
    }
  }
  return Math.sqrt(d) / Math.sqrt(n);
}

describe("compareModels", function () {
  const tmp = tempDir("tm-compare-");
  after(() => tmp.cleanup());

  it("gives each model's relative L2 distance per block of the base's block map", async () => {
    const base = join(tmp.path, "base.safetensors"), x = join(tmp.path, "x.safetensors"), y = join(tmp.path, "y.safetensors");
    writeBlockModel(base, 1);
    writeBlockModel(x, 2);
    // y: the base except the middle block, so every other block is exactly 0.
    const b = readModel(base).tensors;
    writeBlockModel(y, 1, { in00: b.get(BLOCK_KEYS.in00)!.values, in04: b.get(BLOCK_KEYS.in04)!.values, mid: randomValues(6, 99), out11: b.get(BLOCK_KEYS.out11)!.values, te: b.get(BLOCK_KEYS.te)!.values, vae: b.get(BLOCK_KEYS.vae)!.values });
    const r = await compareModels([base, x, y]);
    assert.equal(r.grouping, "blocks");
    assert.deepEqual(r.blocks, [...SD_BLOCKS.names]);
    assert.equal(r.series.length, 2);
    const at = (s: number, block: string) => r.series[s]!.values[r.blocks.indexOf(block)];
    const expected: Record<string, string[]> = { BASE: [BLOCK_KEYS.te, BLOCK_KEYS.vae], IN00: [BLOCK_KEYS.in00], IN04: [BLOCK_KEYS.in04], M00: [BLOCK_KEYS.mid], OUT11: [BLOCK_KEYS.out11] };
    for (const [block, keys] of Object.entries(expected)) {
      const want = relativeL2(base, x, keys);
      assert.ok(Math.abs(at(0, block)! - want) <= 1e-12 * want, `${block}: ${at(0, block)} vs ${want}`);
    }
    assert.equal(at(0, "IN01"), null); // no tensor in that block
    assert.equal(at(1, "M00"), relativeL2(base, y, [BLOCK_KEYS.mid]));
    for (const block of ["BASE", "IN00", "IN04", "OUT11"]) assert.equal(at(1, block), 0);
    assert.equal(r.series[0]!.tensors, 6);
    assert.equal(r.unassigned, 0); // position_ids is not a float tensor
  });

  it("streams tensors larger than a chunk, skips what the other model lacks, and lets timers run", async () => {
    const n = CHUNK_ELEMENTS + 5;
    const base = join(tmp.path, "big-base.safetensors"), x = join(tmp.path, "big-x.safetensors");
    const big = "model.diffusion_model.output_blocks.3.0.weight"; // OUT03
    const bt = writeBlockModel(base, 1), xt = writeBlockModel(x, 2);
    writeModel(base, { ...bt, [big]: { dtype: "F32", shape: [n], values: randomValues(n, 5) } });
    writeModel(x, { ...xt, [big]: { dtype: "F32", shape: [n], values: randomValues(n, 6) }, [BLOCK_KEYS.mid]: { dtype: "F32", shape: [4], values: [1, 2, 3, 4] } });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const progress: number[] = [];
    const r = await compareModels([base, x], { onProgress: (p) => progress.push(p.fraction) }).finally(() => clearInterval(timer));
    const want = relativeL2(base, x, [big]);
    const got = r.series[0]!.values[r.blocks.indexOf("OUT03")]!;
    assert.ok(Math.abs(got - want) <= 1e-12 * want, `${got} vs ${want}`);
    assert.equal(r.series[0]!.values[r.blocks.indexOf("M00")], null); // shapes differ: left out
    assert.equal(r.series[0]!.skipped, 1);
    assert.equal(progress.at(-1), 1);
    assert.ok(ticks > 0, "the event loop ran during the comparison");
  });

  it("refuses fewer than two models and stops on an aborted signal", async () => {
    const base = join(tmp.path, "base.safetensors");
    await assert.rejects(compareModels([base]), (e: unknown) => e instanceof MergeError && e.code === "INVALID_ARGUMENT");
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(compareModels([base, base], { signal: controller.signal }), (e: unknown) => e instanceof MergeError && e.code === "ABORTED");
  });
});
