/**
 * What a LoRA is for, from its module names and factor shapes alone: target architecture,
 * naming, algorithms, ranks and alphas, and the blocks it covers (the block names of lib/blocks:
 * BASE for text encoders, INnn / M00 / OUTnn for LDM UNets, Dnn / Snn for FLUX).
 *
 * Architecture rules: `double_blocks`/`single_blocks` or diffusers `transformer_blocks` → FLUX
 * (first: a FLUX LoRA's CLIP-L is `lora_te1_`); `lora_te1`/`lora_te2` or SGM UNet names
 * (`input_blocks_4_1_…`, as kohya writes SDXL LoRAs) → SDXL; diffusers UNet names
 * (`down_blocks_…`) → the cross-attention width of `attn2.to_k` (768 SD 1.x, 1024 SD 2.x, 2048
 * SDXL), else the text encoder width (768 CLIP-L, 1024 OpenCLIP-H); without a known width (a
 * shrunk LoRA), more than 12 text layers → SD 2.x (OpenCLIP-H has 23), a 4-D `proj_in` /
 * `proj_out` factor → SD 1.x (1×1 convs there; SD 2.x has linears; a 2-D one says nothing: A1111
 * reshapes a linear LoRA onto the conv), transformer
 * blocks past the first (`transformer_blocks_1_`…) → SDXL (its transformers are 2 and 10 deep).
 */
import type { ArchitectureId } from "../library/identify";
import { ARCHITECTURES } from "../library/identify";
import { addressOf, ldmUnetPaths } from "./names";
import type { LoraAlgorithm, LoraFile, LoraModule, LoraNaming } from "./read";

export interface LoraSummary {
  naming: LoraNaming;
  architecture: ArchitectureId;
  /** For people: "SD 1.x", "SDXL", "FLUX.1", "unknown". */
  label: string;
  modules: number;
  algorithms: Partial<Record<LoraAlgorithm, number>>;
  /** Distinct ranks and alphas (sorted; at most 16 of each, a trained alpha per module is rare). */
  ranks: number[];
  alphas: number[];
  /** Modules on the text encoder(s) and on the denoiser. */
  textEncoderModules: number;
  denoiserModules: number;
  /** Blocks with at least one module, in block order. */
  blocks: string[];
  /** Modules that cannot be baked, with why (first few). */
  unsupported: { count: number; examples: string[] };
  /** kohya training metadata worth showing (ss_network_dim, ss_network_alpha, ss_base_model_version, …). */
  training: Record<string, string>;
}

function isTextEncoder(m: LoraModule): boolean {
  const a = addressOf(m.name);
  return a !== undefined && a.component !== "unet" && a.component !== "transformer";
}

/** The architecture a LoRA targets ("unknown" when its names say too little). */
export function loraArchitecture(lora: LoraFile): ArchitectureId {
  let diffusersUnet = false, sdxlNames = false;
  let crossWidth: number | undefined, teWidth: number | undefined;
  // Evidence that needs no width (shrunk LoRAs): OpenCLIP-H has 23 text layers as kohya /
  // diffusers name them, CLIP-L 12; SD 1.x's transformer proj_in / proj_out are 1×1 convs
  // (4-D factors), SD 2.x's (and SDXL's) are linears.
  let teLayers = 0, projConv = false;
  for (const m of lora.modules) {
    const a = addressOf(m.name);
    if (!a) continue;
    // FLUX block names win over kohya's te1 prefix (a FLUX LoRA's CLIP-L is `lora_te1_`)
    if (a.component === "transformer" && /^(single_)?transformer_blocks_/.test(a.path)) return "flux";
    if (a.component === "unet" && /^(double|single)_blocks_/.test(a.path)) return "flux";
    if (a.component === "te1" || a.component === "te2") sdxlNames = true;
    if (a.component === "te") {
      const layer = /(?:^|_)layers_(\d+)_/.exec(a.path);
      if (layer) teLayers = Math.max(teLayers, Number(layer[1]) + 1);
    }
    if (a.component === "unet") {
      if (/^(input_blocks|middle_block|output_blocks)_/.test(a.path)) sdxlNames = true;
      if (/_attentions_\d+_proj_(in|out)$/.test(a.path) && (m.factors.down ?? m.factors.hada_w1_b)?.shape.length === 4) projConv = true;
      // SDXL's transformers are 2 and 10 deep; SD 1.x / 2.x have one transformer block each
      if (/^(down_blocks|mid_block|up_blocks)_.*_transformer_blocks_[1-9]_/.test(a.path)) sdxlNames = true;
      if (/^(down_blocks|mid_block|up_blocks)_/.test(a.path)) {
        diffusersUnet = true;
        if (/attn2_to_k$/.test(a.path) && m.cols > 0) crossWidth = m.cols;
      }
    }
    if (a.component === "te" && /self_attn_q_proj$/.test(a.path) && m.cols > 0) teWidth = m.cols;
  }
  if (sdxlNames) return "sdxl";
  const width = crossWidth ?? (diffusersUnet || teWidth ? teWidth : undefined);
  if (width === 768) return "sd1";
  if (width === 1024) return "sd2";
  if (width === 2048) return "sdxl";
  if (teLayers > 12) return "sd2";
  if (projConv) return "sd1";
  return "unknown";
}

/** The block a module belongs to (lib/blocks names), or "other". */
export function blockOfModule(m: LoraModule, arch: ArchitectureId): string {
  const a = addressOf(m.name);
  if (!a) return "other";
  if (a.component !== "unet" && a.component !== "transformer") return arch === "flux" ? (a.component === "te2" ? "T5" : "CLIP") : "BASE";
  const two = (n: string) => n.padStart(2, "0");
  if (arch === "flux") {
    let x = /^(double|single)_blocks_(\d+)_/.exec(a.path);
    if (x) return `${x[1] === "double" ? "D" : "S"}${two(x[2]!)}`;
    x = /^(single_)?transformer_blocks_(\d+)_/.exec(a.path);
    if (x) return `${x[1] ? "S" : "D"}${two(x[2]!)}`;
    return /^(final_layer|proj_out|norm_out)/.test(a.path) ? "OUT" : "IN";
  }
  const p = ldmUnetPaths(a.path)[0]!;
  let x = /^input_blocks_(\d+)_/.exec(p);
  if (x) return `IN${two(x[1]!)}`;
  if (/^middle_block_/.test(p)) return "M00";
  x = /^output_blocks_(\d+)_/.exec(p);
  if (x) return `OUT${two(x[1]!)}`;
  if (/^time_embed_|^label_emb_/.test(p)) return "IN00";
  if (/^out_/.test(p)) return arch === "sdxl" ? "OUT08" : "OUT11";
  return "other";
}

function blockOrder(name: string): number {
  const m = /^(BASE|CLIP|IN|D|S|M|OUT)(\d*)$/.exec(name);
  if (!m) return 1e6;
  const base = { BASE: 0, CLIP: 0, IN: 1000, D: 2000, S: 3000, M: 4000, OUT: 5000 }[m[1] as "BASE"];
  return base + (m[2] ? Number(m[2]) : 0);
}

const TRAINING_KEYS = ["ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_base_model_version", "ss_sd_model_name", "ss_output_name", "modelspec.architecture", "modelspec.title"];

export function summarizeLora(lora: LoraFile): LoraSummary {
  const architecture = loraArchitecture(lora);
  const algorithms: Partial<Record<LoraAlgorithm, number>> = {};
  const ranks = new Set<number>(), alphas = new Set<number>(), blocks = new Set<string>();
  let te = 0;
  const unsupported: string[] = [];
  for (const m of lora.modules) {
    algorithms[m.algorithm] = (algorithms[m.algorithm] ?? 0) + 1;
    if (m.rank > 0) ranks.add(m.rank);
    if (m.alpha !== undefined) alphas.add(m.alpha);
    if (isTextEncoder(m)) te++;
    blocks.add(blockOfModule(m, architecture));
    if (m.unsupported) unsupported.push(`${m.name}: ${m.unsupported}`);
  }
  const training: Record<string, string> = {};
  for (const k of TRAINING_KEYS) if (lora.model.metadata[k] !== undefined) training[k] = lora.model.metadata[k]!;
  return {
    naming: lora.naming,
    architecture,
    label: ARCHITECTURES[architecture].label,
    modules: lora.modules.length,
    algorithms,
    ranks: [...ranks].sort((a, b) => a - b).slice(0, 16),
    alphas: [...alphas].sort((a, b) => a - b).slice(0, 16),
    textEncoderModules: te,
    denoiserModules: lora.modules.length - te,
    blocks: [...blocks].sort((a, b) => blockOrder(a) - blockOrder(b)),
    unsupported: { count: unsupported.length, examples: unsupported.slice(0, 5) },
    training,
  };
}

/** The summary as lines for `tensormerge inspect`. */
export function formatLoraSummary(s: LoraSummary): string[] {
  const algos = Object.entries(s.algorithms).map(([k, v]) => `${k} ${v}`).join(", ");
  const lines = [
    `lora          ${s.naming} naming, ${s.modules} modules (${algos}) for ${s.label} (${s.architecture})`,
    `  rank        ${s.ranks.join(", ") || "–"}; alpha ${s.alphas.join(", ") || "none (scale 1)"}`,
    `  modules     ${s.textEncoderModules} text encoder, ${s.denoiserModules} denoiser`,
    `  blocks      ${s.blocks.join(" ")}`,
  ];
  if (s.unsupported.count) lines.push(`  not baked   ${s.unsupported.count} module${s.unsupported.count === 1 ? "" : "s"}: ${s.unsupported.examples[0]}${s.unsupported.count > 1 ? " …" : ""}`);
  return lines;
}
