/**
 * Fixtures for the LoRA tests: shrunken checkpoints and LoRAs with the real key structure
 * (../shared/layouts, or the gzipped copies in test/fixtures/layouts), LoRA files written by the
 * tests' own safetensors writer (test/helpers/models.ts), and the expected values computed here
 * by a second implementation: the name mapping in the direction kohya builds names (checkpoint
 * module path → `lora_unet_` + path with `_`), and ΔW in the contract's fixed fp32 order and in
 * double precision.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { getFloat16, setFloat16 } from "@petamoriken/float16";
import { shrinkLayout, withFloatDtype, writeSyntheticModel, type LayoutEntry } from "../../lib/synthetic";
import type { Dtype } from "../../lib/dtypes";
import { layoutsDir } from "../library/fixtures";
import { randomValues, writeModel, type TestDtype, type TestTensor } from "../helpers/models";

export function loadAnyLayout(name: string): LayoutEntry[] {
  const plain = join(layoutsDir(), `${name}.json`);
  if (existsSync(plain)) return JSON.parse(readFileSync(plain, "utf8")) as LayoutEntry[];
  const gz = existsSync(`${plain}.gz`) ? `${plain}.gz` : join(__dirname, "..", "..", "..", "test", "fixtures", "layouts", `${name}.json.gz`);
  return JSON.parse(gunzipSync(readFileSync(gz)).toString("utf8")) as LayoutEntry[];
}

/** A shrunken checkpoint (every dim above 16 divided by `factor`), optionally in another float dtype. */
export async function writeBase(path: string, layout: string, factor: number, seed = 1, dtype?: Dtype): Promise<LayoutEntry[]> {
  let entries = shrinkLayout(loadAnyLayout(layout), factor);
  if (dtype) entries = withFloatDtype(entries, dtype);
  await writeSyntheticModel(path, entries, { seed });
  return entries;
}

/** Writes a LoRA: factors random (seeded), alphas from `alphaOf` (a module name → alpha; undefined leaves it out). */
export function writeLora(path: string, entries: [string, number[], TestDtype][], seed: number, alphaOf: (module: string) => number | undefined = () => 8, metadata?: Record<string, string>): void {
  const tensors: Record<string, TestTensor> = {};
  let k = 0;
  for (const [name, shape, dtype] of entries) {
    if (name.endsWith(".alpha")) {
      const a = alphaOf(name.slice(0, -".alpha".length));
      if (a !== undefined) tensors[name] = { dtype, shape: [], values: [a] };
      continue;
    }
    tensors[name] = { dtype, shape, values: randomValues(shape.reduce((p, d) => p * d, 1), seed + 7919 * ++k) };
  }
  writeModel(path, tensors, metadata);
}

/** The LoRA layout's modules shrunk like the checkpoint (rank 32 → 16, widths / factor). */
export function loraEntries(layout: string, factor: number): [string, number[], TestDtype][] {
  return shrinkLayout(loadAnyLayout(layout), factor).map(([n, s, d]) => [n, s, d as TestDtype]);
}

const f = Math.fround;

/** ΔW in the contract's order: p_r = fp32(u·d), P = p_0, P = fp32(P + p_r), r ascending. */
export function deltaF32(up: ArrayLike<number>, down: ArrayLike<number>, rows: number, rank: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let acc = f(up[i * rank]! * down[j]!);
      for (let r = 1; r < rank; r++) acc = f(acc + f(up[i * rank + r]! * down[r * cols + j]!));
      out[i * cols + j] = acc;
    }
  }
  return out;
}

/** ΔW in double precision (any summation order: the exact product to ~1e-16). */
export function deltaF64(up: ArrayLike<number>, down: ArrayLike<number>, rows: number, rank: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let r = 0; r < rank; r++) {
    const u = up[i * rank + r]!;
    for (let j = 0; j < cols; j++) out[i * cols + j]! += u * down[r * cols + j]!;
  }
  return out;
}

/** W + ΔW·c per element, as the bake's weighted-sum op: fp32(fp32(w·1) + fp32(d·c)). */
export function addScaled(w: ArrayLike<number>, delta: ArrayLike<number>, c: number): Float32Array {
  const out = new Float32Array(w.length);
  const cf = f(c);
  for (let i = 0; i < w.length; i++) out[i] = f(f(w[i]! * 1) + f(delta[i]! * cf));
  return out;
}

/** fp32 → fp16 → number, with an independent converter (@petamoriken/float16's round trip). */
export function viaF16(x: number): number {
  const dv = new DataView(new ArrayBuffer(2));
  setFloat16(dv, 0, x, true); // rounds to nearest even
  return getFloat16(dv, 0, true);
}

const RESNET: Record<string, string> = { "in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj", skip_connection: "conv_shortcut" };

/**
 * The diffusers module path of an SD 1.x LDM UNet key (without `.weight`), as diffusers' own
 * conversion script lays the blocks out, or undefined. Written from the block layout (3 layers per
 * level, attentions at index 1), not from lib/lora/names.ts's regexes.
 */
export function diffusersPathOfSd1(ldm: string): string | undefined {
  let m = /^input_blocks\.(\d+)\.(0|1)\.(.+)$/.exec(ldm);
  if (m) {
    const n = Number(m[1]);
    if (n === 0) return undefined;
    const level = Math.floor((n - 1) / 3), layer = (n - 1) % 3;
    if (layer === 2) return m[2] === "0" && m[3] === "op" ? `down_blocks.${level}.downsamplers.0.conv` : undefined;
    if (m[2] === "1") return `down_blocks.${level}.attentions.${layer}.${m[3]}`;
    return RESNET[m[3]!] ? `down_blocks.${level}.resnets.${layer}.${RESNET[m[3]!]}` : undefined;
  }
  m = /^middle_block\.(\d)\.(.+)$/.exec(ldm);
  if (m) {
    if (m[1] === "1") return `mid_block.attentions.0.${m[2]}`;
    return RESNET[m[2]!] ? `mid_block.resnets.${Number(m[1]) / 2}.${RESNET[m[2]!]}` : undefined;
  }
  m = /^output_blocks\.(\d+)\.(\d)\.(.+)$/.exec(ldm);
  if (m) {
    const n = Number(m[1]), level = Math.floor(n / 3), layer = n % 3;
    if (m[3] === "conv" && ((level === 0 && m[2] === "1") || m[2] === "2")) return `up_blocks.${level}.upsamplers.0.conv`;
    if (m[2] === "1") return `up_blocks.${level}.attentions.${layer}.${m[3]}`;
    if (m[2] === "0" && RESNET[m[3]!]) return `up_blocks.${level}.resnets.${layer}.${RESNET[m[3]!]}`;
  }
  return undefined;
}

/** kohya's name for a checkpoint key of an SD 1.x model (prefix + module path with "." → "_"). */
export function kohyaNameOfSd1(key: string): string | undefined {
  if (!key.endsWith(".weight")) return undefined;
  const k = key.slice(0, -".weight".length);
  if (k.startsWith("model.diffusion_model.")) {
    const p = diffusersPathOfSd1(k.slice("model.diffusion_model.".length));
    return p ? `lora_unet_${p.replace(/\./g, "_")}` : undefined;
  }
  if (k.startsWith("cond_stage_model.transformer.")) return `lora_te_${k.slice("cond_stage_model.transformer.".length).replace(/\./g, "_")}`;
  return undefined;
}

/** kohya's name for a checkpoint key of an SDXL model (SGM UNet names kept; CLIP-L as lora_te1). */
export function kohyaNameOfSdxl(key: string): string | undefined {
  if (!key.endsWith(".weight")) return undefined;
  const k = key.slice(0, -".weight".length);
  if (k.startsWith("model.diffusion_model.")) return `lora_unet_${k.slice("model.diffusion_model.".length).replace(/\./g, "_")}`;
  if (k.startsWith("conditioner.embedders.0.transformer.")) return `lora_te1_${k.slice("conditioner.embedders.0.transformer.".length).replace(/\./g, "_")}`;
  return undefined;
}
