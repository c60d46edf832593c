/** One stored float value widened exactly (fp32 formats via their fp32 bits; F64 as is). */
import { bf16BitsToF32Bits, bitsToF32, f16BitsToF32Bits, f8E4m3ToF32Bits, f8E5m2ToF32Bits, type Dtype } from "../dtypes";
import { MergeError } from "../errors";

export function widenScalar(bytes: Buffer, dtype: Dtype): number {
  switch (dtype) {
    case "F32": return bytes.readFloatLE(0);
    case "F64": return bytes.readDoubleLE(0);
    case "F16": return bitsToF32(f16BitsToF32Bits(bytes.readUInt16LE(0)));
    case "BF16": return bitsToF32(bf16BitsToF32Bits(bytes.readUInt16LE(0)));
    case "F8_E4M3": return bitsToF32(f8E4m3ToF32Bits(bytes[0]!));
    case "F8_E5M2": return bitsToF32(f8E5m2ToF32Bits(bytes[0]!));
    default: throw new MergeError("DTYPE_UNSUPPORTED", `cannot read a ${dtype} value as a number`);
  }
}

/** `n` stored float values widened to fp32 (F64 rounded once to fp32, as the engines load it). */
export function widenValues(bytes: Buffer, dtype: Dtype, n: number): Float32Array {
  const out = new Float32Array(n);
  const size = dtype === "F64" ? 8 : dtype === "F32" ? 4 : dtype === "F16" || dtype === "BF16" ? 2 : 1;
  for (let i = 0; i < n; i++) out[i] = widenScalar(bytes.subarray(i * size, (i + 1) * size), dtype);
  return out;
}
