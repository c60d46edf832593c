/**
 * Synthetic models with real structure: the exact keys, dtypes and (optionally shrunken) shapes
 * of a public checkpoint, filled from a seeded generator with realistic statistics (weights
 * ~N(0, 0.02), biases near 0, norm scales near 1, CLIP position ids 0..n-1). Used by the demo,
 * the tests and the benchmarks; written tensor by tensor, so full-size models need little memory.
 */
import { open } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { DTYPE_SIZE, f32BitsToBf16, f32BitsToF16, f32BitsToF8E4m3, f32BitsToF8E5m2, isDtype, type Dtype } from "./dtypes";
import { layoutSafetensors } from "./formats/safetensors";
import { numelOf } from "./model";
import { MergeError } from "./errors";
import { fillFp8Normal } from "./synthetic-fp8";

export type LayoutEntry = [name: string, shape: number[], dtype: Dtype];

/** Layouts shipped with the package (data/layouts/<name>.json.gz, copied from the real checkpoints). */
export const BUILTIN_LAYOUTS = ["sd15", "sd15_inpainting"] as const;

export function loadBuiltinLayout(name: (typeof BUILTIN_LAYOUTS)[number]): LayoutEntry[] {
  const file = join(__dirname, "..", "..", "data", "layouts", `${name}.json.gz`);
  return parseLayout(gunzipSync(readFileSync(file)).toString("utf8"), file);
}

export function parseLayout(text: string, source: string): LayoutEntry[] {
  const raw = JSON.parse(text) as unknown;
  if (!Array.isArray(raw)) throw new MergeError("INVALID_ARGUMENT", `${source}: a layout is an array of [key, shape, dtype]`);
  return raw.map((e, i) => {
    if (!Array.isArray(e) || typeof e[0] !== "string" || !Array.isArray(e[1]) || !isDtype(e[2])) {
      throw new MergeError("INVALID_ARGUMENT", `${source}: entry ${i} is not [key, shape, dtype]`);
    }
    return [e[0], e[1] as number[], e[2]];
  });
}

/** Shrinks every dimension above 16 by `factor` (dims of 16 or less, such as 9 input channels, stay). */
export function shrinkLayout(layout: LayoutEntry[], factor: number): LayoutEntry[] {
  if (factor <= 1) return layout;
  return layout.map(([name, shape, dtype]) => [name, shape.map((d) => (d > 16 ? Math.max(16, Math.ceil(d / factor)) : d)), dtype]);
}

/** Changes every float tensor to `dtype` (for example to build an fp16 model from an fp32 layout). */
export function withFloatDtype(layout: LayoutEntry[], dtype: Dtype): LayoutEntry[] {
  return layout.map(([name, shape, d]) => [name, shape, d === "F32" || d === "F16" || d === "BF16" ? dtype : d]);
}

/**
 * mulberry32: small, fast, good enough for test data; seeded so files are reproducible. Its whole
 * state is a counter (`state`), which the fast fp8 fill (lib/synthetic-fp8.ts) advances in place.
 */
export class SeededGenerator {
  state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    const s = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

export function seededRandom(seed: number): () => number {
  const generator = new SeededGenerator(seed);
  return () => generator.next();
}

function normalFill(out: Float32Array, random: () => number, mean: number, std: number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u = 1 - random();
    const v = random();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = mean + r * Math.cos(2 * Math.PI * v);
    if (i + 1 < out.length) out[i + 1] = mean + r * Math.sin(2 * Math.PI * v);
  }
}

function statisticsFor(name: string): { mean: number; std: number } {
  if (/norm[^.]*\.weight$|\.ln_[^.]*\.weight$|ln_final\.weight$|\.gamma$/.test(name)) return { mean: 1, std: 0.02 };
  if (name.endsWith(".bias")) return { mean: 0, std: 0.005 };
  return { mean: 0, std: 0.02 };
}

/** out[i] = encode(bits of values[i]), 1- or 2-byte little-endian codes (a plain loop: forEach and writeUInt16LE cost more than the encoding). */
function encodeEach(values: Float32Array, out: Buffer, width: 1 | 2, encode: (bits: number) => number): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  if (width === 1) {
    for (let i = 0; i < bits.length; i++) out[i] = encode(bits[i]!);
    return;
  }
  for (let i = 0; i < bits.length; i++) {
    const c = encode(bits[i]!);
    out[2 * i] = c & 0xff;
    out[2 * i + 1] = c >>> 8;
  }
}

/** Encodes fp32 values into `dtype` little-endian bytes. */
export function encodeFloats(values: Float32Array, dtype: Dtype): Buffer {
  const out = Buffer.alloc(values.length * DTYPE_SIZE[dtype]);
  switch (dtype) {
    case "F32": Buffer.from(values.buffer, values.byteOffset, values.byteLength).copy(out); break;
    case "F64": values.forEach((v, i) => out.writeDoubleLE(v, i * 8)); break;
    case "F16": encodeEach(values, out, 2, f32BitsToF16); break;
    case "BF16": encodeEach(values, out, 2, f32BitsToBf16); break;
    case "F8_E4M3": encodeEach(values, out, 1, f32BitsToF8E4m3); break;
    case "F8_E5M2": encodeEach(values, out, 1, f32BitsToF8E5m2); break;
    default: throw new MergeError("INTERNAL", `encodeFloats: ${dtype} is not a float type`);
  }
  return out;
}

function tensorBytes(name: string, dtype: Dtype, generator: SeededGenerator, fp8: Fp8Fill, start: number, count: number): Buffer {
  const n = count;
  const random = () => generator.next();
  if (dtype === "I64" || dtype === "I32" || dtype === "I16" || dtype === "I8" || dtype === "U8" || dtype === "BOOL") {
    // Integer buffers in checkpoints are indices or counters: position_ids = 0..n-1.
    const out = Buffer.alloc(n * DTYPE_SIZE[dtype]);
    for (let i = 0; i < n; i++) {
      const v = name.endsWith("position_ids") ? start + i : Math.floor(random() * 100);
      if (dtype === "I64") out.writeBigInt64LE(BigInt(v), i * 8);
      else if (dtype === "I32") out.writeInt32LE(v, i * 4);
      else if (dtype === "I16") out.writeInt16LE(v % 32768, i * 2);
      else out.writeUInt8(dtype === "BOOL" ? v & 1 : v % 128, i);
    }
    return out;
  }
  if (!(dtype === "F32" || dtype === "F16" || dtype === "BF16" || dtype === "F64" || dtype === "F8_E4M3" || dtype === "F8_E5M2")) {
    const out = Buffer.alloc(n * DTYPE_SIZE[dtype]);
    for (let i = 0; i < out.length; i++) out[i] = Math.floor(random() * 256);
    return out;
  }
  const { mean, std } = statisticsFor(name);
  if ((dtype === "F8_E4M3" || dtype === "F8_E5M2") && fp8 === "table") {
    const out = Buffer.alloc(n);
    generator.state = fillFp8Normal(out, dtype, mean, std, generator.state);
    return out;
  }
  const values = new Float32Array(n);
  normalFill(values, random, mean, std);
  return encodeFloats(values, dtype);
}

/**
 * How fp8 tensors are filled: "table" (default) draws each code from the exact distribution of
 * fp8(N(mean, std)), one generator draw an element (lib/synthetic-fp8.ts, ~20x faster);
 * "box-muller" encodes the fp32 normals as the other float types do (the files written before
 * the table existed). Layouts without fp8 tensors give the same bytes either way.
 */
export type Fp8Fill = "table" | "box-muller";

export interface SyntheticOptions {
  seed: number;
  fp8?: Fp8Fill;
  metadata?: Record<string, string>;
}

/**
 * Writes a safetensors model with the given layout. Tensors are generated in chunks of at most
 * 4 Mi elements, so even a full-size layout needs only a few tens of MiB.
 */
export async function writeSyntheticModel(path: string, layout: LayoutEntry[], options: SyntheticOptions): Promise<number> {
  const generator = new SeededGenerator(options.seed);
  const fp8 = options.fp8 ?? "table";
  const entries = layout.map(([name, shape, dtype]) => ({ name, shape, dtype }));
  const plan = layoutSafetensors(entries, options.metadata ?? {});
  const handle = await open(path, "wx");
  try {
    await handle.write(plan.header, 0, plan.header.length, 0);
    let position = plan.header.length;
    const chunk = 4 * 1024 * 1024;
    for (const [name, shape, dtype] of layout) {
      const n = numelOf(shape);
      for (let start = 0; start < n; start += chunk) {
        const bytes = tensorBytes(name, dtype, generator, fp8, start, Math.min(chunk, n - start));
        await handle.write(bytes, 0, bytes.length, position);
        position += bytes.length;
      }
    }
    return plan.size;
  } finally {
    await handle.close();
  }
}
