/**
 * Byte <-> fp32 conversion of whole chunks for the TS engine, and the non-finite count of a
 * written chunk. Values move as bits (Uint32Array) so NaN payloads survive; each dtype has its
 * own loop (no per-element dispatch). The conversions themselves are in conversions.ts.
 */
import type { FileHandle } from "node:fs/promises";
import type { Dtype } from "../dtypes";
import { MergeError } from "../errors";
import { narrowBf16, narrowF16, narrowF8, widenBf16, widenF16, widenF8 } from "./conversions";

/** A Buffer of its own ArrayBuffer (offset 0), so typed-array views of it are aligned. */
export function alignedBuffer(bytes: number): Buffer {
  return Buffer.from(new ArrayBuffer(bytes));
}

/** Widens n values stored as `dtype` (bytes on an 8-byte boundary) into `out`. */
export function decode(bytes: Uint8Array, dtype: Dtype, out: Float32Array, n: number): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  switch (dtype) {
    case "F32":
      bits.set(new Uint32Array(bytes.buffer, bytes.byteOffset, n));
      return;
    case "F16":
      widenF16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), bits, n);
      return;
    case "BF16":
      widenBf16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), bits, n);
      return;
    case "F64": {
      const d = new Float64Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = d[i]!; // Float32Array store rounds to nearest even
      return;
    }
    case "F8_E4M3":
    case "F8_E5M2":
      widenF8(bytes, bits, n, dtype);
      return;
    default:
      throw new MergeError("DTYPE_UNSUPPORTED", `cannot compute with ${dtype}`);
  }
}

/**
 * Narrows n fp32 values into `out` (on an 8-byte boundary) as `dtype`. With `count`, also adds
 * the NaNs and infinities among the stored values to it, as countNonFinite(out, n, dtype, count)
 * does (fp16 counts them while narrowing, without a second pass).
 */
export function encode(values: Float32Array, n: number, dtype: Dtype, out: Uint8Array, count?: NonFiniteCount): void {
  if (dtype === "F16") {
    narrowF16(new Uint32Array(values.buffer, values.byteOffset, n), new Uint16Array(out.buffer, out.byteOffset, n), n, count);
    return;
  }
  encodeBytes(values, n, dtype, out);
  if (count) countNonFinite(out, n, dtype, count);
}

function encodeBytes(values: Float32Array, n: number, dtype: Dtype, out: Uint8Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  switch (dtype) {
    case "F32":
      new Uint32Array(out.buffer, out.byteOffset, n).set(bits);
      return;
    case "F64": {
      const d = new Float64Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) d[i] = values[i]!;
      return;
    }
    case "F16":
      narrowF16(bits, new Uint16Array(out.buffer, out.byteOffset, n), n);
      return;
    case "BF16":
      narrowBf16(bits, new Uint16Array(out.buffer, out.byteOffset, n), n);
      return;
    case "F8_E4M3":
    case "F8_E5M2":
      narrowF8(bits, out, n, dtype);
      return;
    default:
      throw new MergeError("DTYPE_UNSUPPORTED", `cannot store floats as ${dtype}`);
  }
}

/** `count` 32-bit words of `bytes` from byte `skip` (a 4-byte boundary when count > 0). */
function wordsAfter(bytes: Uint8Array, skip: number, count: number): Uint32Array {
  return count > 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset + skip, count) : new Uint32Array(0);
}

/** NaNs and infinities among one output's stored values. */
export interface NonFiniteCount { nan: number; inf: number }

/**
 * Adds the NaNs and infinities among n stored values (bytes in `dtype`, on a boundary of its size)
 * to `count`, on the output's own bits as exec.cc counts them (e4m3fn has no infinity:
 * S.1111.111 is its NaN). With `source` (a converted copy of an input), only elements whose
 * fp32 source is finite count.
 */
export function countNonFinite(bytes: Uint8Array, n: number, dtype: Dtype, count: NonFiniteCount, source?: Float32Array): void {
  let nan = 0, inf = 0;
  // fp32 bits of the source, so "finite" is one integer compare
  const src = source ? new Uint32Array(source.buffer, source.byteOffset, n) : undefined;
  switch (dtype) {
    case "F32": {
      const w = new Uint32Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) {
        if (src && (src[i]! & 0x7f800000) === 0x7f800000) continue;
        const a = w[i]! & 0x7fffffff;
        if (a > 0x7f800000) nan++;
        else if (a === 0x7f800000) inf++;
      }
      break;
    }
    case "F64": {
      const w = new Uint32Array(bytes.buffer, bytes.byteOffset, 2 * n);
      for (let i = 0; i < n; i++) {
        if (src && (src[i]! & 0x7f800000) === 0x7f800000) continue;
        const hi = w[2 * i + 1]! & 0x7fffffff, lo = w[2 * i]!;
        if (hi > 0x7ff00000 || (hi === 0x7ff00000 && lo !== 0)) nan++;
        else if (hi === 0x7ff00000) inf++;
      }
      break;
    }
    case "F16":
    case "BF16": {
      const infBits = dtype === "F16" ? 0x7c00 : 0x7f80;
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      const one = (i: number): void => {
        const a = h[i]! & 0x7fff;
        if (a < infBits) return;
        if (src && (src[i]! & 0x7f800000) === 0x7f800000) return;
        if (a > infBits) nan++;
        else inf++;
      };
      // Two values per word: a half whose magnitude reaches infBits carries into its bit 15
      // when (0x8000 − infBits) is added, so a word without such a carry holds two finite values.
      // The words start at the first 4-byte boundary (the bytes may start between two).
      const lead = Math.min(n, (bytes.byteOffset & 3) >>> 1);
      for (let i = 0; i < lead; i++) one(i);
      const words = wordsAfter(bytes, 2 * lead, (n - lead) >>> 1);
      const add = (0x8000 - infBits) * 0x10001;
      for (let j = 0; j < words.length; j++) {
        if (((((words[j]! & 0x7fff7fff) + add) & 0x80008000) >>> 0) === 0) continue;
        one(lead + 2 * j);
        one(lead + 2 * j + 1);
      }
      for (let i = lead + 2 * words.length; i < n; i++) one(i);
      break;
    }
    case "F8_E5M2":
    case "F8_E4M3": {
      // Four codes per word, as above: e5m2 is non-finite from 0x7c, e4m3 only at 0x7f.
      const first = dtype === "F8_E5M2" ? 0x7c : 0x7f;
      const lead = Math.min(n, (4 - (bytes.byteOffset & 3)) & 3);
      const words = wordsAfter(bytes, lead, (n - lead) >>> 2);
      const add = (0x80 - first) * 0x01010101;
      const one = (i: number): void => {
        const a = bytes[i]! & 0x7f;
        if (a < first) return;
        if (src && (src[i]! & 0x7f800000) === 0x7f800000) return;
        if (a > 0x7c && first === 0x7c) nan++;
        else if (first === 0x7f) nan++;
        else inf++;
      };
      for (let i = 0; i < lead; i++) one(i);
      for (let j = 0; j < words.length; j++) {
        if (((((words[j]! & 0x7f7f7f7f) + add) & 0x80808080) >>> 0) === 0) continue;
        for (let i = lead + 4 * j; i < lead + 4 * j + 4; i++) one(i);
      }
      for (let i = lead + 4 * words.length; i < n; i++) one(i);
      break;
    }
    default:
      return;
  }
  count.nan += nan;
  count.inf += inf;
}

export async function readExact(handle: FileHandle, buffer: Uint8Array, length: number, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) {
      // The job's sizes were checked when the files were opened: the file shrank since.
      const now = await handle.stat().then((s) => s.size, () => undefined);
      const message = now === undefined
        ? `${path}: unexpected end of file at byte ${position + done}`
        : `${path}: the file was truncated during the merge (it is now ${now} bytes; byte ${position + done} is gone); nothing was saved`;
      throw new MergeError("FILE_TRUNCATED", message, { path });
    }
    done += bytesRead;
  }
}
