/** Small models with real SD 1.5 keys for the many-model tests: a base and fine-tunes of it. */
import { join } from "node:path";
import { decodeValues, encodeValues, randomValues, writeModel, type TestTensor } from "../../helpers/models";

export const W = "model.diffusion_model.input_blocks.1.1.proj_in.weight";
export const W2 = "model.diffusion_model.input_blocks.2.1.proj_in.weight";
export const H = "model.diffusion_model.out.2.weight";
export const IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids";
export const SHAPES: Record<string, number[]> = { [W]: [64, 80], [W2]: [64, 80], [H]: [40, 30] };

/** Values of model `m` (0 = base): the base's plus a sparse-ish task vector of its own. */
export function valuesOf(key: string, m: number, n: number): number[] {
  const base = randomValues(n, 1000 + key.length * 7 + (key === W2 ? 3 : 0));
  if (m === 0) return base;
  const noise = randomValues(n, 77 * m + key.length);
  const gate = randomValues(n, 991 * m + key.length);
  return base.map((b, i) => b + noise[i]! * (gate[i]! > 0 ? 0.5 : 0.05));
}

/** Writes base + `count` models in `dir`; keys in the given order. Returns their paths. */
export function writeFamily(dir: string, count: number, order: string[] = [IDS, W, H, W2], tag = ""): string[] {
  const paths: string[] = [];
  for (let m = 0; m <= count; m++) {
    const tensors: Record<string, TestTensor> = {};
    for (const key of order) {
      if (key === IDS) tensors[key] = { dtype: "I64", shape: [1, 77], values: Array.from({ length: 77 }, (_, i) => i) };
      else {
        const shape = SHAPES[key]!;
        const n = shape[0]! * shape[1]!;
        tensors[key] = { dtype: key === H ? "F16" : "F32", shape, values: valuesOf(key, m, n) };
      }
    }
    const path = join(dir, `${tag}${m === 0 ? "base" : `m${m}`}.safetensors`);
    writeModel(path, tensors);
    paths.push(path);
  }
  return paths;
}

/** What a model file holds for a key (fp16 keys widened exactly), as the engines read it. */
export function stored(key: string, m: number): number[] {
  const shape = SHAPES[key]!;
  const v = valuesOf(key, m, shape[0]! * shape[1]!);
  return decodeValues(key === H ? "F16" : "F32", encodeValues(key === H ? "F16" : "F32", v));
}

/** fp32 values as a tensor of `key`'s dtype would store them. */
export function asStored(key: string, values: number[]): number[] {
  return decodeValues(key === H ? "F16" : "F32", encodeValues(key === H ? "F16" : "F32", values));
}

/** fp16 bit patterns the fused-kernel tests write over random elements: ±qNaN, ±sNaN (the widening re-signals them), ±inf, subnormals, ±0. */
export const F16_SPECIALS = [0x7e00, 0xfe00, 0x7d01, 0xfc55, 0x7c00, 0xfc00, 0x0001, 0x83ff, 0x0000, 0x8000];
/** bf16's: ±qNaN (one with a payload), ±sNaN with payloads (the arithmetic quiets them), ±inf, subnormals, ±0. */
export const BF16_SPECIALS = [0x7fc0, 0xffc0, 0x7fd3, 0x7f81, 0xff95, 0x7f80, 0xff80, 0x0001, 0x807f, 0x0000, 0x8000];

/** The 16-bit float dtypes of the fused kernels' fixtures. */
export type HalfDtype = "F16" | "BF16";

/** A seeded uniform in [0, 1). */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
}

/** 16-bit float bytes: base values near 0.05, a model's a small task vector added; one element in 500 a special pattern. */
function halfBytes(dtype: HalfDtype, n: number, seed: number, base?: Float32Array): { bytes: Uint8Array; values: Float32Array } {
  const next = uniform(seed);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = base ? base[i]! + (next() - 0.5) * 0.01 : (next() - 0.5) * 0.1;
  const bytes = encodeValues(dtype, values);
  const specials = dtype === "F16" ? F16_SPECIALS : BF16_SPECIALS;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) if (next() < 0.002) view.setUint16(2 * i, specials[Math.floor(next() * specials.length)]!, true);
  return { bytes, values };
}

/**
 * Writes m0 (the base) .. m`count` in `dir`: one tensor of `dtype` per key of `sizes` (key →
 * elements), from halfBytes; `dtypeOf(m)` overrides the dtype of model m. Returns their paths.
 */
export function writeHalfFamily(dir: string, sizes: Record<string, number>, count: number, dtype: HalfDtype = "F16", dtypeOf: (m: number) => HalfDtype = () => dtype): string[] {
  const bases: Record<string, Float32Array> = {};
  return Array.from({ length: count + 1 }, (_, m) => {
    const tensors: Record<string, { dtype: HalfDtype; shape: number[]; raw: Uint8Array }> = {};
    Object.entries(sizes).forEach(([key, n], t) => {
      const { bytes, values } = halfBytes(dtypeOf(m), n, 10 * m + t + 1, m === 0 ? undefined : bases[key]);
      if (m === 0) bases[key] = values;
      tensors[key] = { dtype: dtypeOf(m), shape: [n], raw: bytes };
    });
    const p = join(dir, `${dtype.toLowerCase()}-m${m}${dtypeOf(m) === dtype ? "" : `-${dtypeOf(m).toLowerCase()}`}.safetensors`);
    writeModel(p, tensors);
    return p;
  });
}
