/**
 * The documented block rules, written independently of lib/blocks: the key split on dots, its
 * parts compared by name (no regular expressions shared with the library).
 */
import { strict as assert } from "node:assert";

export const two = (s: string) => s.padStart(2, "0");
const SCHEDULER = new Set([
  "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
  "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
  "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
]);

/** The documented SD / SDXL rule, from the key's dot-separated parts. */
export function expectedLdm(key: string, xl: boolean): string | null {
  if (SCHEDULER.has(key) || key === "model_ema.decay" || key === "model_ema.num_updates") return null;
  const parts = key.split(".");
  if (parts[parts.length - 1] === "position_ids") return null;
  if (parts[0] === "model" && parts[1] === "diffusion_model") {
    const [mod, index] = [parts[2], parts[3]!];
    if (mod === "input_blocks") return `IN${two(index)}`;
    if (mod === "middle_block") return "M00";
    if (mod === "output_blocks") return `OUT${two(index)}`;
    if (mod === "out") return xl ? "OUT08" : "OUT11";
    if (mod === "time_embed") return xl ? null : "IN00";
    if (mod === "label_emb") return xl ? null : "BASE";
    throw new Error(`unexpected UNet module ${key}`);
  }
  if (["cond_stage_model", "first_stage_model", "conditioner", "model_ema"].includes(parts[0]!)) return "BASE";
  throw new Error(`unexpected key ${key}`);
}

export function expectedFlux(key: string): string | null {
  const parts = key.replace(/^model\.diffusion_model\./, "").split(".");
  if (parts[0] === "double_blocks") return `D${two(parts[1]!)}`;
  if (parts[0] === "single_blocks") return `S${two(parts[1]!)}`;
  if (["img_in", "txt_in", "time_in", "vector_in", "guidance_in"].includes(parts[0]!)) return "IN";
  if (parts[0] === "final_layer") return "OUT";
  throw new Error(`unexpected key ${key}`);
}

export function expectedSd3(key: string): string | null {
  const parts = key.split(".");
  if (parts[0] === "first_stage_model") return null;
  assert.equal(`${parts[0]}.${parts[1]}`, "model.diffusion_model", key);
  if (parts[2] === "joint_blocks") return `J${two(parts[3]!)}`;
  if (["pos_embed", "x_embedder", "context_embedder", "y_embedder", "t_embedder"].includes(parts[2]!)) return "IN";
  if (parts[2] === "final_layer") return "OUT";
  throw new Error(`unexpected key ${key}`);
}

