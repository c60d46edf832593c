/**
 * bench/a1111_way.py, the classic tool's order of work that `npm run bench -- --torch-way` times
 * beside ours, computes what the classic checkpoint merger computes: run on tiny models with the
 * real SD 1.5 keys by real PyTorch, its float tensors are the same bytes as tensormerge's output
 * (both engines) for a weighted sum saved as fp16 and an add difference kept fp32. This checks the
 * bench script (a wrong order of operations or rounding there fails it) and, through PyTorch,
 * that the classic rows are bit-identical to the classic merger on fp32 inputs.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { join, resolve } from "node:path";
import { readSafetensors } from "../../lib/formats/safetensors";
import { merge } from "../../lib/merge";
import { nativeAvailable } from "../../lib/engine";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../../lib/synthetic";
import { PYTHON, readTensorBytes, requireTorch, tempDir } from "../ckpt/helpers";

const SCRIPT = resolve(__dirname, "..", "..", "..", "bench", "a1111_way.py");
const FLOATS = new Set(["F32", "F16", "BF16", "F64"]);

describe("bench/a1111_way.py: the classic merger's order of work, in PyTorch", function () {
  this.timeout(300000);
  let tmp: ReturnType<typeof tempDir>;
  const models: string[] = [];

  before(async function () {
    requireTorch(this);
    tmp = tempDir("tm-a1111-way-");
    const layout = shrinkLayout(loadBuiltinLayout("sd15"), 64);
    for (const seed of [1, 2, 3]) {
      const path = join(tmp.dir, `m${seed}.safetensors`);
      await writeSyntheticModel(path, layout, { seed });
      models.push(path);
    }
  });
  after(() => tmp?.cleanup());

  const cases = [
    { method: "weighted-sum" as const, multiplier: 0.3, dtype: "fp16" as const, inputs: 2 },
    { method: "add-difference" as const, multiplier: 0.35, dtype: "fp32" as const, inputs: 3 },
  ];
  for (const c of cases) {
    it(`${c.method} → ${c.dtype}: the same float tensors as tensormerge (native and TS)`, async () => {
      const [a, b, cc] = models;
      const classic = join(tmp.dir, `classic-${c.method}.safetensors`);
      const args = [SCRIPT, classic, c.method, String(c.multiplier), c.dtype === "fp16" ? "1" : "0", a!, b!, ...(c.inputs === 3 ? [cc!] : [])];
      const r = spawnSync(PYTHON, args, { encoding: "utf8", timeout: 240000 });
      assert.equal(r.status, 0, r.stderr);
      const timing = JSON.parse(r.stdout.trim().split("\n").pop()!) as { seconds: number; peakRss: number };
      assert.ok(timing.seconds >= 0 && timing.peakRss > 0);
      const input = await readSafetensors(a!);
      const reference = await readSafetensors(classic);
      for (const engine of nativeAvailable() ? (["native", "js"] as const) : (["js"] as const)) {
        const out = join(tmp.dir, `ours-${c.method}-${engine}.safetensors`);
        await merge({ a: a!, b: b!, ...(c.inputs === 3 ? { c: cc! } : {}), method: c.method, multiplier: c.multiplier, dtype: c.dtype, out, engine, recipeMetadata: false });
        const ours = await readSafetensors(out);
        let compared = 0;
        for (const t of input.tensors) {
          // The classic tool also interpolates and halves every tensor whose key holds "model":
          // integer ones (position_ids) and the EMA's decay and update count. tensormerge copies
          // those from A as they are (README, "Key rules"), so only the other float tensors are
          // compared; the scheduler buffers (no "model" in their keys) are A's bytes on both sides.
          if (!FLOATS.has(t.dtype) || t.name.startsWith("model_ema.")) continue;
          const x = reference.byName.get(t.name), y = ours.byName.get(t.name);
          assert.ok(x && y, `${t.name} in both outputs`);
          assert.equal(y.dtype, x.dtype, `${t.name}: dtype`);
          assert.deepEqual(y.shape, x.shape, `${t.name}: shape`);
          assert.ok(readTensorBytes(out, y).equals(readTensorBytes(classic, x)), `${engine} ${c.method}: ${t.name} differs from the classic merger's bytes`);
          compared++;
        }
        assert.ok(compared > 1000, `compared ${compared} tensors`);
      }
    });
  }

  it("refuses a method the classic merger does not have", () => {
    const r = spawnSync(PYTHON, [SCRIPT, join(tmp.dir, "x.safetensors"), "sigmoid", "0.5", "0", models[0]!, models[1]!], { encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /usage/);
  });
});
