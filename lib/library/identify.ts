/**
 * What a model file is, from its tensor names and shapes alone (the header): architecture,
 * components, parameter counts. No tensor data is read.
 *
 * Identification relies on structure (which keys exist, tensor ranks, block counts) before
 * absolute sizes, so it also recognises the shrunken synthetic models the tests generate:
 * - FLUX.1: `double_blocks.*` + `single_blocks.*`; SD 3.x: `joint_blocks.*` (MMDiT);
 * - LDM UNets (`input_blocks.*`): `label_emb` → SDXL family, where the base has 9 input blocks
 *   (3 levels) and the refiner 12 (4 levels); otherwise SD 2.x if the cross-attention context is
 *   1024 wide, the text encoder is OpenCLIP (`cond_stage_model.model.*`) or `proj_in` is linear
 *   (2-D), else SD 1.x (also with the 2022 CLIP key names, `cond_stage_model.transformer.encoder.*`
 *   without `text_model.`, which lib/keys.ts renames on load);
 * - the UNet's input channels give the variant: 9 inpainting, 8 instruct-pix2pix, 5 depth.
 *
 * @example
 * const model = await openModel("v1-5-pruned-emaonly.safetensors");
 * identifyModel(model).architecture; // "sd1"
 */
import type { Dtype } from "../dtypes";
import { LEGACY_KEY_REPLACEMENTS } from "../keys";
import { numelOf } from "../model";

export const ARCHITECTURE_IDS = [
  "sd1", "sd1-inpainting", "sd1-instruct-pix2pix", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux", "llm", "unknown",
] as const;
export type ArchitectureId = (typeof ARCHITECTURE_IDS)[number];

export interface ArchitectureInfo {
  id: ArchitectureId;
  /** For people: "SD 1.x", "SDXL". */
  label: string;
  /**
   * Models of one family have the same structure and can be merged; the SD 1.x variants differ
   * only in the UNet's input channels (the known exception, see lib/keys.ts).
   */
  family: string;
}

export const ARCHITECTURES: Record<ArchitectureId, ArchitectureInfo> = {
  "sd1": { id: "sd1", label: "SD 1.x", family: "sd1" },
  "sd1-inpainting": { id: "sd1-inpainting", label: "SD 1.x inpainting", family: "sd1" },
  "sd1-instruct-pix2pix": { id: "sd1-instruct-pix2pix", label: "SD 1.x InstructPix2Pix", family: "sd1" },
  "sd2": { id: "sd2", label: "SD 2.x", family: "sd2" },
  "sdxl": { id: "sdxl", label: "SDXL", family: "sdxl" },
  "sdxl-refiner": { id: "sdxl-refiner", label: "SDXL refiner", family: "sdxl-refiner" },
  "sd3": { id: "sd3", label: "SD 3.x", family: "sd3" },
  "flux": { id: "flux", label: "FLUX.1", family: "flux" },
  // Families (llama, mistral, qwen2…) and sizes come from config.json: lib/hf/architecture.ts.
  "llm": { id: "llm", label: "language model (transformers decoder)", family: "llm" },
  "unknown": { id: "unknown", label: "unknown", family: "unknown" },
};

/** What the file holds as a whole. */
export type ModelKind = "checkpoint" | "unet" | "vae" | "text-encoder" | "lora" | "embedding" | "other";

export type ComponentId = "unet" | "text_encoder" | "text_encoder_2" | "text_encoder_3" | "vae" | "ema" | "other";

export interface ComponentSummary {
  id: ComponentId;
  /** For people: "UNet", "text encoder (CLIP ViT-L/14)", "VAE". */
  label: string;
  /** Key prefix of the component ("" for `other`). */
  prefix: string;
  tensors: number;
  params: number;
}

export interface Identification {
  architecture: ArchitectureId;
  label: string;
  family: string;
  /** Variant of an architecture without its own id, e.g. "inpainting" for an SD 2.x inpainting model. */
  variant?: string;
  kind: ModelKind;
  /** Input channels of the denoiser's first layer, when there is one. */
  inputChannels?: number;
  /** Cross-attention context width of an LDM UNet (768 SD 1.x, 1024 SD 2.x, 2048 SDXL, 1280 refiner). */
  contextDim?: number;
  components: ComponentSummary[];
  /** Elements in all tensors (buffers included). */
  params: number;
  tensors: number;
  /** Tensor count per dtype. */
  dtypes: Partial<Record<Dtype, number>>;
  /** "fp16", "fp32", "bf16" when every float tensor has that type, else "mixed". */
  precision: string;
  /** Things worth knowing, e.g. "SD 2.x v-prediction cannot be told from the weights". */
  notes: string[];
}

/** The part of a tensor description identification needs (TensorInfo has it). */
export interface TensorShape {
  name: string;
  shape: readonly number[];
  dtype: Dtype;
}

interface ComponentRule {
  id: ComponentId;
  prefix: string;
  label: string;
}

const EMA_COUNTERS = new Set(["model_ema.decay", "model_ema.num_updates"]);

/** Longest matching prefix wins; checked in order. */
const COMPONENT_RULES: ComponentRule[] = [
  { id: "unet", prefix: "model.diffusion_model.", label: "UNet" },
  { id: "text_encoder", prefix: "cond_stage_model.transformer.", label: "text encoder (CLIP ViT-L/14)" },
  { id: "text_encoder", prefix: "cond_stage_model.model.", label: "text encoder (OpenCLIP ViT-H/14)" },
  { id: "text_encoder", prefix: "conditioner.embedders.0.transformer.", label: "text encoder (CLIP ViT-L/14)" },
  // The refiner's only text encoder is OpenCLIP bigG, stored as embedder 0.
  { id: "text_encoder", prefix: "conditioner.embedders.0.model.", label: "text encoder (OpenCLIP ViT-bigG/14)" },
  { id: "text_encoder_2", prefix: "conditioner.embedders.1.model.", label: "text encoder 2 (OpenCLIP ViT-bigG/14)" },
  { id: "text_encoder", prefix: "text_encoders.clip_l.", label: "text encoder (CLIP ViT-L/14)" },
  { id: "text_encoder_2", prefix: "text_encoders.clip_g.", label: "text encoder 2 (OpenCLIP ViT-bigG/14)" },
  { id: "text_encoder_3", prefix: "text_encoders.t5xxl.", label: "text encoder 3 (T5-XXL)" },
  { id: "vae", prefix: "first_stage_model.", label: "VAE" },
  { id: "vae", prefix: "vae.", label: "VAE" },
  { id: "ema", prefix: "model_ema.", label: "EMA copy of the UNet" },
];

/** The denoiser's key prefix: checkpoints use `model.diffusion_model.`; bare UNet/DiT files none. */
function denoiserPrefix(names: ReadonlySet<string>): string | undefined {
  const probes = ["input_blocks.0.0.weight", "double_blocks.0.img_attn.qkv.weight", "joint_blocks.0.x_block.attn.qkv.weight", "img_in.weight", "x_embedder.proj.weight"];
  for (const prefix of ["model.diffusion_model.", "diffusion_model.", ""]) {
    if (probes.some((p) => names.has(prefix + p))) return prefix;
  }
  return undefined;
}

function componentRuleFor(name: string, unetPrefix: string | undefined): ComponentRule | undefined {
  if (EMA_COUNTERS.has(name)) return undefined;
  for (const rule of COMPONENT_RULES) if (name.startsWith(rule.prefix)) return rule;
  // A bare denoiser file (FLUX.1 / SD 3 as distributed, ComfyUI UNet saves): every key is the denoiser.
  if (unetPrefix === "" || (unetPrefix === "diffusion_model." && name.startsWith(unetPrefix))) {
    return { id: "unet", prefix: unetPrefix, label: "UNet" };
  }
  return undefined;
}

function maxIndex(names: Iterable<string>, prefix: string): number {
  let max = -1;
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const i = Number.parseInt(n.slice(prefix.length), 10);
    if (Number.isFinite(i) && i > max) max = i;
  }
  return max;
}

function hasPrefix(names: Iterable<string>, prefix: string): boolean {
  for (const n of names) if (n.startsWith(prefix)) return true;
  return false;
}

interface ArchitectureGuess {
  architecture: ArchitectureId;
  variant?: string;
  inputChannels?: number;
  contextDim?: number;
  notes: string[];
}

function variantForChannels(channels: number | undefined): string | undefined {
  if (channels === undefined || channels === 4) return undefined;
  if (channels === 9) return "inpainting";
  if (channels === 8) return "instruct-pix2pix";
  if (channels === 5) return "depth";
  return `${channels}-channel input`;
}

function guessArchitecture(byName: ReadonlyMap<string, TensorShape>, p: string | undefined): ArchitectureGuess {
  const names = byName.keys();
  const keys = [...names];
  const notes: string[] = [];
  if (p === undefined) {
    // A transformers decoder: the embedding and numbered layers (`model.layers.N.*`).
    if (byName.has("model.embed_tokens.weight") && keys.some((k) => k.startsWith("model.layers."))) return { architecture: "llm", notes };
    return { architecture: "unknown", notes };
  }
  const has = (k: string) => byName.has(p + k);
  const shape = (k: string) => byName.get(p + k)?.shape;

  if (has("double_blocks.0.img_attn.qkv.weight") || (hasPrefix(keys, `${p}double_blocks.`) && hasPrefix(keys, `${p}single_blocks.`))) {
    const inCh = shape("img_in.weight")?.[1];
    // FLUX.1 [dev] is guidance-distilled (a guidance embedder); [schnell] has none.
    const variant = has("guidance_in.in_layer.weight") ? "dev" : "schnell";
    return { architecture: "flux", variant, ...(inCh !== undefined ? { inputChannels: inCh } : {}), notes };
  }
  if (hasPrefix(keys, `${p}joint_blocks.`)) {
    const inCh = shape("x_embedder.proj.weight")?.[1];
    // SD 3 / 3.5 medium have 24 joint blocks, SD 3.5 large 38.
    const depth = maxIndex(keys, `${p}joint_blocks.`) + 1;
    const variant = depth === 24 ? "medium" : depth === 38 ? "large" : undefined;
    return { architecture: "sd3", ...(variant ? { variant } : {}), ...(inCh !== undefined ? { inputChannels: inCh } : {}), notes };
  }
  const inConv = shape("input_blocks.0.0.weight");
  if (!inConv) return { architecture: "unknown", notes };
  const inputChannels = inConv.length === 4 ? inConv[1] : undefined;
  const contextDim = byName.get(keys.find((k) => k.startsWith(p) && k.endsWith(".attn2.to_k.weight")) ?? "")?.shape[1];
  const base = { ...(inputChannels !== undefined ? { inputChannels } : {}), ...(contextDim !== undefined ? { contextDim } : {}) };
  const variant = variantForChannels(inputChannels);

  if (has("label_emb.0.0.weight")) {
    // SDXL base: 3 resolution levels = input_blocks 0..8; refiner: 4 levels = 0..11.
    const blocks = maxIndex(keys, `${p}input_blocks.`) + 1;
    const admIn = shape("label_emb.0.0.weight")?.[1];
    const refiner = blocks === 12 || (blocks !== 9 && (admIn === 2560 || contextDim === 1280));
    const architecture = refiner ? "sdxl-refiner" : "sdxl";
    return { architecture, ...(variant ? { variant } : {}), ...base, notes };
  }

  let sd2: boolean;
  if (contextDim === 768 || contextDim === 1024) sd2 = contextDim === 1024;
  else if (hasPrefix(keys, "cond_stage_model.model.")) sd2 = true;
  else if (hasPrefix(keys, "cond_stage_model.transformer.")) sd2 = false;
  else sd2 = shape("input_blocks.1.1.proj_in.weight")?.length === 2;
  if (sd2) {
    notes.push("SD 2.x: v-prediction (768-v) and epsilon (512-base) models have the same weights layout; keep the model's .yaml config beside it");
    return { architecture: "sd2", ...(variant ? { variant } : {}), ...base, notes };
  }
  if (inputChannels === 9) return { architecture: "sd1-inpainting", ...base, notes };
  if (inputChannels === 8) return { architecture: "sd1-instruct-pix2pix", ...base, notes };
  return { architecture: "sd1", ...(variant ? { variant } : {}), ...base, notes };
}

function guessKind(names: readonly string[], components: ComponentSummary[]): ModelKind {
  const ids = new Set(components.filter((c) => c.id !== "other").map((c) => c.id));
  if (ids.has("unet") && (ids.has("vae") || ids.has("text_encoder") || ids.has("ema"))) return "checkpoint";
  if (ids.has("unet")) return "unet";
  if (names.some((n) => /lora_(up|down|A|B)\b|\.lora_|hada_w|lokr_w/.test(n))) return "lora";
  if (names.some((n) => n === "emb_params" || n === "clip_l" || n === "clip_g" || n.startsWith("string_to_param"))) return "embedding";
  if (ids.has("vae") && ids.size === 1) return "vae";
  // A standalone VAE: encoder/decoder at the top level, no prefix.
  if (names.some((n) => n.startsWith("encoder.conv_in.")) && names.some((n) => n.startsWith("decoder.conv_out."))) return "vae";
  if ([...ids].every((i) => i.startsWith("text_encoder")) && ids.size > 0) return "text-encoder";
  return "other";
}

function precisionOf(dtypes: Partial<Record<Dtype, number>>): string {
  const floats = (["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"] as Dtype[]).filter((d) => (dtypes[d] ?? 0) > 0);
  if (floats.length === 0) return "none";
  if (floats.length > 1) return "mixed";
  const names: Partial<Record<Dtype, string>> = { F16: "fp16", BF16: "bf16", F32: "fp32", F64: "fp64", F8_E4M3: "fp8_e4m3", F8_E5M2: "fp8_e5m2" };
  return names[floats[0]!]!;
}

/**
 * Identifies a model from its tensor table.
 *
 * @example
 * const id = identifyModel(await openModel("sd_xl_base_1.0.safetensors"));
 * id.architecture;          // "sdxl"
 * id.components.map((c) => c.id); // ["unet", "text_encoder", "text_encoder_2", "vae"]
 */
export function identifyModel(model: { tensors: readonly TensorShape[] }): Identification {
  const byName = new Map<string, TensorShape>();
  for (const t of model.tensors) byName.set(t.name, t);
  const names = [...byName.keys()];
  const nameSet = new Set(names);
  const unetPrefix = denoiserPrefix(nameSet);
  const guess = guessArchitecture(byName, unetPrefix);

  const components = new Map<string, ComponentSummary>();
  const dtypes: Partial<Record<Dtype, number>> = {};
  let params = 0;
  for (const t of byName.values()) {
    const n = numelOf(t.shape);
    params += n;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    const rule = componentRuleFor(t.name, unetPrefix);
    const key = rule ? `${rule.id}\u0000${rule.prefix}` : "other";
    let c = components.get(key);
    if (!c) {
      c = rule ? { id: rule.id, label: rule.label, prefix: rule.prefix, tensors: 0, params: 0 } : { id: "other", label: "other (buffers, EMA counters)", prefix: "", tensors: 0, params: 0 };
      components.set(key, c);
    }
    c.tensors++;
    c.params += n;
  }
  const order: ComponentId[] = ["unet", "text_encoder", "text_encoder_2", "text_encoder_3", "vae", "ema", "other"];
  const list = [...components.values()].sort((x, y) => order.indexOf(x.id) - order.indexOf(y.id));
  const arch = ARCHITECTURES[guess.architecture];
  const unet = list.find((c) => c.id === "unet");
  if (unet && (guess.architecture === "sd3" || guess.architecture === "flux")) unet.label = guess.architecture === "sd3" ? "diffusion transformer (MMDiT)" : "diffusion transformer (FLUX)";
  const notes = [...guess.notes];
  if (list.some((c) => c.id === "ema")) notes.push("carries an EMA copy of the UNet (model_ema.*); pruning drops it");
  if (names.some((n) => LEGACY_KEY_REPLACEMENTS.some(([from]) => n.startsWith(from)))) {
    notes.push("2022-era text encoder key names (cond_stage_model.transformer.* without text_model.): opening the file renames them to the modern names, as the classic tool does");
  }
  const kind = guessKind(names, list);
  return {
    architecture: guess.architecture,
    label: guess.variant ? `${arch.label} ${guess.variant}` : arch.label,
    family: arch.family,
    ...(guess.variant ? { variant: guess.variant } : {}),
    kind,
    ...(guess.inputChannels !== undefined ? { inputChannels: guess.inputChannels } : {}),
    ...(guess.contextDim !== undefined ? { contextDim: guess.contextDim } : {}),
    components: list,
    params,
    tensors: byName.size,
    dtypes,
    precision: precisionOf(dtypes),
    notes,
  };
}

/** "SD 1.x (sd1)": how messages name an architecture. */
export function describeArchitecture(id: Pick<Identification, "architecture" | "label">): string {
  return `${id.label} (${id.architecture})`;
}

/** 859520964 → "859.5 M". */
export function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}
