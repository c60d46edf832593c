/**
 * Tucker (CP) LyCORIS modules baked, against real PyTorch (Debian's, /usr/bin/python3) running
 * AUTOMATIC1111's formulas (extensions-builtin/Lora/lyco_helpers.py, written out in the script):
 *   LoCon lora_mid: einsum("n m k l, i n, m j -> i j k l", mid, up, down)   (rebuild_cp_decomposition)
 *   LoHa hada_t*:   make_weight_cp(t, wa, wb) = einsum("i j k l, i r -> r j k l", einsum("i j k l, j r -> i r k l", t, wb), wa)
 *   LoKr lokr_t2:   w2 = make_weight_cp(t2, w2a, w2b), ΔW = kron(w1[:, :, None, None], w2)  (network_lokr.make_kron)
 * in float64 on the factors as stored, compared with our fp32 output within fp32 rounding; the
 * native and TS engines give the same bytes; the Tucker factor file is gone after the bake.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bake } from "../../lib/lora/bake";
import { openLora } from "../../lib/lora/read";
import { PYTHON, requireTorch } from "../ckpt/helpers";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel, type TestDtype, type TestTensor } from "../helpers/models";
import { writeBase } from "./fixtures";

const SCRIPT = `
import json, sys, torch
spec = json.load(open(sys.argv[1]))
def cp(t, wa, wb):  # A1111 lyco_helpers.make_weight_cp
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)
worst, changed = 0.0, 0.0
for m in spec["modules"]:
    d = lambda k: torch.tensor(m[k]["values"], dtype=torch.float64).reshape(m[k]["shape"])
    w = d("w")
    shape = list(w.shape)
    if m["kind"] == "locon":
        up, down, mid = d("up"), d("down"), d("mid")
        up = up.reshape(up.size(0), -1)
        down = down.reshape(down.size(0), -1)
        delta = torch.einsum("n m k l, i n, m j -> i j k l", mid, up, down)
    elif m["kind"] == "loha":
        p1 = cp(d("t1"), d("w1a"), d("w1b")) if "t1" in m else (d("w1a") @ d("w1b")).reshape(shape)
        p2 = cp(d("t2"), d("w2a"), d("w2b")) if "t2" in m else (d("w2a") @ d("w2b")).reshape(shape)
        delta = p1 * p2
    else:
        w2 = cp(d("t2"), d("w2a"), d("w2b")).contiguous()  # as make_kron does
        w1 = d("w1").unsqueeze(2).unsqueeze(2)
        delta = torch.kron(w1, w2).reshape(shape)
    expect = w + m["ratio"] * m["scale"] * delta
    got = d("out")
    worst = max(worst, ((got - expect).abs() / (expect.abs() + 1e-3)).max().item())
    # how far from W the expectation is, on the error's scale: a ΔW left out or wrong fails by this much
    changed = max(changed, ((expect - w).abs() / (expect.abs() + 1e-3)).max().item())
print(json.dumps({"worst": worst, "changed": changed, "modules": len(spec["modules"])}))
`;

function torchCheck(modules: Record<string, unknown>[]): { worst: number; changed: number } {
  const file = join(tmpdir(), `tm-lora-tucker-${process.pid}-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify({ modules }));
  try {
    const r = spawnSync(PYTHON, ["-c", SCRIPT, file], { encoding: "utf8", maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { worst: number; changed: number; modules: number };
    assert.equal(out.modules, modules.length);
    return out;
  } finally {
    rmSync(file, { force: true });
  }
}

describe("lora: Tucker (lora_mid, hada_t1/t2, lokr_t2) baked", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-lora-tucker-");
  const base = join(tmp.path, "sd15.safetensors"), lora = join(tmp.path, "tucker.safetensors");
  // module name → [target key, kind, factors, alpha, scale]
  const modules: { name: string; key: string; kind: "locon" | "loha" | "lokr"; factors: Record<string, string>; scale: number }[] = [];
  before(async () => {
    await writeBase(base, "sd15", 32);
    const b = readModel(base).tensors;
    const t: Record<string, TestTensor> = {};
    let seed = 100;
    const put = (name: string, shape: number[], dtype: TestDtype = "F32") => {
      t[name] = { dtype, shape, values: randomValues(shape.reduce((a, c) => a * c, 1), ++seed) };
    };
    const shapeOf = (key: string) => b.get(key)!.shape as [number, number, number, number];
    // LoCon Tucker, ranks up 3 / down 5 (unequal, so a swapped index cannot pass), 4-D factors in F16, alpha 2 → scale 2/5
    {
      const name = "lora_unet_down_blocks_0_resnets_0_conv1", key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
      const [o, i] = shapeOf(key);
      put(`${name}.lora_up.weight`, [o, 3, 1, 1], "F16");
      put(`${name}.lora_mid.weight`, [3, 5, 3, 3]);
      put(`${name}.lora_down.weight`, [5, i, 1, 1], "F16");
      t[`${name}.alpha`] = { dtype: "F32", shape: [], values: [2] };
      modules.push({ name, key, kind: "locon", factors: { up: "lora_up.weight", mid: "lora_mid.weight", down: "lora_down.weight" }, scale: 2 / 5 });
    }
    // LoCon Tucker with 2-D up and down, BF16 core, no alpha (scale 1)
    {
      const name = "lora_unet_down_blocks_1_resnets_0_conv1", key = "model.diffusion_model.input_blocks.4.0.in_layers.2.weight";
      const [o, i] = shapeOf(key);
      put(`${name}.lora_up.weight`, [o, 4]);
      put(`${name}.lora_mid.weight`, [4, 4, 3, 3], "BF16");
      put(`${name}.lora_down.weight`, [4, i]);
      modules.push({ name, key, kind: "locon", factors: { up: "lora_up.weight", mid: "lora_mid.weight", down: "lora_down.weight" }, scale: 1 });
    }
    // LoHa, both products Tucker (ranks 4 and 3), alpha 3 → scale 3/4 (rank: hada_w1_b's rows)
    {
      const name = "lora_unet_up_blocks_1_resnets_1_conv1", key = "model.diffusion_model.output_blocks.4.0.in_layers.2.weight";
      const [o, i] = shapeOf(key);
      put(`${name}.hada_w1_a`, [4, o]);
      put(`${name}.hada_w1_b`, [4, i]);
      put(`${name}.hada_t1`, [4, 4, 3, 3]);
      put(`${name}.hada_w2_a`, [3, o], "F16");
      put(`${name}.hada_w2_b`, [3, i], "F16");
      put(`${name}.hada_t2`, [3, 3, 3, 3], "F16");
      t[`${name}.alpha`] = { dtype: "F32", shape: [], values: [3] };
      modules.push({ name, key, kind: "loha", factors: { w1a: "hada_w1_a", w1b: "hada_w1_b", t1: "hada_t1", w2a: "hada_w2_a", w2b: "hada_w2_b", t2: "hada_t2" }, scale: 3 / 4 });
    }
    // LoHa, first product Tucker, second plain ([out, 2] · [2, in·9]), alpha 1 → scale 1/2
    {
      const name = "lora_unet_down_blocks_2_resnets_0_conv2", key = "model.diffusion_model.input_blocks.7.0.out_layers.3.weight";
      const [o, i, kh, kw] = shapeOf(key);
      put(`${name}.hada_w1_a`, [2, o]);
      put(`${name}.hada_w1_b`, [2, i]);
      put(`${name}.hada_t1`, [2, 2, 3, 3]);
      put(`${name}.hada_w2_a`, [o, 2]);
      put(`${name}.hada_w2_b`, [2, i * kh * kw]);
      t[`${name}.alpha`] = { dtype: "F32", shape: [], values: [1] };
      modules.push({ name, key, kind: "loha", factors: { w1a: "hada_w1_a", w1b: "hada_w1_b", t1: "hada_t1", w2a: "hada_w2_a", w2b: "hada_w2_b" }, scale: 1 / 2 });
    }
    // LoKr: w1 full [2, 4], w2 Tucker (rank 3) on a 3×3 conv, alpha 1.5 → scale 1.5 / 3
    {
      const name = "lora_unet_mid_block_resnets_0_conv1", key = "model.diffusion_model.middle_block.0.in_layers.2.weight";
      const [o, i] = shapeOf(key);
      put(`${name}.lokr_w1`, [2, 4]);
      put(`${name}.lokr_w2_a`, [3, o / 2]);
      put(`${name}.lokr_w2_b`, [3, i / 4]);
      put(`${name}.lokr_t2`, [3, 3, 3, 3]);
      t[`${name}.alpha`] = { dtype: "F32", shape: [], values: [1.5] };
      modules.push({ name, key, kind: "lokr", factors: { w1: "lokr_w1", w2a: "lokr_w2_a", w2b: "lokr_w2_b", t2: "lokr_t2" }, scale: 1.5 / 3 });
    }
    writeModel(lora, t);
  });
  after(() => tmp.cleanup());

  it("reads them as bakeable modules with the LyCORIS shapes and scales", async () => {
    const l = await openLora(lora);
    for (const m of modules) {
      const got = l.modules.find((x) => x.name === m.name)!;
      assert.equal(got.unsupported, undefined, m.name);
      assert.ok(Math.abs(got.scale - m.scale) < 1e-12, `${m.name}: scale ${got.scale}, expected ${m.scale}`);
      const shape = readModel(base).tensors.get(m.key)!.shape;
      assert.deepEqual([got.rows, got.cols], [shape[0], shape[1]! * shape[2]! * shape[3]!], m.name);
    }
  });

  const outputs = new Map<string, Buffer>();
  for (const engine of ENGINES) {
    it(`equal torch's einsum formulas (float64) within fp32 rounding, nothing left beside the output (${engine})`, async function () {
      const dir = join(tmp.path, engine);
      require("node:fs").mkdirSync(dir);
      const out = join(dir, "baked.safetensors");
      const r = await bake({ model: base, loras: [{ path: lora, ratio: 0.7 }], out, engine, recipeMetadata: false });
      assert.equal(r.tensorsBaked, modules.length);
      assert.deepEqual(readdirSync(dir), ["baked.safetensors"]); // the Tucker factor file was removed
      outputs.set(engine, readFileSync(out));
      requireTorch(this);
      const b = readModel(base).tensors, l = readModel(lora).tensors, o = readModel(out).tensors;
      const spec = modules.map((m) => ({
        kind: m.kind, ratio: 0.7, scale: m.scale,
        w: { values: b.get(m.key)!.values, shape: b.get(m.key)!.shape },
        out: { values: o.get(m.key)!.values, shape: o.get(m.key)!.shape },
        ...Object.fromEntries(Object.entries(m.factors).map(([k, suffix]) => {
          const f = l.get(`${m.name}.${suffix}`)!;
          return [k, { values: f.values, shape: f.shape }];
        })),
      }));
      const { worst, changed } = torchCheck(spec);
      assert.ok(worst < 1e-5, `worst relative error ${worst}`);
      assert.ok(changed > 1e-2, `ΔW moves the weights by at most ${changed} (relative): too little to test`);
    });
  }

  it("native and TS engines write the same bytes", function () {
    if (outputs.size < 2) this.skip();
    assert.ok(outputs.get("native")!.equals(outputs.get("js")!));
  });
});
