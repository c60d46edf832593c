/**
 * Key rules shared by the planner and the compatibility check: which tensors are buffers
 * (copied from A, never interpolated) and which shape differences are the known, mergeable ones.
 */
import { isMathDtype, type Dtype } from "./dtypes";

/** Suffixes of tensors that are bookkeeping, not weights: interpolating them corrupts models. */
const BUFFER_SUFFIXES = [
  "position_ids", // CLIP: [1, 77] int64 (sometimes stored as float; a careless merge breaks prompts)
  "model_ema.decay",
  "model_ema.num_updates",
];
/** SD 1.x/2.x scheduler buffers stored at the top level. */
const SCHEDULER_BUFFERS = new Set([
  "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
  "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
  "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
]);

/** True for tensors copied from A as they are: non-float types and known buffers. */
export function isCopiedAsIs(name: string, dtype: Dtype): boolean {
  if (!isMathDtype(dtype)) return true;
  if (SCHEDULER_BUFFERS.has(name)) return true;
  return BUFFER_SUFFIXES.some((s) => name === s || name.endsWith(`.${s}`));
}

/** The UNet's first convolution, whose input channels differ in inpainting (9) and instruct-pix2pix (8) models. */
export const INPUT_CONV_KEYS = new Set(["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.conv_in.weight"]);

/**
 * The known mergeable mismatch: A's input conv has more input channels than the other model's
 * (9 or 8 vs 4); the shared channels are merged and the rest kept from A, as the classic tool does.
 * Returns true when `other` can be merged into the leading channels of `a`.
 */
export function isInputChannelExtension(name: string, a: readonly number[], other: readonly number[]): boolean {
  if (!INPUT_CONV_KEYS.has(name) || a.length !== 4 || other.length !== 4) return false;
  // Exactly the classic tool's two cases: inpainting (9) or instruct-pix2pix (8) vs a normal 4.
  return a[0] === other[0] && a[2] === other[2] && a[3] === other[3] && other[1] === 4 && (a[1] === 9 || a[1] === 8);
}

export function sameShape(x: readonly number[], y: readonly number[]): boolean {
  return x.length === y.length && x.every((d, i) => d === y[i]);
}
