/**
 * "Scaled fp8" checkpoints store a weight as fp8 codes plus a companion scale tensor: the real
 * weight is `widen(codes) × scale`. ComfyUI's scaled fp8 files (Flux, SD3.5, Wan…) name the scale
 * `<layer>.scale_weight` (and mark the file with a `scaled_fp8` key); the newer ComfyUI and
 * llm-compressor files use `<layer>.weight_scale`, DeepSeek-style block-scaled files
 * `<layer>.weight_scale_inv`. Merging the codes without their scales would mix numbers on
 * different scales, so tensormerge refuses such tensors, naming them (merging through the
 * scale is not implemented). Copying them unchanged (no-interpolation, same dtype) is fine.
 */
import type { Dtype } from "./dtypes";
import { MergeError } from "./errors";

const SCALE_SUFFIXES = ["scale_weight", "weight_scale", "weight_scale_inv"] as const;

/** The name of `name`'s scale tensor among `has`, when `name` is an fp8 weight that has one. */
export function scaledFp8Companion(name: string, dtype: Dtype, has: (key: string) => boolean): string | undefined {
  if (dtype !== "F8_E4M3" && dtype !== "F8_E5M2") return undefined;
  if (!name.endsWith(".weight")) return undefined;
  const layer = name.slice(0, -".weight".length);
  for (const s of SCALE_SUFFIXES) if (has(`${layer}.${s}`)) return `${layer}.${s}`;
  return undefined;
}

/** Throws DTYPE_UNSUPPORTED when `name` (in `label`'s model) is a scaled fp8 weight. */
export function refuseScaledFp8(name: string, dtype: Dtype, has: (key: string) => boolean, label: string, doing: string): void {
  const scale = scaledFp8Companion(name, dtype, has);
  if (scale === undefined) return;
  throw new MergeError(
    "DTYPE_UNSUPPORTED",
    `${name} in ${label} is a scaled fp8 weight (its real values are ${dtype} codes × ${scale}); ${doing} it would ignore the scale, and merging through the scale is not supported: use an unscaled fp8, bf16 or fp16 copy of this model`,
    { tensor: name, path: label },
  );
}
