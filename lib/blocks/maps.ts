/**
 * Block maps ("merge block weighted", MBW): which block of its architecture each tensor belongs
 * to, with the block names users type in SuperMerger, sd-meh and sd-webui-model-mixer.
 *
 * The maps follow SuperMerger (hako-mikan/sd-webui-supermerger, `scripts/mergers/mergers.py`,
 * `blockfromkey` and the merge loop of `smerge`), with the key rules of the project's layouts notes
 * where SuperMerger is silent. Where tools disagree on an edge:
 *
 * | key | SD 1.x / 2.x (26) | SDXL (20) | why |
 * |---|---|---|---|
 * | `time_embed.*` | IN00 | no block (copied from A) | SD: SuperMerger's merge loop ("before input blocks", weight 0 = IN00), sd-meh; its newer `blockfromkey` returns `BLOCKID[-2 + 1]`, a Python index wrap to OUT11. SDXL: `blockfromkey` returns "Not Merge" |
 * | `label_emb.*` | BASE (SDXL refiner only) | no block (copied from A) | SD: no block regex matches, so SuperMerger keeps the base alpha; SDXL: "Not Merge" |
 * | `out.*` | OUT11 | OUT08 | SuperMerger (`.out.` → the last output block) |
 * | VAE `first_stage_model.*` | BASE | BASE | SuperMerger (SDXL: `("VAE", "BASE")`) |
 * | text encoders | BASE | BASE | every non-UNet key whose name contains `model` |
 * | `position_ids`, `model_ema.decay`, `model_ema.num_updates`, scheduler buffers | no block | no block | SuperMerger's skip list and "model in key" test |
 *
 * SuperMerger also skips every key whose name contains neither `weight` nor `bias` (OpenCLIP's
 * `positional_embedding`, `text_projection`, `logit_scale`; FLUX's norm `.scale` vectors). Those
 * are parameters of their module; here they belong to its block (BASE, Dnn, Snn).
 *
 * FLUX.1 (61): `CLIP, T5, IN, D00…D18, S00…S37, OUT` as SuperMerger's `BLOCKIDFLUX`; the VAE has
 * no block (SuperMerger: "Not Merge"). SD 3.x: `CLIP, T5, IN, J00…Jnn, OUT`, SuperMerger has no
 * SD 3 map: the parts are those of ComfyUI's ModelMergeSD3 nodes (`pos_embed`, `x_embedder`,
 * `context_embedder`, `y_embedder`, `t_embedder` → IN; `joint_blocks.N` → Jnn; `final_layer` →
 * OUT), the text encoders named as for FLUX, the VAE without a block as for FLUX.
 *
 * A `null` block means the tensor is not merged: it is copied from model A.
 *
 * @example
 * const map = blockMapFor("sdxl")!;
 * map.names.length;                                           // 20
 * map.blockOf("model.diffusion_model.input_blocks.4.1.proj_in.weight"); // "IN04"
 * map.blockOf("conditioner.embedders.0.transformer.text_model.embeddings.position_ids"); // null
 */
import type { ArchitectureId } from "../library/identify";

export type BlockMapId = "sd" | "sdxl" | "flux" | "sd3" | "llm";

export interface BlockMap {
  /** "sd" (SD 1.x, 2.x and the SDXL refiner: 26 blocks), "sdxl" (20), "flux" (61), "sd3". */
  id: BlockMapId;
  /** For people: "SD 1.x / 2.x (26 blocks)". */
  label: string;
  /** Block names in the order users list their values. */
  names: readonly string[];
  /** The block of a tensor, or null for a tensor that is not merged (copied from A). */
  blockOf(key: string): string | null;
  /** What each block holds, for `tensormerge blocks` and the README ("none": the tensors in no block). */
  legend: readonly (readonly [string, string])[];
  /** The key patterns of one block, e.g. "input_blocks.0, time_embed" for IN00. */
  keysOf(block: string): string;
}

/** keysOf from a block → patterns function over a map's names. */
function keysFrom(names: readonly string[], patterns: (block: string) => string): (block: string) => string {
  const table = new Map(names.map((b) => [b, patterns(b)]));
  return (block) => table.get(block) ?? "";
}

const pad2 = (i: number) => String(i).padStart(2, "0");
const range = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${pad2(i)}`);

/** Not merged anywhere: CLIP's position ids (an index buffer) and the EMA counters. */
const NEVER_MERGED = /(?:^|\.)position_ids$|^model_ema\.(?:decay|num_updates)$/;

/** The UNet's top-level modules, with or without the checkpoint prefix. */
const LDM_UNET = /^(?:model\.diffusion_model\.|diffusion_model\.)?(?:input_blocks\.(\d+)\.|(middle_block)\.|output_blocks\.(\d+)\.|(time_embed)\.|(label_emb)\.|(out)\.)/;

interface LdmOptions {
  id: "sd" | "sdxl";
  label: string;
  /** Input blocks = output blocks: 12 (SD 1.x / 2.x / refiner), 9 (SDXL). */
  levels: number;
  /** Block of `time_embed.*` and `label_emb.*`: SD: IN00 / BASE; SDXL: none (SuperMerger). */
  timeEmbed: string | null;
  labelEmb: string | null;
}

function ldmMap(o: LdmOptions): BlockMap {
  const names = ["BASE", ...range("IN", o.levels), "M00", ...range("OUT", o.levels)];
  const inputs = range("IN", o.levels);
  const outputs = range("OUT", o.levels);
  const last = outputs[o.levels - 1]!;
  const blockOf = (key: string): string | null => {
    const m = LDM_UNET.exec(key);
    if (m) {
      if (m[1] !== undefined) return inputs[Number(m[1])] ?? null;
      if (m[2] !== undefined) return "M00";
      if (m[3] !== undefined) return outputs[Number(m[3])] ?? null;
      if (m[4] !== undefined) return o.timeEmbed;
      if (m[5] !== undefined) return o.labelEmb;
      return last;
    }
    if (NEVER_MERGED.test(key)) return null;
    // Text encoders, VAE, the EMA copy, other UNet modules: SuperMerger's base alpha ("model" in key).
    return key.includes("model") ? "BASE" : null;
  };
  const legend: [string, string][] = [
    ["BASE", "text encoder(s) and VAE: every other key whose name contains `model` (EMA copy included)"],
    [`IN00…IN${pad2(o.levels - 1)}`, `\`input_blocks.N\`${o.timeEmbed ? `; IN00 also \`time_embed\`` : ""}`],
    ["M00", "`middle_block`"],
    [`OUT00…${last}`, `\`output_blocks.N\`; ${last} also \`out\``],
    ["none", `${o.timeEmbed ? "" : "`time_embed`, `label_emb`, "}\`position_ids\`, \`model_ema.decay\`/\`num_updates\`, scheduler buffers: copied from A`],
  ];
  if (o.labelEmb === "BASE") legend[0] = ["BASE", `${legend[0]![1]}; \`label_emb\` (refiner)`];
  const keysOf = keysFrom(names, (b) => {
    if (b === "BASE") return `text encoders, VAE${o.labelEmb === "BASE" ? ", label_emb" : ""}`;
    if (b === "M00") return "middle_block";
    const n = Number(b.replace(/\D/g, ""));
    if (b.startsWith("IN")) return `input_blocks.${n}${n === 0 && o.timeEmbed ? ", time_embed" : ""}`;
    return `output_blocks.${n}${b === last ? ", out" : ""}`;
  });
  return { id: o.id, label: o.label, names, blockOf, legend, keysOf };
}

/** SD 1.x, SD 2.x (and their inpainting / pix2pix variants) and the SDXL refiner (4 levels: 12 input blocks). */
export const SD_BLOCKS: BlockMap = ldmMap({ id: "sd", label: "SD 1.x / 2.x (26 blocks)", levels: 12, timeEmbed: "IN00", labelEmb: "BASE" });
export const SDXL_BLOCKS: BlockMap = ldmMap({ id: "sdxl", label: "SDXL (20 blocks)", levels: 9, timeEmbed: null, labelEmb: null });

/** The denoiser of a DiT checkpoint: bare (as BFL / Stability ship it) or under a ComfyUI / A1111 prefix. */
const DIT_PREFIX = /^(?:model\.diffusion_model\.|diffusion_model\.)?/;
const TEXT_CLIP = /^text_encoders\.clip_[lg]\./;
const TEXT_T5 = /^text_encoders\.t5xxl\./;
const VAE = /^(?:vae|first_stage_model)\./;

const FLUX_DOUBLE = 19;
const FLUX_SINGLE = 38;
const FLUX_PARTS = /^(?:double_blocks\.(\d+)\.|single_blocks\.(\d+)\.|((?:img|txt|time|vector|guidance)_in)\.|(final_layer)\.)/;

function flux(): BlockMap {
  const doubles = range("D", FLUX_DOUBLE);
  const singles = range("S", FLUX_SINGLE);
  const names = ["CLIP", "T5", "IN", ...doubles, ...singles, "OUT"];
  const blockOf = (key: string): string | null => {
    if (NEVER_MERGED.test(key) || VAE.test(key)) return null;
    if (TEXT_T5.test(key)) return "T5";
    if (TEXT_CLIP.test(key)) return "CLIP";
    const m = FLUX_PARTS.exec(key.replace(DIT_PREFIX, ""));
    if (!m) return null;
    if (m[1] !== undefined) return doubles[Number(m[1])] ?? null;
    if (m[2] !== undefined) return singles[Number(m[2])] ?? null;
    return m[3] !== undefined ? "IN" : "OUT";
  };
  const legend: [string, string][] = [
    ["CLIP", "`text_encoders.clip_l`"],
    ["T5", "`text_encoders.t5xxl`"],
    ["IN", "`img_in`, `txt_in`, `time_in`, `vector_in`, `guidance_in`"],
    ["D00…D18", "`double_blocks.N`"],
    ["S00…S37", "`single_blocks.N`"],
    ["OUT", "`final_layer`"],
    ["none", "VAE (`vae.*`), `position_ids`, markers such as `scaled_fp8`: copied from A"],
  ];
  const keysOf = keysFrom(names, (b) => {
    if (b === "CLIP") return "text_encoders.clip_l";
    if (b === "T5") return "text_encoders.t5xxl";
    if (b === "IN") return "img_in, txt_in, time_in, vector_in, guidance_in";
    if (b === "OUT") return "final_layer";
    return `${b.startsWith("D") ? "double" : "single"}_blocks.${Number(b.slice(1))}`;
  });
  return { id: "flux", label: "FLUX.1 (61 blocks)", names, blockOf, legend, keysOf };
}
export const FLUX_BLOCKS: BlockMap = flux();

const SD3_PARTS = /^(?:joint_blocks\.(\d+)\.|(pos_embed$|(?:x_embedder|context_embedder|y_embedder|t_embedder)\.)|(final_layer)\.)/;

/** SD 3.x with `depth` joint blocks (24: SD 3 / 3.5 medium, 38: SD 3.5 large). */
export function sd3Blocks(depth = 24): BlockMap {
  const joints = range("J", depth);
  const names = ["CLIP", "T5", "IN", ...joints, "OUT"];
  const blockOf = (key: string): string | null => {
    if (NEVER_MERGED.test(key) || VAE.test(key)) return null;
    if (TEXT_T5.test(key)) return "T5";
    if (TEXT_CLIP.test(key)) return "CLIP";
    const m = SD3_PARTS.exec(key.replace(DIT_PREFIX, ""));
    if (!m) return null;
    if (m[1] !== undefined) return joints[Number(m[1])] ?? null;
    return m[2] !== undefined ? "IN" : "OUT";
  };
  const legend: [string, string][] = [
    ["CLIP", "`text_encoders.clip_l`, `text_encoders.clip_g`"],
    ["T5", "`text_encoders.t5xxl`"],
    ["IN", "`pos_embed`, `x_embedder`, `context_embedder`, `y_embedder`, `t_embedder`"],
    [`J00…J${pad2(depth - 1)}`, "`joint_blocks.N`"],
    ["OUT", "`final_layer`"],
    ["none", "VAE (`first_stage_model.*`), `position_ids`: copied from A"],
  ];
  const keysOf = keysFrom(names, (b) => {
    if (b === "CLIP") return "text_encoders.clip_l, text_encoders.clip_g";
    if (b === "T5") return "text_encoders.t5xxl";
    if (b === "IN") return "pos_embed, x_embedder, context_embedder, y_embedder, t_embedder";
    if (b === "OUT") return "final_layer";
    return `joint_blocks.${Number(b.slice(1))}`;
  });
  return { id: "sd3", label: `SD 3.x (${names.length} blocks)`, names, blockOf, legend, keysOf };
}

const LLM_LAYER = /^model\.layers\.(\d+)\./;

/**
 * Language models (transformers decoders, lib/hf): `EMB, L00…Lnn, OUT` as mergekit slices them:
 * `model.embed_tokens` (mergekit's "pre weights") → EMB, `model.layers.N` → LNN, everything else
 * (`model.norm`, `lm_head`: "post weights") → OUT.
 */
export function llmBlocks(layers: number): BlockMap {
  const names = ["EMB", ...range("L", layers), "OUT"];
  const blockOf = (key: string): string | null => {
    const m = LLM_LAYER.exec(key);
    if (m) return Number(m[1]) < layers ? names[1 + Number(m[1])]! : null;
    return key.startsWith("model.embed_tokens.") ? "EMB" : "OUT";
  };
  const legend: [string, string][] = [
    ["EMB", "`model.embed_tokens`"],
    [`L00…L${pad2(layers - 1)}`, "`model.layers.N`"],
    ["OUT", "`model.norm`, `lm_head` and every other key outside the layers"],
  ];
  const keysOf = keysFrom(names, (b) => (b === "EMB" ? "model.embed_tokens" : b === "OUT" ? "model.norm, lm_head" : `model.layers.${Number(b.slice(1))}`));
  return { id: "llm", label: `language model (${names.length} blocks)`, names, blockOf, legend, keysOf };
}

/** Decoder layers in a model's tensor names (highest `model.layers.N` + 1), 32 when there are none. */
function llmDepth(names: Iterable<string>): number {
  let max = -1;
  for (const n of names) {
    const m = LLM_LAYER.exec(n);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max >= 0 ? max + 1 : 32;
}

/** Joint blocks in a model's tensor names (highest `joint_blocks.N` + 1), 24 when there are none. */
function sd3Depth(names: Iterable<string>): number {
  let max = -1;
  for (const n of names) {
    const m = /(?:^|\.)joint_blocks\.(\d+)\./.exec(n);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max >= 0 ? max + 1 : 24;
}

/**
 * The block map of an architecture (as identifyModel names it), or undefined where there is none
 * ("unknown": per-key patterns only). SD 3 maps depend on the depth: pass the model's tensor names.
 */
export function blockMapFor(architecture: ArchitectureId, tensorNames?: Iterable<string>): BlockMap | undefined {
  switch (architecture) {
    case "sd1": case "sd1-inpainting": case "sd1-instruct-pix2pix": case "sd2":
    // The refiner's UNet has 4 levels (input blocks 0..11): SuperMerger reads it with the SD list.
    case "sdxl-refiner":
      return SD_BLOCKS;
    case "sdxl": return SDXL_BLOCKS;
    case "flux": return FLUX_BLOCKS;
    case "sd3": return tensorNames ? sd3Blocks(sd3Depth(tensorNames)) : sd3Blocks();
    case "llm": return llmBlocks(tensorNames ? llmDepth(tensorNames) : 32);
    case "unknown": return undefined;
  }
}
