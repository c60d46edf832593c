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

/**
 * Key renames for SD 1.x checkpoints saved by 2022-era code, whose CLIP text encoder lacks the
 * `text_model.` level. This is the classic tool's table, applied the same way: AUTOMATIC1111
 * stable-diffusion-webui, modules/sd_models.py, `checkpoint_dict_replacements_sd1`, applied to
 * every key of every loaded checkpoint by `transform_checkpoint_dict_key` (each prefix in order)
 * in `get_state_dict_from_checkpoint`, so its merger pairs an old text encoder with a modern one.
 * (Its other table, `checkpoint_dict_replacements_sd2_turbo`, converts SGM-layout SD 2.1 Turbo
 * files to the LDM layout; tensormerge does not apply it.)
 */
export const LEGACY_KEY_REPLACEMENTS: readonly (readonly [from: string, to: string])[] = [
  ["cond_stage_model.transformer.embeddings.", "cond_stage_model.transformer.text_model.embeddings."],
  ["cond_stage_model.transformer.encoder.", "cond_stage_model.transformer.text_model.encoder."],
  ["cond_stage_model.transformer.final_layer_norm.", "cond_stage_model.transformer.text_model.final_layer_norm."],
];

/** A key as the classic tool names it after loading (unchanged for modern keys). */
export function normaliseKeyName(name: string): string {
  let k = name;
  for (const [from, to] of LEGACY_KEY_REPLACEMENTS) if (k.startsWith(from)) k = to + k.slice(from.length);
  return k;
}

/** What normalising one model's key names did. */
export interface KeyRenames {
  /** Keys given their modern name. */
  renamed: number;
  /** Old names left as they are because the file also has the modern name (both layouts in one file). */
  collisions: string[];
}

/**
 * Renames a model's 2022-era keys in place of its tensor table (the bytes are not touched, so
 * the file's offsets stay valid). A key whose modern name the file also holds keeps its old
 * name: nothing is dropped (the classic tool keeps whichever comes last).
 */
export function normaliseModelKeys<T extends { name: string }>(tensors: readonly T[]): { tensors: T[]; renames: KeyRenames } {
  const names = new Set(tensors.map((t) => t.name));
  let renamed = 0;
  const collisions: string[] = [];
  const out = tensors.map((t) => {
    const k = normaliseKeyName(t.name);
    if (k === t.name) return t;
    if (names.has(k)) {
      collisions.push(t.name);
      return t;
    }
    renamed++;
    return { ...t, name: k };
  });
  return { tensors: out, renames: { renamed, collisions } };
}

/** Components named in missing-key warnings, by key prefix (checkpoint layouts). */
const COMPONENT_PREFIXES: readonly (readonly [prefix: string, label: string])[] = [
  ["model.diffusion_model.", "UNet"],
  ["cond_stage_model.", "text encoder"],
  ["conditioner.embedders.0.", "text encoder"],
  ["conditioner.embedders.1.", "text encoder 2"],
  ["first_stage_model.", "VAE"],
];

/**
 * A merge warns when B or C lacks more than this share of A's float keys (those keep A's values
 * silently otherwise), or lacks a whole component of A (all of its UNet, text encoder or VAE).
 */
export const MISSING_KEYS_WARN_SHARE = 0.05;

export interface MissingKeysWarning {
  slot: "b" | "c";
  path: string;
  /** A's float keys this model lacks (they keep A's values). */
  missing: number;
  /** A's float keys that are merged, the denominator of the share. */
  floatKeys: number;
  /** Components of A of which this model has none of the keys. */
  components: string[];
  message: string;
}

/**
 * The warnings for one merge row: every other model that lacks over MISSING_KEYS_WARN_SHARE of
 * A's float keys, or a whole component. `skip` names keys that are not merged anyway (discarded,
 * or replaced by a baked-in VAE).
 */
export function missingKeyWarnings(
  a: { tensors: readonly { name: string; dtype: Dtype }[] },
  others: readonly { slot: "b" | "c"; path: string; has: (name: string) => boolean }[],
  skip: (name: string) => boolean = () => false,
): MissingKeysWarning[] {
  const floats = a.tensors.filter((t) => !isCopiedAsIs(t.name, t.dtype) && !skip(t.name)).map((t) => t.name);
  const componentOf = (name: string) => COMPONENT_PREFIXES.find(([p]) => name.startsWith(p))?.[1];
  const warnings: MissingKeysWarning[] = [];
  for (const o of others) {
    const perComponent = new Map<string, { total: number; missing: number }>();
    let missing = 0;
    for (const name of floats) {
      const lacks = !o.has(name);
      if (lacks) missing++;
      const c = componentOf(name);
      if (c === undefined) continue;
      const entry = perComponent.get(c) ?? { total: 0, missing: 0 };
      entry.total++;
      if (lacks) entry.missing++;
      perComponent.set(c, entry);
    }
    const components = [...perComponent].filter(([, e]) => e.total > 0 && e.missing === e.total).map(([c]) => c);
    if (missing === 0 || (missing <= MISSING_KEYS_WARN_SHARE * floats.length && components.length === 0)) continue;
    const share = ((100 * missing) / floats.length).toFixed(1);
    const whole = components.length ? `, including the whole ${components.join(" and the whole ")},` : "";
    warnings.push({
      slot: o.slot, path: o.path, missing, floatKeys: floats.length, components,
      message: `${o.slot.toUpperCase()} (${o.path}) lacks ${missing} of A's ${floats.length} float tensors (${share}%)${whole} which keep A's values unmerged; is it a model of the same layout?`,
    });
  }
  return warnings;
}
