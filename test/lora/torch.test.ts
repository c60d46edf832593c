/**
 * bake against real PyTorch (Debian's, /usr/bin/python3): kohya's merge_lora.py formulas
 * (`weight + ratio * (up @ down) * scale` for linears and 1×1 convs, `conv2d(down.permute(1, 0, 2, 3),
 * up).permute(1, 0, 2, 3)` for 3×3 convs), LoHa `(w1a @ w1b) * (w2a @ w2b)`, and the OpenCLIP
 * in_proj slices; computed in float64 by torch on the factors and the base weight, compared with
 * our fp32 output within fp32 rounding.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { bake } from "../../lib/lora/bake";
import { PYTHON, requireTorch } from "../ckpt/helpers";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";
import { loraEntries, writeBase, writeLora } from "./fixtures";

const SCRIPT = `
import json, sys, torch
spec = json.load(open(sys.argv[1]))
worst = 0.0
running = {}
for m in spec["modules"]:
    d = lambda k, shape: torch.tensor(m[k], dtype=torch.float64).reshape(shape)
    w = running.get(m.get("key")) if spec["accumulate"] and m.get("key") in running else d("w", m["w_shape"])
    if m["kind"] == "lokr":  # AUTOMATIC1111 network_lokr.make_kron
        w1 = d("w1a", m["w1a_shape"]) @ d("w1b", m["w1b_shape"]) if "w1a" in m else d("w1", m["w1_shape"])
        w2 = d("w2a", m["w2a_shape"]) @ d("w2b", m["w2b_shape"]) if "w2a" in m else d("w2", m["w2_shape"])
        if len(w2.shape) == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        delta = torch.kron(w1, w2).reshape(m["slice_shape"])
    elif m["kind"] == "loha":
        delta = (d("w1a", m["w1a_shape"]) @ d("w1b", m["w1b_shape"])) * (d("w2a", m["w2a_shape"]) @ d("w2b", m["w2b_shape"]))
        delta = delta.reshape(m["slice_shape"])
    else:
        up, down = d("up", m["up_shape"]), d("down", m["down_shape"])
        if len(m["down_shape"]) == 4 and m["down_shape"][2:] != [1, 1]:
            delta = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        else:
            delta = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(m["slice_shape"])
    expect = w.clone()
    rows = m["slice_shape"][0]
    expect[m["row_start"]:m["row_start"] + rows] += m["ratio"] * m["scale"] * delta
    if spec["accumulate"]:
        running[m.get("key")] = expect
    got = d("out", m["w_shape"])
    if spec["accumulate"] and any(n.get("key") == m.get("key") for n in spec["modules"][spec["modules"].index(m) + 1:]):
        continue  # compared after the last module of this key
    err = ((got - expect).abs() / (expect.abs() + 1e-3)).max().item()
    worst = max(worst, err)
print(json.dumps({"worst": worst, "modules": len(spec["modules"])}))
`;

/** Runs the script; `accumulate` applies every module to one running expectation per key. */
function torchWorst(modules: Record<string, unknown>[], accumulate = false): number {
  const tmpFile = join(require("node:os").tmpdir(), `tm-lora-spec-${process.pid}-${Date.now()}.json`);
  writeFileSync(tmpFile, JSON.stringify({ modules, accumulate }));
  try {
    const r = spawnSync(PYTHON, ["-c", SCRIPT, tmpFile], { encoding: "utf8", maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, r.stderr);
    const { worst, modules: n } = JSON.parse(r.stdout) as { worst: number; modules: number };
    assert.equal(n, modules.length);
    return worst;
  } finally {
    require("node:fs").rmSync(tmpFile, { force: true });
  }
}

describe("lora: bake against PyTorch", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-lora-torch-");
  after(() => tmp.cleanup());

  it("kohya linear, 1×1 and 3×3 LoCon modules on SD 1.x equal torch's merge_lora formulas (float64) within fp32 rounding", async function () {
    requireTorch(this);
    const base = join(tmp.path, "sd15.safetensors"), lora = join(tmp.path, "locon.safetensors"), out = join(tmp.path, "out.safetensors");
    await writeBase(base, "sd15", 32);
    writeLora(lora, loraEntries("lora_sd15_locon_r16", 32), 3, () => 4);
    await bake({ model: base, loras: [{ path: lora, ratio: 0.8 }], out, recipeMetadata: false });
    const b = readModel(base).tensors, l = readModel(lora).tensors, o = readModel(out).tensors;
    // The modules to check, with their targets as kohya / A1111 name them.
    const cases: [string, string][] = [
      ["lora_unet_down_blocks_0_attentions_0_proj_in", "model.diffusion_model.input_blocks.1.1.proj_in.weight"], // 1×1 conv
      ["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj", "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight"],
      ["lora_unet_down_blocks_1_resnets_0_conv1", "model.diffusion_model.input_blocks.4.0.in_layers.2.weight"], // 3×3
      ["lora_unet_down_blocks_2_downsamplers_0_conv", "model.diffusion_model.input_blocks.9.0.op.weight"], // 3×3, stride 2
      ["lora_unet_up_blocks_1_upsamplers_0_conv", "model.diffusion_model.output_blocks.5.2.conv.weight"],
      ["lora_unet_mid_block_resnets_0_conv_shortcut", "model.diffusion_model.middle_block.0.skip_connection.weight"],
      ["lora_te_text_model_encoder_layers_7_self_attn_out_proj", "cond_stage_model.transformer.text_model.encoder.layers.7.self_attn.out_proj.weight"],
    ].filter(([n]) => l.has(`${n}.lora_down.weight`)) as [string, string][];
    assert.ok(cases.length >= 6, `cases found: ${cases.length}`);
    const modules = cases.map(([n, key]) => {
      const up = l.get(`${n}.lora_up.weight`)!, down = l.get(`${n}.lora_down.weight`)!;
      return {
        kind: "lora", w: b.get(key)!.values, w_shape: b.get(key)!.shape, out: o.get(key)!.values,
        up: up.values, up_shape: up.shape, down: down.values, down_shape: down.shape,
        slice_shape: b.get(key)!.shape, row_start: 0, ratio: 0.8, scale: 4 / down.shape[0]!,
      };
    });
    assert.ok(torchWorst(modules) < 1e-5);
  });

  it("SD 2.x OpenCLIP q/k/v (rows of in_proj_weight), PEFT names, LoHa and LoKr (torch.kron, as A1111's make_kron) equal torch within fp32 rounding", async function () {
    requireTorch(this);
    const base = join(tmp.path, "sd21.safetensors"), out = join(tmp.path, "out21.safetensors");
    await writeBase(base, "sd21", 32);
    const b = readModel(base).tensors;
    const key = "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight";
    const [three, d] = b.get(key)!.shape as [number, number];
    const t: Record<string, TestTensor> = {};
    let seed = 1;
    const put = (name: string, shape: number[]) => {
      const values = randomValues(shape.reduce((a, c) => a * c, 1), ++seed);
      t[name] = { dtype: "F32", shape, values };
      return values;
    };
    const modules: Record<string, unknown>[] = [];
    ["q", "k", "v"].forEach((x, i) => {
      const n = `lora_te_text_model_encoder_layers_2_self_attn_${x}_proj`;
      put(`${n}.lora_up.weight`, [d, 4]);
      put(`${n}.lora_down.weight`, [4, d]);
      t[`${n}.alpha`] = { dtype: "F32", shape: [], values: [2] };
      modules.push({ name: n, kind: "lora", key, up_shape: [d, 4], down_shape: [4, d], slice_shape: [d, d], row_start: i * d, ratio: 0.7, scale: 0.5 });
    });
    assert.equal(three, 3 * d);
    const pk = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_v.weight";
    const ps = b.get(pk)!.shape;
    put("unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.lora_B.weight", [ps[0]!, 8]);
    put("unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.lora_A.weight", [8, ps[1]!]);
    modules.push({ name: "unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v", peft: true, kind: "lora", key: pk, up_shape: [ps[0]!, 8], down_shape: [8, ps[1]!], slice_shape: ps, row_start: 0, ratio: 0.7, scale: 1 });
    // LoKr: a linear with w1 full and w2 decomposed, a 3×3 conv with w1 decomposed and w2 a full 4-D kernel
    const lk = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight";
    const ls = b.get(lk)!.shape;
    const ln = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q";
    const lokr1: Record<string, unknown> = { name: ln, kind: "lokr", key: lk, slice_shape: ls, row_start: 0, ratio: 0.7, scale: 2 / 5, w1_shape: [4, 2], w2a_shape: [ls[0]! / 4, 5], w2b_shape: [5, ls[1]! / 2] };
    lokr1.w1 = put(`${ln}.lokr_w1`, [4, 2]);
    lokr1.w2a = put(`${ln}.lokr_w2_a`, [ls[0]! / 4, 5]);
    lokr1.w2b = put(`${ln}.lokr_w2_b`, [5, ls[1]! / 2]);
    t[`${ln}.alpha`] = { dtype: "F32", shape: [], values: [2] };
    modules.push(lokr1);
    const ck = "model.diffusion_model.input_blocks.7.0.out_layers.3.weight";
    const cs = b.get(ck)!.shape;
    const cn = "lora_unet_down_blocks_2_resnets_0_conv2";
    const lokr2: Record<string, unknown> = { name: cn, kind: "lokr", key: ck, slice_shape: cs, row_start: 0, ratio: 0.7, scale: 3 / 2, w1a_shape: [2, 2], w1b_shape: [2, 4], w2_shape: [cs[0]! / 2, cs[1]! / 4, 3, 3] };
    lokr2.w1a = put(`${cn}.lokr_w1_a`, [2, 2]);
    lokr2.w1b = put(`${cn}.lokr_w1_b`, [2, 4]);
    lokr2.w2 = put(`${cn}.lokr_w2`, [cs[0]! / 2, cs[1]! / 4, 3, 3]);
    t[`${cn}.alpha`] = { dtype: "F32", shape: [], values: [3] };
    modules.push(lokr2);
    const hk = "model.diffusion_model.output_blocks.4.0.in_layers.2.weight"; // a 3×3 conv
    const hs = b.get(hk)!.shape, hc = hs.slice(1).reduce((a, c) => a * c, 1);
    const hn = "lora_unet_up_blocks_1_resnets_1_conv1";
    const loha: Record<string, unknown> = { name: hn, kind: "loha", key: hk, slice_shape: hs, row_start: 0, ratio: 0.7, scale: 3 / 4, w1a_shape: [hs[0]!, 4], w1b_shape: [4, hc], w2a_shape: [hs[0]!, 4], w2b_shape: [4, hc] };
    for (const f of ["w1a", "w1b", "w2a", "w2b"]) loha[f] = put(`${hn}.hada_${f.slice(0, 2)}_${f.slice(2)}`, loha[`${f}_shape`] as number[]);
    t[`${hn}.alpha`] = { dtype: "F32", shape: [], values: [3] };
    modules.push(loha);
    const lora = join(tmp.path, "mixed.safetensors");
    writeModel(lora, t);
    await bake({ model: base, loras: [{ path: lora, ratio: 0.7 }], out, recipeMetadata: false });
    const o = readModel(out).tensors;
    // in_proj: one module per call (the other thirds stay W), so compare each third on its own
    const full = modules.map((m) => {
      const name = m.name as string;
      const x = m.kind === "loha" || m.kind === "lokr" ? {} : m.peft
        ? { up: t[`${name}.lora_B.weight`]!.values, down: t[`${name}.lora_A.weight`]!.values }
        : { up: t[`${name}.lora_up.weight`]!.values, down: t[`${name}.lora_down.weight`]!.values };
      return { ...m, ...x, w: b.get(m.key as string)!.values, w_shape: b.get(m.key as string)!.shape, out: o.get(m.key as string)!.values };
    });
    // the three in_proj modules share one tensor: the expectation adds them one after another
    assert.ok(torchWorst(full, true) < 1e-5);
  });
});
