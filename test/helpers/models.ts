/**
 * Test fixtures: tiny models with explicit values, written with an independent minimal
 * safetensors writer (not the library's), and read back with independent decoders
 * (@petamoriken/float16 for fp16, a bit shift for bf16).
 */
import { getFloat16, setFloat16 } from "@petamoriken/float16";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type TestDtype = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "U8" | "BOOL" | "I8" | "I16" | "F8_E4M3" | "F8_E5M2";

export interface TestTensor {
  dtype: TestDtype;
  shape: number[];
  /** Float values (encoded to dtype) or raw little-endian bytes. */
  values?: ArrayLike<number>;
  raw?: Uint8Array;
}

const SIZE: Record<TestDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, U8: 1, BOOL: 1, I8: 1, I16: 2, F8_E4M3: 1, F8_E5M2: 1 };

export function numel(shape: number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** bf16 from f32 by an independent bit formula: round to nearest even on the top half. */
export function bf16FromF32(x: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setFloat32(0, x, true);
  const bits = dv.getUint32(0, true);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  const lower = bits & 0xffff;
  let upper = bits >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper = (upper + 1) & 0xffff;
  return upper;
}

const F32 = new Float32Array(1);
const F32_BITS = new Uint32Array(F32.buffer);

/**
 * fp16 bits of a value that is an fp32, round to nearest even: an integer bit formula, so the
 * fixtures of tests with millions of fp16 values take seconds, not minutes (the float16
 * package's setFloat16 took ~100 s for 4 x 2^24 values). -1 where it does not apply (a value
 * that is not an fp32, where rounding twice could differ, or a NaN, whose payload the
 * package keeps): the caller then uses setFloat16. test/dtypes/conversions.test.ts checks it
 * against setFloat16.
 */
export function f16BitsOfF32(v: number): number {
  F32[0] = v;
  if (F32[0] !== v) return -1;
  const bits = F32_BITS[0]!, sign = (bits >>> 16) & 0x8000, abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return -1;
  if (abs >= 0x477ff000) return sign | 0x7c00; // 65520 and above round to infinity
  if (abs >= 0x38800000) {
    // Normal: rebias the exponent (127 - 15 = 112), keep 10 mantissa bits, round on the 13 dropped.
    let h = (((abs >>> 23) - 112) << 10) | ((abs & 0x7fffff) >>> 13);
    const rest = abs & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    return sign | h;
  }
  // Subnormal or zero: a multiple of 2^-24, exact in double before the rounding.
  const x = Math.abs(v) * 16777216;
  let h = Math.floor(x);
  const r = x - h;
  if (r > 0.5 || (r === 0.5 && (h & 1) === 1)) h++;
  return sign | h;
}

export function encodeValues(dtype: TestDtype, values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * SIZE[dtype]);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    switch (dtype) {
      case "F32": dv.setFloat32(i * 4, v, true); break;
      case "F64": dv.setFloat64(i * 8, v, true); break;
      case "F16": {
        const h = f16BitsOfF32(v);
        if (h >= 0) dv.setUint16(i * 2, h, true);
        else setFloat16(dv, i * 2, v, true);
        break;
      }
      case "BF16": dv.setUint16(i * 2, bf16FromF32(v), true); break;
      case "I64": dv.setBigInt64(i * 8, BigInt(Math.trunc(v)), true); break;
      case "I32": dv.setInt32(i * 4, v, true); break;
      case "I16": dv.setInt16(i * 2, v, true); break;
      default: dv.setUint8(i, v & 0xff);
    }
  }
  return out;
}

export function decodeValues(dtype: TestDtype, bytes: Uint8Array): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / SIZE[dtype];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case "F32": out.push(dv.getFloat32(i * 4, true)); break;
      case "F64": out.push(dv.getFloat64(i * 8, true)); break;
      case "F16": out.push(getFloat16(dv, i * 2, true)); break;
      case "BF16": {
        const b = new DataView(new ArrayBuffer(4));
        b.setUint32(0, dv.getUint16(i * 2, true) << 16, true);
        out.push(b.getFloat32(0, true));
        break;
      }
      case "I64": out.push(Number(dv.getBigInt64(i * 8, true))); break;
      case "I32": out.push(dv.getInt32(i * 4, true)); break;
      default: out.push(dv.getUint8(i));
    }
  }
  return out;
}

/** Writes a safetensors file with tensors in the given order, by hand (independent of lib/). */
export function writeModel(path: string, tensors: Record<string, TestTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = t.raw ?? encodeValues(t.dtype, t.values ?? new Array(numel(t.shape)).fill(0));
    if (bytes.length !== numel(t.shape) * SIZE[t.dtype]) throw new Error(`test model: ${name} has ${bytes.length} bytes for ${t.dtype} ${t.shape}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    blobs.push(bytes);
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...blobs]));
}

export interface ReadTensor {
  dtype: TestDtype;
  shape: number[];
  bytes: Uint8Array;
  values: number[];
}

/** Reads a safetensors file fully, by hand (independent of lib/). */
export function readModel(path: string): { tensors: Map<string, ReadTensor>; order: string[]; metadata: Record<string, string> } {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: TestDtype; shape: number[]; data_offsets: [number, number] }>;
  const tensors = new Map<string, ReadTensor>();
  const order: string[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") { metadata = e as unknown as Record<string, string>; continue; }
    const bytes = buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes, values: decodeValues(e.dtype, bytes) });
    order.push(name);
  }
  order.sort((x, y) => header[x]!.data_offsets[0] - header[y]!.data_offsets[0]);
  return { tensors, order, metadata };
}

/** A temporary folder removed after the test file. */
export function tempDir(prefix = "tm-test-"): { path: string; cleanup(): void; fresh(name: string): string } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  let n = 0;
  return {
    path,
    cleanup: () => rmSync(path, { recursive: true, force: true }),
    /** A new empty subfolder, `<name>-<n>`: each test writes where nothing else has. */
    fresh: (name: string) => {
      const p = join(path, `${name}-${++n}`);
      mkdirSync(p);
      return p;
    },
  };
}

/** Seeded values with a realistic spread plus the occasional special value. */
export function randomValues(n: number, seed: number, specials = false): number[] {
  let s = seed >>> 0 || 1;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const out: number[] = [];
  const special = [0, -0, Infinity, -Infinity, NaN, 1e-40, -6e-8, 65504, 70000, 1e-7];
  for (let i = 0; i < n; i++) {
    if (specials && next() < 0.05) out.push(special[Math.floor(next() * special.length)]!);
    else out.push((next() - 0.5) * 0.08);
  }
  return out;
}
