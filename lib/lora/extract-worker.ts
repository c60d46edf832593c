/**
 * The extraction itself, off the event loop (a worker thread started by extract.ts): for each
 * target, ΔW = W_tuned − W_base (rows of the tensor, read and widened to double), its rank-r
 * truncated SVD (svd.ts), `up = U_r·diag(S_r)`, `down = V_rᵀ`, both clamped to ±(the 0.99
 * quantile of their values), written at their offsets in the temporary output. Memory: one
 * module's ΔW in double plus its SVD work arrays (the largest module bounds it).
 */
import { open, type FileHandle } from "node:fs/promises";
import { parentPort, workerData } from "node:worker_threads";
import { bf16BitsToF32Bits, bitsToF32, f16BitsToF32Bits, f32BitsToBf16, f32BitsToF16, f32ToBits, f8E4m3ToF32Bits, f8E5m2ToF32Bits, type Dtype } from "../dtypes";
import { MergeError, fsError } from "../errors";
import { truncatedSvd } from "./svd";

export interface ExtractModuleJob {
  name: string;
  /** Byte offsets of the first element of the module's rows in each file, and the dtypes. */
  tunedOffset: number;
  baseOffset: number;
  tunedDtype: Dtype;
  baseDtype: Dtype;
  rows: number;
  cols: number;
  rank: number;
  textEncoder: boolean;
  /** Output offsets of up, down and alpha. */
  upOffset: number;
  downOffset: number;
  alphaOffset: number;
}

export interface ExtractJob {
  tunedPath: string;
  basePath: string;
  outPath: string;
  header: Uint8Array;
  size: number;
  modules: ExtractModuleJob[];
  dtype: "F32" | "F16" | "BF16";
  clampQuantile: number;
  seed: number;
  /** The output exists already with its size and header (written by extract.ts; workers share it). */
  outExists?: boolean;
}

/** The text-encoder test: the largest |tuned − base| over byte ranges of both files. */
export interface ProbeJob {
  tunedPath: string;
  basePath: string;
  ranges: { n: number; tunedOffset: number; tunedDtype: Dtype; baseOffset: number; baseDtype: Dtype }[];
}

export async function runProbe(job: ProbeJob): Promise<number> {
  const tuned = await open(job.tunedPath, "r").catch((e) => { throw fsError(e, job.tunedPath, "opening"); });
  try {
    const base = await open(job.basePath, "r").catch((e) => { throw fsError(e, job.basePath, "opening"); });
    try {
      let max = 0;
      for (const r of job.ranges) {
        const a = await readValues(tuned, job.tunedPath, r.tunedOffset, r.n, r.tunedDtype);
        const b = await readValues(base, job.basePath, r.baseOffset, r.n, r.baseDtype);
        for (let i = 0; i < r.n; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
      }
      return max;
    } finally {
      await base.close();
    }
  } finally {
    await tuned.close();
  }
}

export type ExtractMessage =
  | { progress: { done: number; total: number; name: string } }
  | { ok: true; energies: number[] }
  | { ok: false; error: { code: string; message: string; path?: string; tensor?: string } };

async function readValues(h: FileHandle, path: string, offset: number, n: number, dtype: Dtype): Promise<Float64Array> {
  const size = dtype === "F64" ? 8 : dtype === "F32" ? 4 : dtype === "F16" || dtype === "BF16" ? 2 : 1;
  const bytes = Buffer.alloc(n * size);
  const { bytesRead } = await h.read(bytes, 0, bytes.length, offset);
  if (bytesRead !== bytes.length) throw new MergeError("FILE_TRUNCATED", `${path}: the file ends at byte ${offset + bytesRead} inside a tensor`, { path });
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case "F64": out[i] = bytes.readDoubleLE(8 * i); break;
      case "F32": out[i] = bytes.readFloatLE(4 * i); break;
      case "F16": out[i] = bitsToF32(f16BitsToF32Bits(bytes.readUInt16LE(2 * i))); break;
      case "BF16": out[i] = bitsToF32(bf16BitsToF32Bits(bytes.readUInt16LE(2 * i))); break;
      case "F8_E4M3": out[i] = bitsToF32(f8E4m3ToF32Bits(bytes[i]!)); break;
      case "F8_E5M2": out[i] = bitsToF32(f8E5m2ToF32Bits(bytes[i]!)); break;
      default: throw new MergeError("DTYPE_UNSUPPORTED", `${path}: cannot extract from ${dtype}`, { path });
    }
  }
  return out;
}

function encode(values: ArrayLike<number>, dtype: ExtractJob["dtype"]): Buffer {
  const n = values.length;
  if (dtype === "F32") {
    const b = Buffer.alloc(4 * n);
    for (let i = 0; i < n; i++) b.writeFloatLE(values[i]!, 4 * i);
    return b;
  }
  const b = Buffer.alloc(2 * n);
  for (let i = 0; i < n; i++) b.writeUInt16LE(dtype === "F16" ? f32BitsToF16(f32ToBits(values[i]!)) : f32BitsToBf16(f32ToBits(values[i]!)), 2 * i);
  return b;
}

/** torch.quantile's default (linear interpolation between the two nearest ranks). */
export function quantile(values: Float64Array, q: number): number {
  const sorted = Float64Array.from(values).sort();
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Runs a whole extraction job; `post` receives progress. Returns each module's kept energy. */
export async function runExtract(job: ExtractJob, post: (m: ExtractMessage) => void): Promise<number[]> {
  const handles: FileHandle[] = [];
  const openOr = async (path: string, flags: string) => {
    const h = await open(path, flags).catch((e) => { throw fsError(e, path, "opening"); });
    handles.push(h);
    return h;
  };
  try {
    const tuned = await openOr(job.tunedPath, "r"), base = await openOr(job.basePath, "r");
    const out = await openOr(job.outPath, job.outExists ? "r+" : "wx");
    if (!job.outExists) {
      await out.truncate(job.size);
      await out.write(job.header, 0, job.header.length, 0);
    }
    const energies: number[] = [];
    for (const [index, m] of job.modules.entries()) {
      post({ progress: { done: index, total: job.modules.length, name: m.name } });
      const n = m.rows * m.cols;
      const a = await readValues(tuned, job.tunedPath, m.tunedOffset, n, m.tunedDtype);
      const b = await readValues(base, job.basePath, m.baseOffset, n, m.baseDtype);
      let total = 0;
      for (let i = 0; i < n; i++) {
        a[i] = a[i]! - b[i]!;
        total += a[i]! ** 2;
      }
      const svd = truncatedSvd(a, m.rows, m.cols, m.rank, { seed: job.seed });
      const r = svd.rank;
      const up = new Float64Array(m.rows * r);
      for (let i = 0; i < m.rows; i++) for (let c = 0; c < r; c++) up[i * r + c] = svd.u[i * r + c]! * svd.s[c]!;
      const down = svd.vt;
      let kept = 0;
      for (let c = 0; c < r; c++) kept += svd.s[c]! ** 2;
      energies.push(total > 0 ? Math.min(1, kept / total) : 1);
      // kohya: hi = quantile(cat(up, down), 0.99), both clamped to [−hi, hi]
      const all = new Float64Array(up.length + down.length);
      all.set(up);
      all.set(down, up.length);
      // clampQuantile 1 turns the clamp off (kohya's formula would still clip at −max, the sign is not symmetric)
      const hi = job.clampQuantile >= 1 ? Infinity : quantile(all, job.clampQuantile);
      const clamp = (v: Float64Array) => v.map((x) => (x > hi ? hi : x < -hi ? -hi : x));
      const upBytes = encode(clamp(up), job.dtype), downBytes = encode(clamp(down), job.dtype), alpha = encode([r], job.dtype);
      await out.write(upBytes, 0, upBytes.length, m.upOffset);
      await out.write(downBytes, 0, downBytes.length, m.downOffset);
      await out.write(alpha, 0, alpha.length, m.alphaOffset);
    }
    await out.sync();
    return energies;
  } finally {
    for (const h of handles) await h.close().catch(() => undefined);
  }
}

const data = workerData as { extract?: ExtractJob; probe?: ProbeJob } | undefined;
if (parentPort && data && (data.extract || data.probe)) {
  const port = parentPort;
  (data.extract ? runExtract(data.extract, (m) => port.postMessage(m)) : runProbe(data.probe!).then((max) => [max])).then(
    (energies) => port.postMessage({ ok: true, energies } satisfies ExtractMessage),
    (e: unknown) => {
      const err = e instanceof MergeError ? e : new MergeError("INTERNAL", e instanceof Error ? e.message : String(e));
      port.postMessage({ ok: false, error: { code: err.code, message: err.message, ...(err.path ? { path: err.path } : {}), ...(err.tensor ? { tensor: err.tensor } : {}) } } satisfies ExtractMessage);
    },
  );
}
