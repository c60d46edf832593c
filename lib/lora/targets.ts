/**
 * The modules kohya-ss sd-scripts puts a LoRA on (`networks/lora.py`), as checkpoint tensors and
 * kohya names, for extraction: every Linear and 1×1 conv of the UNet's transformer blocks
 * (`Transformer2DModel`: proj_in, proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj,
 * ff.net.2) and of the text encoders' attention and MLP (`CLIPAttention`, `CLIPMLP`); with a conv
 * rank also the ResNet blocks and samplers (`ResnetBlock2D`: conv1, conv2 (3×3), time_emb_proj,
 * conv_shortcut; `Downsample2D`, `Upsample2D` convs). SD 1.x / 2.x UNet names are diffusers'
 * (the inverse of lib/lora/names.ts's conversion, checked against it module by module), SDXL's
 * are SGM names, as kohya writes them.
 */
import type { ArchitectureId } from "../library/identify";
import type { ModelFile, TensorInfo } from "../model";
import { targetResolver } from "./names";

export interface ExtractTarget {
  /** kohya module name (`lora_unet_…`, `lora_te_…`, `lora_te1_…`, `lora_te2_…`). */
  name: string;
  tensor: TensorInfo;
  rowStart: number;
  rowCount: number;
  textEncoder: boolean;
  /** A k×k conv with k > 1 (takes the conv rank). */
  conv3x3: boolean;
}

const RESNET: Record<string, string> = { "in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj", skip_connection: "conv_shortcut" };
const ATTENTION_CHILD = /^(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))$/;

/** An LDM UNet module path (no `.weight`) → kohya's diffusers path (SD 1.x / 2.x), or undefined for no target. */
function diffusersPath(p: string, conv: boolean): string | undefined {
  let m = /^input_blocks\.(\d+)\.([01])\.(.+)$/.exec(p);
  if (m && m[1] !== "0") {
    const n = Number(m[1]), level = Math.floor((n - 1) / 3), layer = (n - 1) % 3;
    if (m[2] === "1") return ATTENTION_CHILD.test(m[3]!) ? `down_blocks.${level}.attentions.${layer}.${m[3]}` : undefined;
    if (!conv) return undefined;
    if (layer === 2) return m[3] === "op" ? `down_blocks.${level}.downsamplers.0.conv` : undefined;
    return RESNET[m[3]!] ? `down_blocks.${level}.resnets.${layer}.${RESNET[m[3]!]}` : undefined;
  }
  m = /^middle_block\.(\d)\.(.+)$/.exec(p);
  if (m) {
    if (m[1] === "1") return ATTENTION_CHILD.test(m[2]!) ? `mid_block.attentions.0.${m[2]}` : undefined;
    return conv && RESNET[m[2]!] ? `mid_block.resnets.${Number(m[1]) / 2}.${RESNET[m[2]!]}` : undefined;
  }
  m = /^output_blocks\.(\d+)\.(\d)\.(.+)$/.exec(p);
  if (m) {
    const n = Number(m[1]), level = Math.floor(n / 3), layer = n % 3;
    if (m[3] === "conv" && m[2] !== "0") return conv ? `up_blocks.${level}.upsamplers.0.conv` : undefined;
    if (m[2] === "1") return ATTENTION_CHILD.test(m[3]!) ? `up_blocks.${level}.attentions.${layer}.${m[3]}` : undefined;
    return conv && m[2] === "0" && RESNET[m[3]!] ? `up_blocks.${level}.resnets.${layer}.${RESNET[m[3]!]}` : undefined;
  }
  return undefined;
}

/** An SGM UNet path (SDXL) that kohya targets, kept as is. */
function sgmPath(p: string, conv: boolean): string | undefined {
  let m = /^(input_blocks\.\d+\.1|middle_block\.1|output_blocks\.\d+\.1)\.(.+)$/.exec(p);
  if (m && ATTENTION_CHILD.test(m[2]!)) return p;
  if (!conv) return undefined;
  m = /^(input_blocks\.\d+\.0|middle_block\.[02]|output_blocks\.\d+\.0)\.(in_layers\.2|out_layers\.3|emb_layers\.1|skip_connection)$/.exec(p);
  if (m) return p;
  return /^input_blocks\.\d+\.0\.op$|^output_blocks\.\d+\.2\.conv$/.test(p) ? p : undefined;
}

const CLIP_CHILD = /^text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$/;

/** Every kohya target of a checkpoint, each checked against the bake mapping (names.ts). */
export function extractTargets(model: ModelFile, arch: ArchitectureId, conv: boolean): ExtractTarget[] {
  const family = arch.startsWith("sd1") ? "sd1" : arch;
  if (family !== "sd1" && family !== "sd2" && family !== "sdxl") return [];
  const resolve = targetResolver(model, arch);
  const candidates: string[] = [];
  const openClip = (prefix: string, component: string) => {
    for (const t of model.tensors) {
      const m = new RegExp(`^${prefix.replace(/\./g, "\\.")}(\\d+)\\.(attn\\.in_proj_weight|attn\\.out_proj\\.weight|mlp\\.c_fc\\.weight|mlp\\.c_proj\\.weight)$`).exec(t.name);
      if (!m) continue;
      const layer = `${component}_text_model_encoder_layers_${m[1]}_`;
      if (m[2] === "attn.in_proj_weight") for (const x of ["q", "k", "v"]) candidates.push(`${layer}self_attn_${x}_proj`);
      else candidates.push(layer + (m[2] === "attn.out_proj.weight" ? "self_attn_out_proj" : m[2] === "mlp.c_fc.weight" ? "mlp_fc1" : "mlp_fc2"));
    }
  };
  for (const t of model.tensors) {
    if (!t.name.endsWith(".weight")) continue;
    const k = t.name.slice(0, -".weight".length);
    if (k.startsWith("model.diffusion_model.")) {
      const p = k.slice("model.diffusion_model.".length);
      const path = family === "sdxl" ? sgmPath(p, conv) : diffusersPath(p, conv);
      if (path) candidates.push(`lora_unet_${path.replace(/\./g, "_")}`);
    } else if (family === "sd1" && k.startsWith("cond_stage_model.transformer.") && CLIP_CHILD.test(k.slice("cond_stage_model.transformer.".length))) {
      candidates.push(`lora_te_${k.slice("cond_stage_model.transformer.".length).replace(/\./g, "_")}`);
    } else if (family === "sdxl" && k.startsWith("conditioner.embedders.0.transformer.") && CLIP_CHILD.test(k.slice("conditioner.embedders.0.transformer.".length))) {
      candidates.push(`lora_te1_${k.slice("conditioner.embedders.0.transformer.".length).replace(/\./g, "_")}`);
    }
  }
  if (family === "sd2") openClip("cond_stage_model.model.transformer.resblocks.", "lora_te");
  if (family === "sdxl") openClip("conditioner.embedders.1.model.transformer.resblocks.", "lora_te2");
  const out: ExtractTarget[] = [];
  for (const name of candidates) {
    const t = resolve(name);
    if (!t) continue; // a path the bake mapping would not find back: never written
    const s = t.tensor.shape;
    out.push({ name, tensor: t.tensor, rowStart: t.rowStart, rowCount: t.rowCount, textEncoder: t.textEncoder, conv3x3: s.length === 4 && (s[2]! > 1 || s[3]! > 1) });
  }
  return out.filter((t) => conv || !t.conv3x3);
}
