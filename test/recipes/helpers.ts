/** Tiny SD-shaped models for recipe tests, written with the independent test writer. */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { randomValues, writeModel, type TestTensor } from "../helpers/models";

export const CONV_IN = "model.diffusion_model.input_blocks.0.0.weight";

/** A model with float32/float16/bf16 weights, an int64 buffer and the UNet input conv. */
export function writeTinyModel(path: string, seed: number, options: { metadata?: Record<string, string>; inpaint?: boolean } = {}): void {
  const t: Record<string, TestTensor> = {
    [CONV_IN]: { dtype: "F32", shape: [3, options.inpaint ? 9 : 4, 1, 1], values: randomValues(options.inpaint ? 27 : 12, seed) },
    "model.diffusion_model.out.weight": { dtype: "F32", shape: [5, 7], values: randomValues(35, seed + 1, true) },
    "cond_stage_model.transformer.text_model.embeddings.position_ids": { dtype: "I64", shape: [1, 4], values: [0, 1, 2, 3] },
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": { dtype: "F16", shape: [9], values: randomValues(9, seed + 2) },
    "first_stage_model.decoder.conv_out.bias": { dtype: "BF16", shape: [3], values: randomValues(3, seed + 3) },
  };
  writeModel(path, t, options.metadata);
}

/** sha256 of a file, computed here (not by the library). */
export function sha256Of(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** The old A1111 model hash, computed here: sha256 of the 64 KiB at 1 MiB, first 8 hex digits. */
export function legacyOf(path: string): string {
  return createHash("sha256").update(readFileSync(path).subarray(0x100000, 0x110000)).digest("hex").slice(0, 8);
}

/** Every file in a folder, hidden ones included (to prove nothing was written). */
export function filesIn(dir: string): string[] {
  return readdirSync(dir).sort();
}

export function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof MergeError && e.code === code;
}

export function sameBytes(a: string, b: string): boolean {
  return readFileSync(a).equals(readFileSync(b));
}

export const SAMPLE = `# Sample Recipe
a14 = __SD14__ + __F222__, 0.5
a15 = __SD15__ + __F222__, 0.5, fp16
mix14 = __O1__ + __WD13__ + __SD14__, 1.0, safetensors
mix15 = __O2__ + __WD13__ + __SD14__, 1.0, fp16, safetensors
# variables
__F222__ # You can use F111 instead.
__SD14__ # use stable diffusion v1.5, as you like.
`;

/** Four ingredient models for the sample, in `dir`. */
export function writeSampleModels(dir: string): Record<"SD14" | "SD15" | "F222" | "WD13", string> {
  const models = { SD14: join(dir, "sd14.safetensors"), SD15: join(dir, "sd15.safetensors"), F222: join(dir, "f222.safetensors"), WD13: join(dir, "wd13.safetensors") };
  writeTinyModel(models.SD14, 1);
  writeTinyModel(models.SD15, 2);
  writeTinyModel(models.F222, 3);
  writeTinyModel(models.WD13, 4);
  return models;
}
