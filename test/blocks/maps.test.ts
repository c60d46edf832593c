/**
 * The block maps against the real SD 1.5, SD 2.1, SDXL, FLUX.1 [dev] and SD 3.5 Medium layouts:
 * every key lands in the block an independent rule (written out below, by splitting the key on
 * dots) gives it, and the per-block counts match the architectures' structure.
 */
import { strict as assert } from "node:assert";
import { blockMapFor, FLUX_BLOCKS, SD_BLOCKS, SDXL_BLOCKS, summarizeBlocks, type BlockMap } from "../../lib/blocks";
import { ARCHITECTURE_IDS } from "../../lib/library/identify";
import type { LayoutEntry } from "../../lib/synthetic";
import { refinerLayout } from "../library/fixtures";
import { readLayout, readSummary, type BlockLayoutName } from "./layouts";
import { expectedFlux, expectedLdm, expectedSd3, two } from "./rules";

function counts(map: BlockMap, layout: LayoutEntry[]): Map<string | null, number> {
  const out = new Map<string | null, number>();
  for (const [name] of layout) out.set(map.blockOf(name), (out.get(map.blockOf(name)) ?? 0) + 1);
  return out;
}

describe("block maps", () => {
  const summary = readSummary();

  it("names: 26 for SD, 20 for SDXL, 61 for FLUX.1 in the published order", () => {
    const sd = ["BASE", ...Array.from({ length: 12 }, (_, i) => `IN${two(String(i))}`), "M00", ...Array.from({ length: 12 }, (_, i) => `OUT${two(String(i))}`)];
    assert.deepEqual(SD_BLOCKS.names, sd);
    const xl = ["BASE", ...Array.from({ length: 9 }, (_, i) => `IN0${i}`), "M00", ...Array.from({ length: 9 }, (_, i) => `OUT0${i}`)];
    assert.deepEqual(SDXL_BLOCKS.names, xl);
    const flux = ["CLIP", "T5", "IN", ...Array.from({ length: 19 }, (_, i) => `D${two(String(i))}`), ...Array.from({ length: 38 }, (_, i) => `S${two(String(i))}`), "OUT"];
    assert.deepEqual(FLUX_BLOCKS.names, flux);
    assert.equal(FLUX_BLOCKS.names.length, 61);
  });

  for (const [name, xl] of [["sd15", false], ["sd15_full_ema", false], ["sd15_inpainting", false], ["sd15_fp16_pruned", false], ["sd21", false], ["sdxl", true]] as [BlockLayoutName, boolean][]) {
    it(`${name}: every key lands in its documented block`, () => {
      const layout = readLayout(name);
      const s = summarizeBlocks({ tensors: layout.map(([n, shape, dtype]) => ({ name: n, shape, dtype })) });
      assert.equal(s.map, xl ? SDXL_BLOCKS : SD_BLOCKS);
      const map = s.map!;
      for (const [key] of layout) assert.equal(map.blockOf(key), expectedLdm(key, xl), key);
      // Every block holds tensors; the counts add up.
      for (const b of s.blocks) assert.ok(b.tensors > 0, `${name}: ${b.block} is empty`);
      assert.equal(s.blocks.reduce((p, b) => p + b.tensors, 0) + s.unassigned.length, layout.length);
    });
  }

  it("SD 1.5: BASE is the text encoder and the VAE (without position_ids), the UNet is the 25 other blocks", () => {
    const layout = readLayout("sd15");
    const c = counts(SD_BLOCKS, layout);
    const comp = summary.sd15!.components;
    assert.equal(c.get("BASE"), comp.text_encoder!.tensors - 1 + comp.vae!.tensors);
    const unet = SD_BLOCKS.names.slice(1).reduce((p, b) => p + (c.get(b) ?? 0), 0);
    assert.equal(unet, comp.unet!.tensors);
    // Scheduler buffers, the EMA counters, position_ids.
    assert.equal(c.get(null), 12 + 2 + 1);
    // Structure: a ResBlock (in_layers 0/2, emb_layers 1, out_layers 0/3: 5 × 2 tensors) + a transformer
    // (proj_in/out, norm, 1 block of 26 tensors = 36); IN03/IN06/IN09 are downsamplers (op conv, 2);
    // IN00 is the input conv (2) + time_embed (2 Linears: 4).
    assert.equal(c.get("IN00"), 2 + 4);
    for (const b of ["IN03", "IN06", "IN09"]) assert.equal(c.get(b), 2);
    assert.equal(c.get("IN01"), 10 + 26);
    assert.equal(c.get("IN10"), 10);
    assert.equal(c.get("OUT11"), 12 + 26 + 4); // ResBlock with skip conv + transformer + out (norm, conv)
  });

  it("SDXL: BASE is both text encoders and the VAE; time_embed and label_emb have no block (SuperMerger)", () => {
    const layout = readLayout("sdxl");
    const c = counts(SDXL_BLOCKS, layout);
    const comp = summary.sdxl!.components;
    assert.equal(c.get("BASE"), comp.text_encoder_1_clip_l!.tensors + comp.text_encoder_2_clip_g!.tensors - 1 + comp.vae!.tensors);
    assert.equal(c.get(null), 1 + 4 + 4); // position_ids, time_embed.{0,2}, label_emb.0.{0,2}
    assert.equal(SDXL_BLOCKS.blockOf("model.diffusion_model.out.2.weight"), "OUT08");
  });

  it("FLUX.1 [dev]: 19 double blocks of 24 tensors, 38 single of 8, IN 16, OUT 4; the same under model.diffusion_model.", () => {
    const layout = readLayout("flux1_dev");
    for (const prefix of ["", "model.diffusion_model."]) {
      const prefixed = layout.map(([n, s, d]): LayoutEntry => [prefix + n, s, d]);
      for (const [key] of prefixed) assert.equal(FLUX_BLOCKS.blockOf(key), expectedFlux(key), key);
      const s = summarizeBlocks({ tensors: prefixed.map(([name, shape, dtype]) => ({ name, shape, dtype })) });
      assert.equal(s.architecture, "flux");
      assert.equal(s.map, FLUX_BLOCKS);
      const byBlock = new Map(s.blocks.map((b) => [b.block, b]));
      for (let i = 0; i < 19; i++) assert.equal(byBlock.get(`D${two(String(i))}`)!.tensors, 24);
      for (let i = 0; i < 38; i++) assert.equal(byBlock.get(`S${two(String(i))}`)!.tensors, 8);
      assert.equal(byBlock.get("IN")!.tensors, 16);
      assert.equal(byBlock.get("OUT")!.tensors, 4);
      assert.equal(s.unassigned.length, 0);
      // Parameters from the layouts notes: double 6,456,794,624; single 5,380,488,704; embedders 45,047,808; final 19,077,184.
      const sum = (p: RegExp) => s.blocks.filter((b) => p.test(b.block)).reduce((t, b) => t + b.params, 0);
      assert.equal(sum(/^D/), 6_456_794_624);
      assert.equal(sum(/^S/), 5_380_488_704);
      assert.equal(sum(/^IN$/), 45_047_808);
      assert.equal(sum(/^OUT$/), 19_077_184);
    }
    // Text encoders and VAE of an all-in-one file.
    assert.equal(FLUX_BLOCKS.blockOf("text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"), "CLIP");
    assert.equal(FLUX_BLOCKS.blockOf("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"), "T5");
    assert.equal(FLUX_BLOCKS.blockOf("vae.decoder.conv_in.weight"), null);
    assert.equal(FLUX_BLOCKS.blockOf("text_encoders.clip_l.transformer.text_model.embeddings.position_ids"), null);
    // Scaled fp8: a Linear's scales go with it; the file's marker has no block.
    assert.equal(FLUX_BLOCKS.blockOf("model.diffusion_model.double_blocks.3.img_attn.qkv.scale_weight"), "D03");
    assert.equal(FLUX_BLOCKS.blockOf("single_blocks.37.linear2.scale_input"), "S37");
    assert.equal(FLUX_BLOCKS.blockOf("scaled_fp8"), null);
  });

  it("SD 3.5 Medium: 24 joint blocks (13 with a second attention), IN, OUT; the VAE has no block", () => {
    const layout = readLayout("sd35_medium");
    const s = summarizeBlocks({ tensors: layout.map(([name, shape, dtype]) => ({ name, shape, dtype })) });
    assert.equal(s.architecture, "sd3");
    const map = s.map!;
    assert.equal(map.names.length, 3 + 24 + 1);
    for (const [key] of layout) assert.equal(map.blockOf(key), expectedSd3(key), key);
    const byBlock = new Map(s.blocks.map((b) => [b.block, b.tensors]));
    for (let i = 0; i < 13; i++) assert.equal(byBlock.get(`J${two(String(i))}`), 30);
    for (let i = 13; i < 23; i++) assert.equal(byBlock.get(`J${two(String(i))}`), 24);
    assert.equal(byBlock.get("J23"), 18); // pre-only context block
    assert.equal(s.unassigned.length, 244);
    assert.ok(s.unassigned.every((u) => u.name.startsWith("first_stage_model.")));
  });

  it("SDXL refiner: the 26-block SD map (12 input blocks), label_emb in BASE", () => {
    const layout = refinerLayout();
    const s = summarizeBlocks({ tensors: layout.map(([name, shape, dtype]) => ({ name, shape, dtype })) });
    assert.equal(s.architecture, "sdxl-refiner");
    assert.equal(s.map, SD_BLOCKS);
    for (const [key] of layout) assert.equal(SD_BLOCKS.blockOf(key), expectedLdm(key, false), key);
  });

  it("a map for every architecture but unknown; indices past the map have no block", () => {
    for (const id of ARCHITECTURE_IDS) assert.equal(blockMapFor(id) === undefined, id === "unknown", id);
    assert.equal(SD_BLOCKS.blockOf("model.diffusion_model.input_blocks.12.0.weight"), null);
    assert.equal(SDXL_BLOCKS.blockOf("model.diffusion_model.output_blocks.9.0.weight"), null);
    assert.equal(FLUX_BLOCKS.blockOf("double_blocks.19.img_attn.qkv.weight"), null);
    // Bare UNet files (no checkpoint prefix).
    assert.equal(SD_BLOCKS.blockOf("input_blocks.4.1.proj_in.weight"), "IN04");
    assert.equal(SD_BLOCKS.blockOf("diffusion_model.out.0.bias"), "OUT11");
    // 2022-era CLIP names (renamed on load, but the map does not depend on it).
    assert.equal(SD_BLOCKS.blockOf("cond_stage_model.transformer.embeddings.position_ids"), null);
    assert.equal(SD_BLOCKS.blockOf("cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight"), "BASE");
    // SD 3.5 large: 38 joint blocks from the model's names.
    const large = blockMapFor("sd3", Array.from({ length: 38 }, (_, i) => `model.diffusion_model.joint_blocks.${i}.x_block.attn.qkv.weight`))!;
    assert.equal(large.names.length, 42);
    assert.equal(large.blockOf("model.diffusion_model.joint_blocks.37.x_block.attn.qkv.weight"), "J37");
  });
});
