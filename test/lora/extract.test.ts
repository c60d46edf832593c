/**
 * extract-lora: the SVD against torch.linalg (Eckart–Young: the optimal rank-r error is the norm
 * of the dropped singular values), the file read back by the tests' own reader with kohya's
 * keys and shapes (the real kohya key lists of ../shared/layouts), kohya's clamp, the text
 * encoder rule, and extract-then-bake reproducing the tuned model within that error.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { bake } from "../../lib/lora/bake";
import { extractLora } from "../../lib/lora/extract";
import { truncatedSvd } from "../../lib/lora/svd";
import { PYTHON, requireTorch } from "../ckpt/helpers";
import { randomValues, readModel, tempDir } from "../helpers/models";
import { kohyaNameOfSd1, loraEntries, writeBase, writeLora } from "./fixtures";

/** Optimal rank-r Frobenius errors of each matrix, from torch.linalg.svdvals in float64. */
function optimalErrors(dir: string, mats: { values: Float64Array; rows: number; cols: number; rank: number }[]): number[] {
  const bin = join(dir, "mats.bin");
  writeFileSync(bin, Buffer.concat(mats.map((m) => Buffer.from(m.values.buffer, m.values.byteOffset, m.values.byteLength))));
  const shapes = mats.map((m) => [m.rows, m.cols, m.rank]);
  const script = `
import json, sys, numpy as np, torch
shapes = json.loads(sys.argv[2]); data = np.fromfile(sys.argv[1], dtype=np.float64); at = 0; out = []
for rows, cols, r in shapes:
    a = torch.from_numpy(data[at:at + rows * cols].reshape(rows, cols).copy()); at += rows * cols
    s = torch.linalg.svdvals(a)
    out.append((s[r:] ** 2).sum().sqrt().item())
print(json.dumps(out))`;
  const r = spawnSync(PYTHON, ["-c", script, bin, JSON.stringify(shapes)], { encoding: "utf8", maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as number[];
}

function frobenius(a: ArrayLike<number>, b?: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - (b ? b[i]! : 0)) ** 2;
  return Math.sqrt(s);
}

describe("lora: extract", function () {
  this.timeout(180_000);
  const tmp = tempDir("tm-lora-extract-");
  const base = join(tmp.path, "base.safetensors"), tuned = join(tmp.path, "tuned.safetensors"), lora = join(tmp.path, "lora.safetensors");
  before(async () => {
    await writeBase(base, "sd15", 32);
    // The tuned model: the base plus a rank-16 LoCon (UNet, 3×3 convs and text encoder)
    writeLora(lora, loraEntries("lora_sd15_locon_r16", 32), 77, () => 16);
    await bake({ model: base, loras: [{ path: lora, ratio: 1.5 }], out: tuned, recipeMetadata: false });
  });
  after(() => tmp.cleanup());

  it("the truncated SVD's rank-r error is within 1% of torch.linalg's optimum (low-rank + noise, flat spectra, wide and tall)", function () {
    requireTorch(this);
    const mats = [[40, 24, 8], [24, 200, 8], [120, 120, 64], [64, 576, 16], [300, 80, 4]].map(([rows, cols, rank], i) => {
      const values = new Float64Array(rows! * cols!);
      const noise = randomValues(values.length, 1000 + i);
      for (let t = 0; t < 12; t++) {
        const u = randomValues(rows!, 10 * i + t), v = randomValues(cols!, 500 + 10 * i + t);
        for (let a = 0; a < rows!; a++) for (let b = 0; b < cols!; b++) values[a * cols! + b]! += (u[a]! * v[b]!) / (t + 1);
      }
      for (let k = 0; k < values.length; k++) values[k]! += i === 2 ? noise[k]! : 0.02 * noise[k]!;
      return { values, rows: rows!, cols: cols!, rank: rank! };
    });
    const optimal = optimalErrors(tmp.path, mats);
    mats.forEach((m, i) => {
      const svd = truncatedSvd(m.values, m.rows, m.cols, m.rank);
      const approx = new Float64Array(m.values.length);
      for (let a = 0; a < m.rows; a++) for (let c = 0; c < svd.rank; c++) {
        const us = svd.u[a * svd.rank + c]! * svd.s[c]!;
        for (let b = 0; b < m.cols; b++) approx[a * m.cols + b]! += us * svd.vt[c * m.cols + b]!;
      }
      const err = frobenius(m.values, approx);
      assert.ok(err <= optimal[i]! * 1.01 + 1e-12, `${m.rows}×${m.cols} rank ${m.rank}: ${err} vs optimal ${optimal[i]}`);
      // deterministic: the same bits again
      assert.deepEqual(truncatedSvd(m.values, m.rows, m.cols, m.rank).s, svd.s);
    });
  });

  it("writes kohya's keys and shapes (the real kohya LoCon key list), alpha = rank, ss_* metadata; each module within 1% of the optimal error; extract then bake gives the tuned model back", async function () {
    requireTorch(this);
    const out = join(tmp.fresh("x"), "extracted.safetensors");
    const report = await extractLora({ tuned, base, rank: 8, convRank: 4, out, clampQuantile: 1 });
    const got = readModel(out);
    const want = new Map(loraEntries("lora_sd15_locon_r16", 32).map(([n, s]) => [n, s]));
    assert.equal(got.tensors.size, want.size);
    for (const [name, down] of want) {
      if (!name.endsWith(".lora_down.weight")) continue;
      const module = name.slice(0, -".lora_down.weight".length);
      const up = want.get(`${module}.lora_up.weight`)!;
      const cols = down.slice(1).reduce((a, c) => a * c, 1);
      const r = Math.min(down.length === 4 && down[2] === 3 ? 4 : 8, up[0]!, cols);
      assert.deepEqual(got.tensors.get(name)?.shape, [r, ...down.slice(1)], name);
      assert.deepEqual(got.tensors.get(`${module}.lora_up.weight`)?.shape, [up[0]!, r, ...up.slice(2)], module);
      assert.deepEqual(got.tensors.get(`${module}.alpha`)?.values, [r], module);
    }
    assert.equal(got.metadata.ss_network_dim, "8");
    assert.equal(JSON.parse(got.metadata.ss_network_args!).conv_dim, "4");
    assert.equal(report.modules.length, 350);
    assert.ok(report.textEncoder.included);
    // Per module: ‖ΔW − up·down‖ within 1% of the optimum, from the file's own values.
    const b = readModel(base).tensors, tu = readModel(tuned).tensors;
    const sample = report.modules.filter((_, i) => i % 5 === 0); // text encoder, UNet linears, 1×1 and 3×3 convs
    assert.ok(sample.some((m) => m.name.endsWith("_conv1")) && sample.some((m) => m.name.startsWith("lora_te_")));
    const mats = sample.map((m) => {
      const key = [...b.keys()].find((k) => k.endsWith(".weight") && k.length > 0 && b.get(k)!.values.length === m.rows * m.cols && frobenius(tu.get(k)!.values, b.get(k)!.values) > 0 && nameOfKey(k) === m.name)!;
      assert.ok(key, m.name);
      const delta = Float64Array.from(tu.get(key)!.values, (v, i) => v - b.get(key)!.values[i]!);
      return { key, values: delta, rows: m.rows, cols: m.cols, rank: m.rank, name: m.name };
    });
    const optimal = optimalErrors(tmp.path, mats);
    mats.forEach((m, i) => {
      const up = got.tensors.get(`${m.name}.lora_up.weight`)!.values, down = got.tensors.get(`${m.name}.lora_down.weight`)!.values;
      const approx = new Float64Array(m.rows * m.cols);
      for (let a = 0; a < m.rows; a++) for (let c = 0; c < m.rank; c++) for (let j = 0; j < m.cols; j++) approx[a * m.cols + j]! += up[a * m.rank + c]! * down[c * m.cols + j]!;
      const err = frobenius(m.values, approx);
      assert.ok(err <= optimal[i]! * 1.01 + 1e-5 * frobenius(m.values), `${m.name}: ${err} vs optimal ${optimal[i]}`);
    });
    // Extract then bake: W_base + up·down (scale alpha/rank = 1) is the tuned model within the same error.
    const back = join(tmp.fresh("back"), "back.safetensors");
    await bake({ model: base, loras: [out], out: back, recipeMetadata: false });
    const bk = readModel(back).tensors;
    mats.forEach((m, i) => {
      const err = frobenius(tu.get(m.key)!.values, bk.get(m.key)!.values);
      assert.ok(err <= optimal[i]! * 1.01 + 1e-5 * frobenius(m.values), `${m.key}: baked back ${err} vs optimal ${optimal[i]}`);
    });
  });

  it("kohya's clamp: up and down clipped to ±(the 0.99 quantile of their values together)", async () => {
    const out = join(tmp.fresh("clamp"), "clamped.safetensors");
    const report = await extractLora({ tuned, base, rank: 8, out, recipeMetadata: false });
    const got = readModel(out).tensors;
    let clipped = 0;
    for (const m of report.modules.slice(0, 20)) {
      const up = got.get(`${m.name}.lora_up.weight`)!.values, down = got.get(`${m.name}.lora_down.weight`)!.values;
      const all = [...up, ...down];
      const max = Math.max(...all.map(Math.abs));
      // the largest magnitude is the clamp bound, reached by at least 1% of the values' tail
      const atBound = all.filter((v) => Math.abs(Math.abs(v) - max) <= 1e-7 * max).length;
      if (atBound >= Math.floor(0.01 * all.length)) clipped++;
    }
    assert.ok(clipped >= 18, `modules visibly clamped: ${clipped} of 20`);
  });

  it("a text encoder that did not change is left out, and the report and warning say so with the threshold", async () => {
    const unetOnly = join(tmp.path, "unet-only-lora.safetensors");
    writeLora(unetOnly, loraEntries("lora_sd15_kohya_r32", 32).filter(([n]) => n.startsWith("lora_unet")), 5, () => 16);
    const tunedUnet = join(tmp.path, "tuned-unet.safetensors");
    await bake({ model: base, loras: [unetOnly], out: tunedUnet, recipeMetadata: false });
    const out = join(tmp.fresh("te"), "x.safetensors");
    const r = await extractLora({ tuned: tunedUnet, base, rank: 4, out, recipeMetadata: false });
    assert.equal(r.textEncoder.included, false);
    assert.equal(r.textEncoder.maxDifference, 0);
    assert.match(r.warnings[0]!, /text encoder left out.*threshold 0\.01/);
    assert.ok([...readModel(out).tensors.keys()].every((k) => k.startsWith("lora_unet_")));
    assert.equal(r.modules.length, 192);
  });
});

/** The kohya module name of a checkpoint key, by the tests' own mapping. */
function nameOfKey(key: string): string | undefined {
  return kohyaNameOfSd1(key);
}
