/**
 * Fixtures for the library tests: the real checkpoint layouts in ../shared/layouts (beside the
 * repository at dev and CI time), full-size sparse files with their real headers, shrunken
 * models with real data, and key sets of architectures we have no layout file for (SDXL
 * refiner, SD 3, FLUX.1, InstructPix2Pix), built from their documented key patterns.
 */
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";
import { gunzipSync } from "node:zlib";
import type { Dtype } from "../../lib/dtypes";
import { layoutSafetensors } from "../../lib/formats/safetensors";
import type { ModelFile, TensorInfo } from "../../lib/model";
import { shrinkLayout, writeSyntheticModel, type LayoutEntry } from "../../lib/synthetic";

export const LAYOUT_NAMES = ["sd15", "sd15_full_ema", "sd15_inpainting", "sd15_fp16_pruned", "sd21", "sdxl"] as const;
export type LayoutName = (typeof LAYOUT_NAMES)[number];

/**
 * The layouts folder: $TENSORMERGE_LAYOUTS, else ../shared/layouts beside the repository, else
 * the gzipped copies in test/fixtures/layouts (a fresh clone without ../shared).
 */
export function layoutsDir(): string {
  const candidates = [
    process.env.TENSORMERGE_LAYOUTS,
    resolve(__dirname, "..", "..", "..", "..", "shared", "layouts"), // from dist/test/library
    resolve(__dirname, "..", "..", "..", "shared", "layouts"), // from test/library (ts-node)
    resolve(__dirname, "..", "..", "..", "test", "fixtures", "layouts"), // from dist/test/library
    resolve(__dirname, "..", "fixtures", "layouts"), // from test/library (ts-node)
  ].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(join(p, "summary.json")) || existsSync(join(p, "summary.json.gz")));
  if (!found) throw new Error(`the layouts are missing (looked in ${candidates.join(", ")}); set TENSORMERGE_LAYOUTS`);
  return found;
}

/** A layouts file by name, plain or gzipped. */
function readLayoutsFile(name: string): string {
  const dir = layoutsDir();
  const plain = join(dir, name);
  return existsSync(plain) ? readFileSync(plain, "utf8") : gunzipSync(readFileSync(`${plain}.gz`)).toString("utf8");
}

export function loadLayout(name: LayoutName): LayoutEntry[] {
  return JSON.parse(readLayoutsFile(`${name}.json`)) as LayoutEntry[];
}

export interface LayoutSummary {
  tensors: number;
  params: number;
  dtypes: string[];
  components: Record<string, { tensors: number; params: number }>;
}

export function loadSummary(): Record<LayoutName, LayoutSummary> {
  return JSON.parse(readLayoutsFile("summary.json")) as Record<LayoutName, LayoutSummary>;
}

/**
 * Writes a full-size safetensors file with the layout's real header and a sparse (unallocated,
 * zero) data section: it costs no disk space, and header readers see the real thing.
 * Never hash these: they are gigabytes of zeros.
 */
export function writeSparseModel(path: string, layout: readonly LayoutEntry[], metadata: Record<string, string> = {}): number {
  const plan = layoutSafetensors(layout.map(([name, shape, dtype]) => ({ name, shape, dtype })), metadata);
  const fd = openSync(path, "wx");
  try {
    writeSync(fd, plan.header, 0, plan.header.length, 0);
    ftruncateSync(fd, plan.size);
  } finally {
    closeSync(fd);
  }
  return plan.size;
}

/** Writes a shrunken model with real (seeded random) data: every dimension above 16 divided by `factor`. */
export function writeShrunkModel(path: string, layout: LayoutEntry[], factor = 32, seed = 1, metadata?: Record<string, string>): Promise<number> {
  return writeSyntheticModel(path, shrinkLayout(layout, factor), { seed, ...(metadata ? { metadata } : {}) });
}

/** An in-memory ModelFile for a layout (offsets as a safetensors file would have them). */
export function modelFromLayout(path: string, layout: readonly LayoutEntry[]): ModelFile {
  const plan = layoutSafetensors(layout.map(([name, shape, dtype]) => ({ name, shape, dtype })));
  const tensors: TensorInfo[] = layout.map(([name, shape, dtype], i) => {
    const next = i + 1 < layout.length ? plan.offsets[i + 1]! : plan.size;
    return { name, dtype, shape: [...shape], offset: plan.offsets[i]!, byteLength: next - plan.offsets[i]! };
  });
  return {
    path, format: "safetensors", size: plan.size, tensors, byName: new Map(tensors.map((t) => [t.name, t])),
    metadata: {}, headerLength: plan.header.length, notes: [],
  };
}

const e = (name: string, shape: number[], dtype: Dtype = "F16"): LayoutEntry => [name, shape, dtype];

function vaeKeys(prefix: string, latentChannels = 4): LayoutEntry[] {
  return [
    e(`${prefix}encoder.conv_in.weight`, [128, 3, 3, 3]), e(`${prefix}encoder.conv_in.bias`, [128]),
    e(`${prefix}encoder.conv_out.weight`, [2 * latentChannels, 512, 3, 3]), e(`${prefix}decoder.conv_in.weight`, [512, latentChannels, 3, 3]),
    e(`${prefix}decoder.conv_out.weight`, [3, 128, 3, 3]), e(`${prefix}decoder.conv_out.bias`, [3]),
  ];
}

function openClipKeys(prefix: string, width: number, layers: number): LayoutEntry[] {
  const out: LayoutEntry[] = [e(`${prefix}token_embedding.weight`, [49408, width]), e(`${prefix}positional_embedding`, [77, width]), e(`${prefix}text_projection`, [width, width]), e(`${prefix}logit_scale`, [])];
  for (let i = 0; i < layers; i++) {
    out.push(e(`${prefix}transformer.resblocks.${i}.attn.in_proj_weight`, [3 * width, width]), e(`${prefix}transformer.resblocks.${i}.mlp.c_fc.weight`, [4 * width, width]));
  }
  return out;
}

function clipLKeys(prefix: string): LayoutEntry[] {
  return [
    e(`${prefix}transformer.text_model.embeddings.position_ids`, [1, 77], "I64"),
    e(`${prefix}transformer.text_model.embeddings.token_embedding.weight`, [49408, 768]),
    e(`${prefix}transformer.text_model.encoder.layers.0.self_attn.q_proj.weight`, [768, 768]),
  ];
}

/**
 * SDXL refiner (sd_xl_refiner_1.0): UNet with model_channels 384 and four levels (input blocks
 * 0..11), context 1280, `label_emb` taking 2560 inputs (time embedding 4 × 384 = 1536 wide), and
 * one text encoder, OpenCLIP bigG, stored as `conditioner.embedders.0.model.*`.
 */
export function refinerLayout(): LayoutEntry[] {
  const p = "model.diffusion_model.";
  const out: LayoutEntry[] = [e(`${p}input_blocks.0.0.weight`, [384, 4, 3, 3]), e(`${p}time_embed.0.weight`, [1536, 384]), e(`${p}label_emb.0.0.weight`, [1536, 2560]), e(`${p}label_emb.0.2.weight`, [1536, 1536])];
  for (let i = 1; i <= 11; i++) out.push(e(`${p}input_blocks.${i}.0.in_layers.2.weight`, [384, 384, 3, 3]));
  out.push(e(`${p}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight`, [768, 1280]), e(`${p}input_blocks.4.1.proj_in.weight`, [768, 768]));
  out.push(e(`${p}middle_block.0.in_layers.2.weight`, [1536, 1536, 3, 3]), e(`${p}out.2.weight`, [4, 384, 3, 3]));
  return [...out, ...openClipKeys("conditioner.embedders.0.model.", 1280, 2), ...vaeKeys("first_stage_model.")];
}

/** SD 3 medium as ComfyUI saves it: MMDiT `joint_blocks` (24), three text encoders, a 16-channel VAE. */
export function sd3Layout(): LayoutEntry[] {
  const p = "model.diffusion_model.";
  const out: LayoutEntry[] = [
    e(`${p}x_embedder.proj.weight`, [1536, 16, 2, 2]), e(`${p}pos_embed`, [1, 36864, 1536]), e(`${p}context_embedder.weight`, [1536, 4096]),
    e(`${p}t_embedder.mlp.0.weight`, [1536, 256]), e(`${p}y_embedder.mlp.0.weight`, [1536, 2048]), e(`${p}final_layer.linear.weight`, [64, 1536]),
  ];
  for (let i = 0; i < 24; i++) out.push(e(`${p}joint_blocks.${i}.x_block.attn.qkv.weight`, [4608, 1536]), e(`${p}joint_blocks.${i}.context_block.attn.qkv.weight`, [4608, 1536]));
  out.push(...clipLKeys("text_encoders.clip_l."));
  out.push(e("text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight", [49408, 1280]));
  out.push(e("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight", [4096, 4096]), e("text_encoders.t5xxl.transformer.shared.weight", [32128, 4096]));
  return [...out, ...vaeKeys("first_stage_model.", 16)];
}

/** FLUX.1 transformer (19 double + 38 single blocks), bare as Black Forest Labs ships it or with the checkpoint prefix. */
export function fluxLayout(variant: "dev" | "schnell", prefix = ""): LayoutEntry[] {
  const p = prefix;
  const out: LayoutEntry[] = [
    e(`${p}img_in.weight`, [3072, 64], "BF16"), e(`${p}txt_in.weight`, [3072, 4096], "BF16"), e(`${p}time_in.in_layer.weight`, [3072, 256], "BF16"),
    e(`${p}vector_in.in_layer.weight`, [3072, 768], "BF16"), e(`${p}final_layer.linear.weight`, [64, 3072], "BF16"),
  ];
  if (variant === "dev") out.push(e(`${p}guidance_in.in_layer.weight`, [3072, 256], "BF16"));
  for (let i = 0; i < 19; i++) out.push(e(`${p}double_blocks.${i}.img_attn.qkv.weight`, [9216, 3072], "BF16"), e(`${p}double_blocks.${i}.img_attn.norm.key_norm.scale`, [128], "BF16"));
  for (let i = 0; i < 38; i++) out.push(e(`${p}single_blocks.${i}.linear1.weight`, [21504, 3072], "BF16"));
  return out;
}

/** InstructPix2Pix (SD 1.x with 8 input channels: 4 latent + 4 image). */
export function pix2pixLayout(): LayoutEntry[] {
  return loadLayout("sd15").map(([n, s, d]) => (n === "model.diffusion_model.input_blocks.0.0.weight" ? [n, [320, 8, 3, 3], d] : [n, s, d]));
}

/** SD 2.x inpainting (512-inpainting-ema): SD 2.1's layout with 9 input channels. */
export function sd2InpaintingLayout(): LayoutEntry[] {
  return loadLayout("sd21").map(([n, s, d]) => (n === "model.diffusion_model.input_blocks.0.0.weight" ? [n, [320, 9, 3, 3], d] : [n, s, d]));
}

/** A standalone VAE (vae-ft-mse-840000-ema-pruned style): sd15's VAE keys without the prefix, plus training leftovers. */
export function standaloneVaeLayout(options: { drop?: string[]; extras?: boolean } = {}): LayoutEntry[] {
  const vae = loadLayout("sd15")
    .filter(([n]) => n.startsWith("first_stage_model."))
    .map(([n, s, d]): LayoutEntry => [n.slice("first_stage_model.".length), s, d])
    .filter(([n]) => !(options.drop ?? []).includes(n));
  if (options.extras !== false) {
    vae.push(["loss.discriminator.main.0.weight", [64, 3, 4, 4], "F32"], ["loss.logvar", [], "F32"], ["model_ema.decay", [], "F32"], ["model_ema.num_updates", [], "I32"]);
  }
  return vae;
}
