/**
 * Where a LoRA module lands in a checkpoint: its name → a checkpoint key and the rows of that
 * tensor it updates (all rows, or a slice when one checkpoint tensor holds several modules'
 * weights: OpenCLIP's `in_proj_weight` = q, k, v; FLUX's `qkv` and `linear1`).
 *
 * Sources of the rules (read, not copied):
 * - kohya-ss sd-scripts `networks/lora.py`: a module name is a prefix (`lora_unet`, `lora_te`,
 *   `lora_te1`, `lora_te2`) + the module path with dots turned into `_`. SD 1.x/2.x UNets use
 *   diffusers names (`down_blocks_0_attentions_0_…`), SDXL keeps SGM names (`input_blocks_4_1_…`);
 *   text encoders use Hugging Face CLIP names (`text_model_encoder_layers_0_self_attn_q_proj`).
 * - AUTOMATIC1111 `extensions-builtin/Lora/lora_convert.py` (`convert_diffusers_name_to_compvis`):
 *   diffusers UNet names → LDM ones (`input_blocks_{1 + 3·block + layer}_{1 attention | 0 resnet}`,
 *   resnet `conv1` → `in_layers_2`, `conv2` → `out_layers_3`, `time_emb_proj` → `emb_layers_1`,
 *   `conv_shortcut` → `skip_connection`, downsamplers → `input_blocks_{3 + 3·block}_0_op`,
 *   upsamplers → `output_blocks_{2 + 3·block}_{1|2}_conv`), and OpenCLIP text encoders (SD 2.x,
 *   SDXL's second): `self_attn_{q,k,v}_proj` are slices of `attn.in_proj_weight`, `out_proj` is
 *   `attn.out_proj`, `mlp_fc1` → `mlp.c_fc`, `mlp_fc2` → `mlp.c_proj`.
 * - kohya-ss sd-scripts `networks/convert_flux_lora.py`: FLUX LoRAs in BFL names
 *   (`lora_unet_double_blocks_0_img_attn_qkv`) and in diffusers names (ai-toolkit,
 *   `transformer.transformer_blocks.0.attn.to_q` = rows [0, h) of `double_blocks.0.img_attn.qkv`;
 *   `single_transformer_blocks.N.attn.to_q/k/v` and `proj_mlp` = rows of `single_blocks.N.linear1`).
 */
import type { ArchitectureId } from "../library/identify";
import type { ModelFile, TensorInfo } from "../model";

export type LoraComponent = "unet" | "te" | "te1" | "te2" | "transformer";

/** A module name split into the network it targets and its path (dots as `_`). */
export interface ModuleAddress {
  component: LoraComponent;
  path: string;
}

export interface LoraTarget {
  tensor: TensorInfo;
  /** First row of the tensor the module updates, and how many. */
  rowStart: number;
  rowCount: number;
  /** Text encoder or denoiser, for the separate ratios. */
  textEncoder: boolean;
}

const flat = (s: string) => s.replace(/\./g, "_");

/** `lora_unet_x_y` → unet "x_y"; `unet.x.y` → unet "x_y"; `text_encoder_2.…` → te2. */
export function addressOf(name: string): ModuleAddress | undefined {
  let m = /^lora_unet_(.+)$/.exec(name);
  if (m) return { component: "unet", path: m[1]! };
  m = /^lora_te([12])?_(.+)$/.exec(name);
  if (m) return { component: m[1] ? (`te${m[1]}` as "te1" | "te2") : "te", path: m[2]! };
  m = /^lora_transformer_(.+)$/.exec(name);
  if (m) return { component: "transformer", path: m[1]! };
  m = /^(?:base_model\.model\.)?(unet|text_encoder_2|text_encoder|transformer|diffusion_model|model\.diffusion_model)\.(.+)$/.exec(name);
  if (m) {
    const c = m[1]!;
    const component: LoraComponent = c === "text_encoder" ? "te" : c === "text_encoder_2" ? "te2" : c === "transformer" ? "transformer" : "unet";
    return { component, path: flat(m[2]!) };
  }
  m = /^base_model\.model\.(.+)$/.exec(name);
  if (m) return { component: "unet", path: flat(m[1]!) };
  return undefined;
}

const RESNET_SUFFIX: Record<string, string> = { conv1: "in_layers_2", conv2: "out_layers_3", time_emb_proj: "emb_layers_1", conv_shortcut: "skip_connection" };

/**
 * Diffusers UNet path → LDM path candidates (A1111's convert_diffusers_name_to_compvis); a path
 * already in LDM names (kohya SDXL) is returned as is.
 */
export function ldmUnetPaths(path: string): string[] {
  let m = /^down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$/.exec(path);
  if (m) {
    const suffix = m[2] === "resnets" ? RESNET_SUFFIX[m[4]!] ?? m[4]! : m[4]!;
    return [`input_blocks_${1 + 3 * Number(m[1]) + Number(m[3])}_${m[2] === "attentions" ? 1 : 0}_${suffix}`];
  }
  m = /^mid_block_(attentions|resnets)_(\d+)_(.+)$/.exec(path);
  if (m) {
    const suffix = m[1] === "resnets" ? RESNET_SUFFIX[m[3]!] ?? m[3]! : m[3]!;
    return [`middle_block_${m[1] === "attentions" ? 1 : 2 * Number(m[2])}_${suffix}`];
  }
  m = /^up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$/.exec(path);
  if (m) {
    const suffix = m[2] === "resnets" ? RESNET_SUFFIX[m[4]!] ?? m[4]! : m[4]!;
    return [`output_blocks_${3 * Number(m[1]) + Number(m[3])}_${m[2] === "attentions" ? 1 : 0}_${suffix}`];
  }
  m = /^down_blocks_(\d+)_downsamplers_0_conv$/.exec(path);
  if (m) return [`input_blocks_${3 + 3 * Number(m[1])}_0_op`];
  // SD 1.x/2.x up block 0 has no attention (upsampler at index 1); SDXL's has (index 2).
  m = /^up_blocks_(\d+)_upsamplers_0_conv$/.exec(path);
  if (m) return [`output_blocks_${2 + 3 * Number(m[1])}_1_conv`, `output_blocks_${2 + 3 * Number(m[1])}_2_conv`];
  if (path === "conv_in") return ["input_blocks_0_0"];
  if (path === "conv_out") return ["out_2"];
  m = /^time_embedding_linear_([12])$/.exec(path);
  if (m) return [`time_embed_${2 * Number(m[1]) - 2}`];
  m = /^add_embedding_linear_([12])$/.exec(path);
  if (m) return [`label_emb_0_${2 * Number(m[1]) - 2}`];
  return [path];
}

/** HF CLIP text-encoder path on an OpenCLIP checkpoint: key suffix and q/k/v slice. */
function openClipTarget(path: string): { layer: string; key: string; slice?: number } | undefined {
  const m = /^text_model_encoder_layers_(\d+)_(self_attn_([qkv])_proj|self_attn_out_proj|mlp_fc1|mlp_fc2)$/.exec(path);
  if (!m) return undefined;
  if (m[3]) return { layer: m[1]!, key: "attn.in_proj_weight", slice: "qkv".indexOf(m[3]) };
  return { layer: m[1]!, key: m[2] === "self_attn_out_proj" ? "attn.out_proj.weight" : m[2] === "mlp_fc1" ? "mlp.c_fc.weight" : "mlp.c_proj.weight" };
}

/** Diffusers FLUX path → BFL key (without prefix) and slice [start, count) in units of the hidden size h. */
function fluxDiffusersTarget(path: string): { key: string; slice?: [number, number | "rest"] } | undefined {
  let m = /^transformer_blocks_(\d+)_(.+)$/.exec(path);
  if (m) {
    const b = `double_blocks.${m[1]}.`;
    const rest = m[2]!;
    const qkv = /^attn_(to|add)_([qkv])(_proj)?$/.exec(rest);
    if (qkv && (qkv[1] === "to" ? !qkv[3] : qkv[3])) return { key: `${b}${qkv[1] === "to" ? "img" : "txt"}_attn.qkv.weight`, slice: ["qkv".indexOf(qkv[2]!), 1] };
    const simple: Record<string, string> = {
      attn_to_out_0: "img_attn.proj", attn_to_add_out: "txt_attn.proj", ff_net_0_proj: "img_mlp.0", ff_net_2: "img_mlp.2",
      ff_context_net_0_proj: "txt_mlp.0", ff_context_net_2: "txt_mlp.2", norm1_linear: "img_mod.lin", norm1_context_linear: "txt_mod.lin",
    };
    return simple[rest] ? { key: `${b}${simple[rest]}.weight` } : undefined;
  }
  m = /^single_transformer_blocks_(\d+)_(.+)$/.exec(path);
  if (m) {
    const b = `single_blocks.${m[1]}.`;
    const qkv = /^attn_to_([qkv])$/.exec(m[2]!);
    if (qkv) return { key: `${b}linear1.weight`, slice: ["qkv".indexOf(qkv[1]!), 1] };
    if (m[2] === "proj_mlp") return { key: `${b}linear1.weight`, slice: [3, "rest"] };
    if (m[2] === "proj_out") return { key: `${b}linear2.weight` };
    if (m[2] === "norm_linear") return { key: `${b}modulation.lin.weight` };
    return undefined;
  }
  // Embedders; `norm_out.linear` is left unmatched: diffusers swaps its shift and scale halves.
  const embed: Record<string, string> = {
    x_embedder: "img_in", context_embedder: "txt_in", proj_out: "final_layer.linear",
    time_text_embed_timestep_embedder_linear_1: "time_in.in_layer", time_text_embed_timestep_embedder_linear_2: "time_in.out_layer",
    time_text_embed_text_embedder_linear_1: "vector_in.in_layer", time_text_embed_text_embedder_linear_2: "vector_in.out_layer",
    time_text_embed_guidance_embedder_linear_1: "guidance_in.in_layer", time_text_embed_guidance_embedder_linear_2: "guidance_in.out_layer",
  };
  return embed[path] ? { key: `${embed[path]}.weight` } : undefined;
}

/** Maps of one checkpoint: flattened key (`_` for `.`, no `.weight`) → tensor, per network. */
function flatIndex(model: ModelFile, prefix: string): Map<string, TensorInfo> {
  const map = new Map<string, TensorInfo>();
  for (const t of model.tensors) {
    if (!t.name.startsWith(prefix) || !t.name.endsWith(".weight")) continue;
    map.set(flat(t.name.slice(prefix.length, -".weight".length)), t);
  }
  return map;
}

/** The checkpoint's prefix of FLUX transformer keys ("" in BFL files, `model.diffusion_model.` in ComfyUI ones). */
function fluxPrefix(model: ModelFile): string {
  for (const p of ["", "model.diffusion_model.", "diffusion_model."]) if (model.byName.has(`${p}double_blocks.0.img_attn.qkv.weight`)) return p;
  return "";
}

/**
 * A resolver of module names for one checkpoint of architecture `arch` (lib/library/identify.ts).
 * Returns undefined for a module that targets nothing in the checkpoint.
 */
export function targetResolver(model: ModelFile, arch: ArchitectureId): (name: string) => LoraTarget | undefined {
  const family = arch.startsWith("sd1") ? "sd1" : arch === "sdxl-refiner" ? "sdxl" : arch;
  const whole = (tensor: TensorInfo | undefined, textEncoder: boolean): LoraTarget | undefined =>
    tensor && tensor.shape.length >= 2 ? { tensor, rowStart: 0, rowCount: tensor.shape[0]!, textEncoder } : undefined;
  const sliced = (tensor: TensorInfo | undefined, index: number, parts: number, textEncoder: boolean): LoraTarget | undefined => {
    if (!tensor || tensor.shape.length !== 2 || tensor.shape[0]! % parts !== 0) return undefined;
    const h = tensor.shape[0]! / parts;
    return { tensor, rowStart: index * h, rowCount: h, textEncoder };
  };
  const openClip = (prefix: string) => (path: string): LoraTarget | undefined => {
    const t = openClipTarget(path);
    if (!t) return undefined;
    const tensor = model.byName.get(`${prefix}${t.layer}.${t.key}`);
    return t.slice === undefined ? whole(tensor, true) : sliced(tensor, t.slice, 3, true);
  };
  if (family === "flux") {
    const prefix = fluxPrefix(model);
    const index = flatIndex(model, prefix);
    return (name) => {
      const a = addressOf(name);
      if (!a) return undefined;
      if (a.component === "unet") return whole(index.get(a.path), false);
      if (a.component !== "transformer") return undefined;
      const t = fluxDiffusersTarget(a.path);
      if (!t) return undefined;
      const tensor = model.byName.get(prefix + t.key);
      if (!t.slice) return whole(tensor, false);
      if (!tensor || tensor.shape.length !== 2) return undefined;
      const h = tensor.shape[1]!; // the hidden size: q, k, v (and the MLP of linear1) are rows of width h
      const [start, count] = t.slice;
      const rowCount = count === "rest" ? tensor.shape[0]! - start * h : count * h;
      return rowCount > 0 && (start * h + rowCount) <= tensor.shape[0]! ? { tensor, rowStart: start * h, rowCount, textEncoder: false } : undefined;
    };
  }
  const unet = flatIndex(model, "model.diffusion_model.");
  const te = family === "sdxl" ? flatIndex(model, "conditioner.embedders.0.transformer.") : flatIndex(model, "cond_stage_model.transformer.");
  const sd2Te = openClip("cond_stage_model.model.transformer.resblocks.");
  const sdxlTe2 = openClip(arch === "sdxl-refiner" ? "conditioner.embedders.0.model.transformer.resblocks." : "conditioner.embedders.1.model.transformer.resblocks.");
  return (name) => {
    const a = addressOf(name);
    if (!a) return undefined;
    switch (a.component) {
      case "unet":
        for (const p of ldmUnetPaths(a.path)) {
          const t = whole(unet.get(p), false);
          if (t) return t;
        }
        return undefined;
      case "te":
      case "te1":
        if (family === "sd2") return sd2Te(a.path);
        return whole(te.get(a.path), true);
      case "te2":
        return family === "sdxl" ? sdxlTe2(a.path) : undefined;
      default:
        return undefined;
    }
  };
}
