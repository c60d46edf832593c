/**
 * Test helpers for the native engine: temp folders, raw job builders and reference element
 * conversions written independently of lib/ (f16 through @petamoriken/float16, bf16 by its bit
 * formula), so a shared bug in lib/dtypes.ts and the C++ core cannot hide.
 */
import { mkdtempSync, rmSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getFloat16, setFloat16 } from "@petamoriken/float16";
import type { Job, JobOutput, JobPiece } from "../../lib/native/job";
import { E4M3, E5M2, refF32BitsToFp8, refFp8ToF32Bits } from "../dtypes/fp8-reference";
import { captureEngineStats } from "../helpers/engines";
import { randomValues, writeModel, type TestTensor } from "../helpers/models";

export const DT = { BOOL: 0, U8: 1, I8: 2, F8_E5M2: 3, F8_E4M3: 4, I16: 5, F16: 7, BF16: 8, I32: 9, F32: 11, F64: 12, I64: 13 } as const;
const FP8 = { [DT.F8_E5M2]: E5M2, [DT.F8_E4M3]: E4M3 } as Record<number, typeof E4M3>;
export const SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 2, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 8, 14: 8 };
export const KERNEL = {
  copy: 0, weightedSum: 1, addDifference: 2, lerp: 3,
  trainDifference: 4, tripleSum: 5, sumTwice: 6, multiplyDifference: 7, similarityAddDifference: 8, clamp: 9,
} as const;

export interface TempDir {
  path: string;
  file(name: string): string;
  /** Names in the folder (to check that failed jobs leave nothing). */
  list(): string[];
  cleanup(): void;
}

export function tempDir(prefix = "tm-native-"): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    file: (name) => join(path, name),
    list: () => (existsSync(path) ? readdirSync(path) : []),
    cleanup: () => rmSync(path, { recursive: true, force: true }),
  };
}

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- fp32 values as bits -------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export function bitsOf(x: number): number {
  f32[0] = x;
  return u32[0]!;
}
export function valueOf(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}
export const isNaN32 = (bits: number): boolean => (bits & 0x7fffffff) > 0x7f800000;

/**
 * A reference fp32 value: exact bits, or `looseNaN` when it is a NaN produced by arithmetic
 * (x86 keeps an operand's payload, JS does not say which: only NaN-ness is compared).
 */
export interface Ref {
  bits: number;
  looseNaN: boolean;
}

const dv = new DataView(new ArrayBuffer(8));

/** Element i of a buffer in `dtype` widened to fp32, as the contract says. */
export function refLoad(bytes: Uint8Array, offset: number, dtype: number): Ref {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case DT.F16: {
      const h = view.getUint16(offset, true);
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) {
        // NaN: exact widening (payload << 13), signalling NaNs stay signalling
        return { bits: (((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13)) >>> 0, looseNaN: false };
      }
      return { bits: bitsOf(getFloat16(view, offset, true)), looseNaN: false };
    }
    case DT.BF16:
      return { bits: (view.getUint16(offset, true) << 16) >>> 0, looseNaN: false };
    case DT.F32:
      return { bits: view.getUint32(offset, true), looseNaN: false };
    case DT.F64: {
      const d = view.getFloat64(offset, true);
      return Number.isNaN(d) ? { bits: 0x7fc00000, looseNaN: true } : { bits: bitsOf(Math.fround(d)), looseNaN: false };
    }
    case DT.F8_E4M3:
    case DT.F8_E5M2:
      return { bits: refFp8ToF32Bits(FP8[dtype]!, bytes[offset]!), looseNaN: false };
  }
  throw new Error(`refLoad: dtype ${dtype}`);
}

/** fp32 -> fp16 bits: the library for numbers, the contract's rule for NaN payloads. */
export function refF16Bits(r: Ref): number {
  if (isNaN32(r.bits)) return ((r.bits >>> 16) & 0x8000) | 0x7e00 | ((r.bits & 0x7fffff) >>> 13);
  setFloat16(dv, 0, valueOf(r.bits), true);
  return dv.getUint16(0, true);
}

/** fp32 -> bf16 bits: round to nearest even on the upper half; NaN keeps its top bits, quieted. */
export function refBf16Bits(r: Ref): number {
  const b = r.bits >>> 0;
  if (isNaN32(b)) return ((b >>> 16) | 0x40) & 0xffff;
  const lower = b & 0xffff;
  let upper = b >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper++;
  return upper & 0xffff;
}

export function refRound(r: Ref, dtype: number): Ref {
  if (dtype === DT.F16) {
    const h = refF16Bits(r);
    dv.setUint16(0, h, true);
    return (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0
      ? { bits: (((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13)) >>> 0, looseNaN: r.looseNaN }
      : { bits: bitsOf(getFloat16(dv, 0, true)), looseNaN: false };
  }
  if (dtype === DT.BF16) return { bits: (refBf16Bits(r) << 16) >>> 0, looseNaN: r.looseNaN };
  const f8 = FP8[dtype];
  if (f8) return { bits: refFp8ToF32Bits(f8, refF32BitsToFp8(f8, r.bits)), looseNaN: r.looseNaN };
  return r;
}

/** One IEEE fp32 operation: exact in double, then one rounding. */
function op2(a: Ref, b: Ref, f: (x: number, y: number) => number): Ref {
  const v = Math.fround(f(valueOf(a.bits), valueOf(b.bits)));
  return Number.isNaN(v) ? { bits: 0x7fc00000, looseNaN: true } : { bits: bitsOf(v), looseNaN: false };
}
const mul = (a: Ref, b: Ref) => op2(a, b, (x, y) => x * y);
const add = (a: Ref, b: Ref) => op2(a, b, (x, y) => x + y);
const sub = (a: Ref, b: Ref) => op2(a, b, (x, y) => x - y);
const lit = (p: number): Ref => ({ bits: bitsOf(Math.fround(p)), looseNaN: false });

export function refKernel(kernel: number, args: Ref[], params: number[]): Ref {
  switch (kernel) {
    case KERNEL.copy:
      return args[0]!;
    case KERNEL.weightedSum:
      return add(mul(args[0]!, lit(params[0]!)), mul(args[1]!, lit(params[1]!)));
    case KERNEL.addDifference:
      return add(args[0]!, mul(sub(args[1]!, args[2]!), lit(params[0]!)));
    case KERNEL.lerp:
      return add(args[0]!, mul(sub(args[1]!, args[0]!), lit(params[0]!)));
  }
  const value = refMethod(kernel, args.map((r) => valueOf(r.bits)), params);
  return Number.isNaN(value) ? { bits: 0x7fc00000, looseNaN: true } : { bits: bitsOf(value), looseNaN: false };
}

/**
 * The method kernels, written from their published formulas (SuperMerger, sd-meh, sd-mecha)
 * with Math.fround after each operation in the published order; NaN results compare loosely.
 */
function refMethod(kernel: number, [a, b, c]: number[], p: number[]): number {
  const f = Math.fround;
  const [p0, p1, p2, p3] = p.map(f) as [number, number, number, number];
  switch (kernel) {
    case KERNEL.trainDifference: {
      // SuperMerger TD: diff = b−c; scale = |b−a| / (|b−c| + |b−a|), 0 where that sum is 0;
      // new_diff = sign(diff)·|scale|·|diff|; a + new_diff·(α·1.8). torch.sign(±0) is +0.
      const diff = f(b! - c!);
      const distA0 = Math.abs(diff);
      const distA1 = Math.abs(f(b! - a!));
      const sum = f(distA0 + distA1);
      const scale = sum !== 0 ? f(distA1 / sum) : 0;
      const sign = diff > 0 ? 1 : diff < 0 ? -1 : 0;
      const newDiff = f(f(sign * Math.abs(scale)) * distA0);
      return f(a! + f(newDiff * p0));
    }
    case KERNEL.tripleSum:
      return f(f(f(a! * p0) + f(b! * p1)) + f(c! * p2));
    case KERNEL.sumTwice:
      return f(f(f(f(a! * p0) + f(b! * p1)) * p2) + f(c! * p3));
    case KERNEL.similarityAddDifference: {
      const threshold = Math.max(Math.abs(a!), Math.abs(b!));
      let similarity = f(f(f(f(a! * b!) / f(threshold * threshold)) + 1) / 2);
      similarity = f(similarity * p1);
      if (Number.isNaN(similarity)) similarity = p1;
      const abDiff = f(a! + f(p0 * f(b! - c!)));
      const abSum = f(f(p2 * a!) + f(p3 * b!));
      return f(f(f(1 - similarity) * abDiff) + f(similarity * abSum));
    }
    case KERNEL.clamp: // torch.clamp(x, minimum(A, B), maximum(A, B)): NaN propagates, −0 < +0
      return Math.min(Math.max(a!, Math.min(b!, c!)), Math.max(b!, c!));
  }
  throw new Error(`refKernel: ${kernel}`);
}

/** Expected bytes of a stored element, with a NaN-ness-only flag. */
export interface RefBytes {
  bytes: number[];
  looseNaN: boolean;
}

export function refStore(r: Ref, dtype: number): RefBytes {
  const out = new DataView(new ArrayBuffer(8));
  switch (dtype) {
    case DT.F16:
      out.setUint16(0, refF16Bits(r), true);
      return { bytes: [...new Uint8Array(out.buffer, 0, 2)], looseNaN: r.looseNaN };
    case DT.BF16:
      out.setUint16(0, refBf16Bits(r), true);
      return { bytes: [...new Uint8Array(out.buffer, 0, 2)], looseNaN: r.looseNaN };
    case DT.F32:
      out.setUint32(0, r.bits, true);
      return { bytes: [...new Uint8Array(out.buffer, 0, 4)], looseNaN: r.looseNaN };
    case DT.F64:
      // f32 -> f64 is exact for numbers; a NaN's payload after cvtss2sd is not something JS can
      // produce, so NaNs are compared by NaN-ness.
      out.setFloat64(0, valueOf(r.bits), true);
      return { bytes: [...new Uint8Array(out.buffer, 0, 8)], looseNaN: isNaN32(r.bits) };
    case DT.F8_E4M3:
    case DT.F8_E5M2:
      return { bytes: [refF32BitsToFp8(FP8[dtype]!, r.bits)], looseNaN: r.looseNaN };
  }
  throw new Error(`refStore: ${dtype}`);
}

/** Is the element at `offset` of `buf` a NaN of `dtype`? */
export function isNaNAt(buf: Uint8Array, offset: number, dtype: number): boolean {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  switch (dtype) {
    case DT.F16: {
      const h = v.getUint16(offset, true);
      return (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    }
    case DT.BF16: {
      const h = v.getUint16(offset, true);
      return (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
    }
    case DT.F32:
      return isNaN32(v.getUint32(offset, true));
    case DT.F64:
      return Number.isNaN(v.getFloat64(offset, true));
    case DT.F8_E4M3:
      return (buf[offset]! & 0x7f) === 0x7f;
    case DT.F8_E5M2:
      return (buf[offset]! & 0x7f) > 0x7c;
  }
  return false;
}

// ---- test data ------------------------------------------------------------------------------

const SPECIAL_F32 = [
  0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001 /* sNaN */, 0x7fa5a5a5,
  0x00000001, 0x807fffff, 0x00400000 /* f32 subnormals */, 0x33000000, 0x33000001, 0xb3800000 /* around the f16 subnormal edge */,
  0x387fc000, 0x38800000 /* f16 subnormal max / normal min */, 0x477fe000, 0x477ff000, 0x47800000, 0xc7fff000 /* f16 overflow edge */,
  0x7f7fffff, 0xff7fffff, 0x3f808000, 0x3f818000, 0x3f800001, 0x3f807fff, 0x3f7fffff,
];
const SPECIAL_F16 = [0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7c01 /* sNaN */, 0xfd55, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0x3c01];
const SPECIAL_BF16 = [0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f81 /* sNaN */, 0x0001, 0x807f, 0x7f7f, 0x3f80, 0x3f81];
const SPECIAL_F64 = [0, -0, Infinity, -Infinity, NaN, 1e300, -1e300, 5e-324, 1e-40, 65504, 65520, 1 + 2 ** -24, 1 + 3 * 2 ** -25, 3.4028235677973366e38];

/**
 * n random elements of a float dtype: special values, values of every magnitude, and raw
 * random bit patterns (which include NaN payloads, subnormals and infinities).
 */
export function randomElements(dtype: number, n: number, seed: number): Uint8Array {
  const r = rng(seed);
  const size = SIZE[dtype]!;
  const out = new Uint8Array(n * size);
  const v = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const pick = r();
    const at = i * size;
    const magnitude = (r() - 0.5) * Math.pow(2, Math.floor(r() * 40) - 20);
    switch (dtype) {
      case DT.F16:
        if (pick < 0.15) v.setUint16(at, SPECIAL_F16[Math.floor(r() * SPECIAL_F16.length)]!, true);
        else if (pick < 0.3) v.setUint16(at, Math.floor(r() * 65536), true);
        else setFloat16(v, at, magnitude, true);
        break;
      case DT.BF16:
        if (pick < 0.15) v.setUint16(at, SPECIAL_BF16[Math.floor(r() * SPECIAL_BF16.length)]!, true);
        else if (pick < 0.3) v.setUint16(at, Math.floor(r() * 65536), true);
        else v.setUint16(at, bitsOf(magnitude) >>> 16, true);
        break;
      case DT.F32:
        if (pick < 0.15) v.setUint32(at, SPECIAL_F32[Math.floor(r() * SPECIAL_F32.length)]!, true);
        else if (pick < 0.3) v.setUint32(at, Math.floor(r() * 4294967296), true);
        else v.setFloat32(at, magnitude, true);
        break;
      case DT.F64:
        if (pick < 0.15) v.setFloat64(at, SPECIAL_F64[Math.floor(r() * SPECIAL_F64.length)]!, true);
        else if (pick < 0.2) v.setFloat64(at, (r() - 0.5) * 1e39, true);
        else v.setFloat64(at, magnitude * (1 + r() * 2 ** -30), true);
        break;
      default:
        for (let k = 0; k < size; k++) out[at + k] = Math.floor(r() * 256);
    }
  }
  return out;
}

/** Concatenates regions into one file image, each starting at an odd offset; returns offsets. */
export function layout(regions: Uint8Array[], lead = 3): { image: Uint8Array; offsets: number[] } {
  const offsets: number[] = [];
  let pos = lead;
  for (const r of regions) {
    offsets.push(pos);
    pos += r.length + 1 + (pos % 2 === 0 ? 1 : 0); // keep the next start odd-ish and varied
    if (pos % 2 === 0) pos++;
  }
  const image = new Uint8Array(pos);
  regions.forEach((r, i) => image.set(r, offsets[i]!));
  return { image, offsets };
}

export function makeJob(parts: { inputs: { path: string; size: number }[]; outputs: JobOutput[]; pieces: JobPiece[]; threads?: number; isa?: Job["isa"] }): Job {
  return {
    inputs: parts.inputs,
    outputs: parts.outputs,
    pieces: parts.pieces,
    threads: parts.threads ?? 2,
    isa: parts.isa ?? "auto",
    control: new Float64Array(3),
  };
}

/** First mismatch between an output and the reference, or undefined. */
export function compareElement(actual: Uint8Array, offset: number, dtype: number, expected: RefBytes): string | undefined {
  if (expected.looseNaN) return isNaNAt(actual, offset, dtype) ? undefined : `expected a NaN, got ${hex(actual, offset, expected.bytes.length)}`;
  for (let k = 0; k < expected.bytes.length; k++) {
    if (actual[offset + k] !== expected.bytes[k]) return `expected ${hexBytes(expected.bytes)}, got ${hex(actual, offset, expected.bytes.length)}`;
  }
  return undefined;
}

function hexBytes(b: number[]): string {
  return b.map((x) => x.toString(16).padStart(2, "0")).reverse().join("");
}
function hex(buf: Uint8Array, offset: number, n: number): string {
  return hexBytes([...buf.subarray(offset, offset + n)]);
}

/**
 * Model m of a set for the statistics-read tests: one tensor per length (the sixth fp16, the
 * others fp32; odd lengths give unaligned offsets) and a 3-element bias, values seeded by
 * seedStep * m + i (the bias by biasSeed + m).
 */
export function writeStatisticsModelSet(dir: string, m: number, lengths: number[], seedStep: number, biasSeed: number): string {
  const tensors: Record<string, TestTensor> = {};
  lengths.forEach((n, i) => {
    tensors[`model.diffusion_model.input_blocks.${i}.0.proj.weight`] = { dtype: i === 5 ? "F16" : "F32", shape: [n], values: randomValues(n, seedStep * m + i, false) };
  });
  tensors["model.diffusion_model.out.bias"] = { dtype: "F32", shape: [3], values: randomValues(3, biasSeed + m, false) };
  const path = join(dir, `m${m}.safetensors`);
  writeModel(path, tensors);
  return path;
}

/**
 * The statistics tests' suite fixture (call inside describe): three model sets written by
 * `write` into a temp folder before the suite and the engine stats captured, both undone after.
 */
export function statisticsSuite(prefix: string, write: (dir: string, m: number) => string) {
  let folder: ReturnType<typeof tempDir> | undefined;
  let paths: string[] = [];
  const capture = captureEngineStats();
  before(() => {
    folder = tempDir(prefix);
    paths = [0, 1, 2].map((m) => write(folder!.path, m));
    capture.install();
  });
  after(() => {
    capture.restore();
    folder?.cleanup();
  });
  return {
    capture,
    /** The temp folder (valid inside the suite's tests). */
    get dir(): string { return folder!.path; },
    get paths(): string[] { return paths; },
  };
}
