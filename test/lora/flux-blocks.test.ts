/**
 * LoRA block weights for FLUX (61 values: CLIP, T5, IN, D00…D18, S00…S37, OUT, as
 * lora-block-weight's and SuperMerger's BLOCKIDFLUX), and the target architecture of shrunk
 * LoRAs told from their names and factor shapes (no real widths to go by).
 *
 * Expected bytes come from bakes without block weights: a block of weight 1 equals the full bake,
 * 0.5 the bake at ratio 0.5 (ratio · scale · weight is the same fp32 number), 0 the checkpoint.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { bake } from "../../lib/lora/bake";
import { loraArchitecture } from "../../lib/lora/describe";
import { openLora } from "../../lib/lora/read";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";
import { loraEntries, writeBase, writeLora } from "./fixtures";

const FLUX_BLOCKS = ["CLIP", "T5", "IN", ...Array.from({ length: 19 }, (_, i) => `D${String(i).padStart(2, "0")}`), ...Array.from({ length: 38 }, (_, i) => `S${String(i).padStart(2, "0")}`), "OUT"];

describe("lora: FLUX block weights, architecture of shrunk LoRAs", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-lora-fluxlbw-");
  after(() => tmp.cleanup());
  const f16 = (shape: number[], seed: number): TestTensor => ({ dtype: "F16", shape, values: randomValues(shape.reduce((a, b) => a * b, 1), seed) });

  it("61 values weigh the input projections, each double and single block and the final layer", async () => {
    const base = join(tmp.path, "flux.safetensors"), lora = join(tmp.path, "flux-lora.safetensors");
    await writeBase(base, "flux1_dev", 64);
    const shapes = readModel(base).tensors;
    const modules: [string, string][] = [
      ["lora_unet_img_in", "img_in.weight"], // IN
      ["lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv.weight"], // D00
      ["lora_unet_double_blocks_1_txt_mod_lin", "double_blocks.1.txt_mod.lin.weight"], // D01
      ["lora_unet_single_blocks_2_linear1", "single_blocks.2.linear1.weight"], // S02
      ["lora_unet_single_blocks_37_linear2", "single_blocks.37.linear2.weight"], // S37
      ["lora_unet_final_layer_linear", "final_layer.linear.weight"], // OUT
    ];
    const t: Record<string, TestTensor> = {};
    let seed = 0;
    for (const [n, key] of modules) {
      const [rows, cols] = shapes.get(key)!.shape as [number, number];
      t[`${n}.lora_up.weight`] = f16([rows, 4], ++seed);
      t[`${n}.lora_down.weight`] = f16([4, cols], ++seed);
      t[`${n}.alpha`] = { dtype: "F16", shape: [], values: [2] };
    }
    writeModel(lora, t);
    const weight: Record<string, number> = { IN: 0, D00: 1, D01: 0.5, S02: 0, S37: 0.5, OUT: 0.5 };
    const values = FLUX_BLOCKS.map((b) => weight[b] ?? 1);
    assert.equal(values.length, 61);
    const out = (n: string) => join(tmp.path, `${n}.safetensors`);
    const r = await bake({ model: base, loras: [lora], loraBlocks: values.join(","), out: out("lbw"), recipeMetadata: false });
    assert.equal(r.loras[0]!.architecture, "flux");
    await bake({ model: base, loras: [lora], out: out("full"), recipeMetadata: false });
    await bake({ model: base, loras: [{ path: lora, ratio: 0.5 }], out: out("half"), recipeMetadata: false });
    const [b, l, full, half] = [base, out("lbw"), out("full"), out("half")].map((p) => readModel(p).tensors);
    const bytes = (m: typeof b, key: string) => Buffer.from(m!.get(key)!.bytes);
    const expect: Record<string, typeof b> = { "img_in.weight": b, "double_blocks.0.img_attn.qkv.weight": full, "double_blocks.1.txt_mod.lin.weight": half, "single_blocks.2.linear1.weight": b, "single_blocks.37.linear2.weight": half, "final_layer.linear.weight": half };
    for (const [, key] of modules) {
      assert.ok(bytes(l, key).equals(bytes(expect[key], key)), key);
      assert.ok(!bytes(full, key).equals(bytes(b, key)), `${key}: the full bake changes it`);
    }
    // the form users type for SD does not fit FLUX: the message names the 61-value form
    await assert.rejects(bake({ model: base, loras: [lora], loraBlocks: "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1", out: out("x"), recipeMetadata: false }), (e: unknown) =>
      e instanceof MergeError && e.code === "INVALID_ARGUMENT" && /61 \(CLIP, T5, …, OUT\)/.test(e.message));
  });

  it("shrunk LoRAs: SD 1.x (4-D proj_in), SD 2.x (23 text layers), SDXL (kohya and diffusers names), FLUX with a CLIP-L lora_te1", async () => {
    const arch = async (name: string, tensors: Record<string, TestTensor>) => {
      const p = join(tmp.path, `${name}.safetensors`);
      writeModel(p, tensors);
      return loraArchitecture(await openLora(p));
    };
    const sd15 = join(tmp.path, "sd15-small.safetensors"), xl = join(tmp.path, "xl-small.safetensors");
    writeLora(sd15, loraEntries("lora_sd15_kohya_r32", 32), 3);
    writeLora(xl, loraEntries("lora_sdxl_kohya_r32", 32), 4);
    assert.equal(loraArchitecture(await openLora(sd15)), "sd1");
    assert.equal(loraArchitecture(await openLora(xl)), "sdxl");
    assert.equal(await arch("sd2-small", {
      "lora_te_text_model_encoder_layers_22_mlp_fc1.lora_down.weight": f16([2, 32], 1),
      "lora_te_text_model_encoder_layers_22_mlp_fc1.lora_up.weight": f16([128, 2], 2),
    }), "sd2");
    assert.equal(await arch("sdxl-diffusers-small", {
      "unet.down_blocks.2.attentions.0.transformer_blocks.7.attn1.to_q.lora_A.weight": f16([2, 40], 1),
      "unet.down_blocks.2.attentions.0.transformer_blocks.7.attn1.to_q.lora_B.weight": f16([40, 2], 2),
    }), "sdxl");
    assert.equal(await arch("flux-te1", {
      "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": f16([2, 24], 1),
      "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": f16([24, 2], 2),
      "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": f16([2, 48], 3),
      "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": f16([48, 2], 4),
    }), "flux");
    // nothing to tell from: a few CLIP-L layers and one 2-D UNet module of shrunk width stay unknown
    assert.equal(await arch("vague", {
      "lora_te_text_model_encoder_layers_3_mlp_fc1.lora_down.weight": f16([2, 24], 1),
      "lora_te_text_model_encoder_layers_3_mlp_fc1.lora_up.weight": f16([96, 2], 2),
    }), "unknown");
  });
});
