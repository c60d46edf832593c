/**
 * "Scaled fp8" checkpoints store a weight as fp8 codes plus a companion scale tensor: the real
 * weight is `widen(codes) × scale`. ComfyUI's scaled fp8 files (Flux, SD3.5, Wan…) name the scale
 * `<layer>.scale_weight` (and mark the file with a `scaled_fp8` key; `comfy/ops.py` dequantizes
 * with `weight.to(dtype) * scale_weight`); the newer ComfyUI and llm-compressor files use
 * `<layer>.weight_scale`, DeepSeek-style block-scaled files `<layer>.weight_scale_inv`.
 *
 * A scale that is one number (a per-tensor scale, the ComfyUI case) is read when the model is
 * opened (`readFp8Scales`) and the planner merges through it (lib/plan.ts): each such input
 * weight's values are `widen(code) × scale` in fp32, computed with the existing weighted-sum kernel
 * as `x·(s/2) + x·(s/2)`, which is `x·s` rounded once (halving is exact and the two equal halves
 * add exactly, for the scales accepted here: |s| in [2^-100, 2^100], so no product of an fp8
 * value is subnormal or overflows). The output keeps A's form unless `--dtype` is given: A's
 * scaled weights are written as fp8 codes of `r × (1/s_A)` (rounded to fp32, then to fp8) with
 * A's scale tensors and marker copied unchanged; with `--dtype fp16|bf16|fp32|fp8-*` they are
 * plain weights of that type and the scale tensors and marker are left out. A scale with several
 * values (block or channel scales) is refused when such a weight would be merged or converted,
 * naming both tensors; copying it unchanged (no-interpolation, same dtype) stays fine.
 */
import { open } from "node:fs/promises";
import { bf16BitsToF32Bits, f16BitsToF32Bits, type Dtype } from "./dtypes";
import { MergeError } from "./errors";
import { numelOf, type ModelFile } from "./model";

const SCALE_SUFFIXES = ["scale_weight", "weight_scale", "weight_scale_inv"] as const;

/** The marker tensor ComfyUI writes in scaled fp8 files. */
export const SCALED_FP8_MARKER = "scaled_fp8";

/** Smallest and largest |scale| merged through (see the file comment). */
export const MIN_FP8_SCALE = 2 ** -100;
export const MAX_FP8_SCALE = 2 ** 100;

/** What was found for one scaled weight: its scale tensor, and the scale or why it cannot be used. */
export interface Fp8Scale {
  /** The scale tensor's name. */
  tensor: string;
  /** The per-tensor scale (an fp32 value), when usable. */
  scale?: number;
  /** Why the scale cannot be merged through, when it cannot. */
  problem?: string;
}

/** The name of `name`'s scale tensor among `has`, when `name` is an fp8 weight that has one. */
export function scaledFp8Companion(name: string, dtype: Dtype, has: (key: string) => boolean): string | undefined {
  if (dtype !== "F8_E4M3" && dtype !== "F8_E5M2") return undefined;
  if (!name.endsWith(".weight")) return undefined;
  const layer = name.slice(0, -".weight".length);
  for (const s of SCALE_SUFFIXES) if (has(`${layer}.${s}`)) return `${layer}.${s}`;
  return undefined;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (bits: number) => ((u32[0] = bits >>> 0), f32[0]!);

/**
 * The model with `fp8Scales` filled in: for each scaled fp8 weight, its scale (read from the
 * file: one small read per scale tensor) or the reason it cannot be used. Safetensors only
 * (other formats keep no scales: their scaled weights are refused as before).
 */
export async function readFp8Scales(model: ModelFile): Promise<ModelFile> {
  if (model.format !== "safetensors") return model;
  const has = (k: string) => model.byName.has(k);
  const found: [string, string][] = [];
  for (const t of model.tensors) {
    const s = scaledFp8Companion(t.name, t.dtype, has);
    if (s !== undefined) found.push([t.name, s]);
  }
  if (found.length === 0) return model;
  const scales = new Map<string, Fp8Scale>();
  const handle = await open(model.path, "r");
  try {
    for (const [weight, name] of found) {
      const st = model.byName.get(name)!;
      const n = numelOf(st.shape);
      if (n !== 1) {
        scales.set(weight, { tensor: name, problem: `its scale ${name} holds ${n} values (block or channel scales), only a per-tensor scale is merged through` });
        continue;
      }
      if (st.dtype !== "F32" && st.dtype !== "F16" && st.dtype !== "BF16") {
        scales.set(weight, { tensor: name, problem: `its scale ${name} is ${st.dtype}, not a float` });
        continue;
      }
      const bytes = Buffer.alloc(st.byteLength);
      const { bytesRead } = await handle.read(bytes, 0, st.byteLength, st.offset);
      if (bytesRead !== st.byteLength) throw new MergeError("FILE_TRUNCATED", `${model.path}: ${name} is cut short`, { tensor: name, path: model.path });
      const value = st.dtype === "F32" ? bytes.readFloatLE(0) : fromBits(st.dtype === "F16" ? f16BitsToF32Bits(bytes.readUInt16LE(0)) : bf16BitsToF32Bits(bytes.readUInt16LE(0)));
      const magnitude = Math.abs(value);
      if (!(magnitude >= MIN_FP8_SCALE && magnitude <= MAX_FP8_SCALE)) {
        scales.set(weight, { tensor: name, problem: `its scale ${name} is ${value}, outside the range merged through (|scale| from 2^-100 to 2^100)` });
        continue;
      }
      scales.set(weight, { tensor: name, scale: value });
    }
  } finally {
    await handle.close();
  }
  return { ...model, fp8Scales: scales };
}

/**
 * Throws DTYPE_UNSUPPORTED when `name` (in `label`'s model) is a scaled fp8 weight whose scale
 * is not known (`scale` undefined: not a per-tensor scale, or not read).
 */
export function refuseScaledFp8(name: string, dtype: Dtype, has: (key: string) => boolean, label: string, doing: string, scale: Fp8Scale | undefined): void {
  const companion = scaledFp8Companion(name, dtype, has);
  if (companion === undefined || scale?.scale !== undefined) return;
  const why = scale?.problem ?? `its scale ${companion} was not read (scales are read from safetensors files)`;
  throw new MergeError(
    "DTYPE_UNSUPPORTED",
    `${name} in ${label} is a scaled fp8 weight (its real values are ${dtype} codes × ${companion}), and ${why}: ${doing} it is not supported; use an unscaled fp8, bf16 or fp16 copy of this model`,
    { tensor: name, path: label },
  );
}
