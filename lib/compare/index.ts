/**
 * Compare: how far each block of a model moved from a base, before generating a single image.
 *
 * For a base B and each other model X, per block k (the block map of B's architecture, as block
 * weights use it; lib/blocks), the relative L2 distance over every float tensor of the block:
 *
 *     d_k(X) = sqrt(Σ_t Σ_i (X_t[i] − B_t[i])²) / sqrt(Σ_t Σ_i B_t[i]²)
 *
 * (sd-mecha and SuperMerger users read the same quantity per block as "how much of the block
 * changed"; 0 is identical, 1 is a change as large as the base itself). Elements are widened to
 * fp32 exactly as the engines do (lib/engine/conversions.ts) and summed in double. Tensors the
 * other model lacks, or holds with another shape, are counted and left out. Architectures without
 * a block map are grouped by the first part of the key ("model", "first_stage_model", …).
 *
 * Streaming: tensors are read in chunks of `CHUNK_ELEMENTS` from every file through async reads,
 * so memory stays at a few chunks whatever the model size and the event loop runs between
 * chunks. (A later version can use the native engine's per-tensor reductions instead.)
 */
import { open, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import { DTYPE_SIZE, type Dtype } from "../dtypes";
import { widenBf16, widenF16, widenF8 } from "../engine/conversions";
import { MergeError, fsError } from "../errors";
import { openModel } from "../formats";
import { numelOf, type ModelFile, type TensorInfo } from "../model";
import { blockMapOf } from "../recipes/types";

/** Elements read per file per step (4 MiB of fp32). */
export const CHUNK_ELEMENTS = 1 << 20;

const FLOAT_DTYPES: readonly Dtype[] = ["F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2"];

export interface CompareProgress {
  bytesDone: number;
  bytesTotal: number;
  fraction: number;
}

export interface CompareOptions {
  signal?: AbortSignal;
  onProgress?: (progress: CompareProgress) => void;
}

export interface CompareSeries {
  path: string;
  name: string;
  /** Relative L2 distance per block (in `blocks` order); null where no tensor could be compared or the base is all zeros. */
  values: (number | null)[];
  /** Tensors compared. */
  tensors: number;
  /** Float tensors of the base this model lacks or holds with another shape or a non-float type. */
  skipped: number;
}

export interface CompareReport {
  base: { path: string; name: string };
  /** "blocks": the architecture's block map; "prefixes": the first part of each key. */
  grouping: "blocks" | "prefixes";
  /** Block map label ("SD 1.x / 2.x (26 blocks)") or "key prefixes". */
  groupingLabel: string;
  blocks: string[];
  /** One series per model after the base. */
  series: CompareSeries[];
  /** Tensors of the base in no block (not merged by block weights), left out. */
  unassigned: number;
  /** Base tensors stored as non-contiguous views (.ckpt), left out. */
  strided: number;
  bytesRead: number;
  seconds: number;
}

/** Decodes `n` elements (the buffer starts at offset 0 of its own ArrayBuffer, so typed views are aligned) of `dtype` from `bytes` into `out` (fp32 values, as the engines widen them). */
function decode(dtype: Dtype, bytes: Uint8Array, n: number, scratch: Uint32Array): Float32Array | Float64Array {
  switch (dtype) {
    case "F32": return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    case "F64": return new Float64Array(bytes.buffer, bytes.byteOffset, n);
    case "F16": widenF16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), scratch, n); break;
    case "BF16": widenBf16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), scratch, n); break;
    case "F8_E4M3": case "F8_E5M2": widenF8(bytes.subarray(0, n), scratch, n, dtype); break;
    default: throw new MergeError("INTERNAL", `compare: ${dtype} is not a float type`);
  }
  return new Float32Array(scratch.buffer, 0, n);
}

class ChunkReader {
  private readonly bytes = new Uint8Array(CHUNK_ELEMENTS * 8);
  private readonly scratch = new Uint32Array(CHUNK_ELEMENTS);
  bytesRead = 0;
  constructor(readonly model: ModelFile, readonly handle: FileHandle) {}

  /** Elements [start, start + n) of tensor `t`, widened. */
  async read(t: TensorInfo, start: number, n: number): Promise<Float32Array | Float64Array> {
    const size = DTYPE_SIZE[t.dtype];
    const length = n * size;
    const position = t.offset + start * size;
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(this.bytes, done, length - done, position + done).catch((e) => { throw fsError(e, this.model.path, "reading for compare"); });
      if (bytesRead === 0) throw new MergeError("FILE_TRUNCATED", `${this.model.path}: the file ended inside tensor ${t.name}`, { path: this.model.path, tensor: t.name });
      done += bytesRead;
    }
    this.bytesRead += length;
    return decode(t.dtype, this.bytes, n, this.scratch);
  }
}

function prefixOf(key: string): string {
  const dot = key.indexOf(".");
  return dot < 0 ? key : key.slice(0, dot);
}

/**
 * Relative L2 distance per block of each model from the first (the base).
 *
 * @example
 * const r = await compareModels(["sd15.safetensors", "mix-0.2.safetensors", "mix-0.4.safetensors"]);
 * r.blocks;            // ["BASE", "IN00", …, "OUT11"]
 * r.series[1].values;  // how far mix-0.4 moved, per block
 */
export async function compareModels(paths: readonly string[], options: CompareOptions = {}): Promise<CompareReport> {
  const started = Date.now();
  if (!Array.isArray(paths) || paths.length < 2 || !paths.every((p) => typeof p === "string" && p !== "")) {
    throw new MergeError("INVALID_ARGUMENT", "compare needs at least two model paths: the base first, then the models compared with it");
  }
  const models: ModelFile[] = [];
  for (const p of paths) models.push(await openModel(p));
  const base = models[0]!;
  const map = blockMapOf(base);
  const blockOf = map ? (k: string) => map.blockOf(k) : prefixOf;
  const floatTensors = base.tensors.filter((t) => FLOAT_DTYPES.includes(t.dtype));
  const strided = floatTensors.filter((t) => t.strided).length;
  const assigned = floatTensors.filter((t) => !t.strided && blockOf(t.name) !== null);
  const blocks = map ? [...map.names] : [...new Set(assigned.map((t) => prefixOf(t.name)))];
  const index = new Map(blocks.map((b, i) => [b, i]));
  const baseSq = new Float64Array(blocks.length);
  const others = models.slice(1);
  const diffSq = others.map(() => new Float64Array(blocks.length));
  const compared = others.map(() => new Uint32Array(blocks.length));
  const skipped = others.map(() => 0);

  // Which tensors each model can be compared on, decided from the headers before any data is read.
  const plan = assigned.map((t) => ({
    t,
    block: index.get(blockOf(t.name)!)!,
    with: others.map((m, j) => {
      const o = m.byName.get(t.name);
      const ok = !!o && !o.strided && FLOAT_DTYPES.includes(o.dtype) && o.shape.length === t.shape.length && o.shape.every((d, k) => d === t.shape[k]);
      if (!ok) skipped[j]!++;
      return ok ? o! : null;
    }),
  }));
  const bytesTotal = plan.reduce((s, p) => s + (p.with.some((o) => o) ? p.t.byteLength : 0) + p.with.reduce((q, o) => q + (o ? o.byteLength : 0), 0), 0);

  const handles: FileHandle[] = [];
  try {
    for (const m of models) handles.push(await open(m.path, "r").catch((e) => { throw fsError(e, m.path, "opening for compare"); }));
    const readers = models.map((m, i) => new ChunkReader(m, handles[i]!));
    let lastReport = 0;
    const report = () => {
      const done = readers.reduce((s, r) => s + r.bytesRead, 0);
      options.onProgress?.({ bytesDone: done, bytesTotal, fraction: bytesTotal ? done / bytesTotal : 1 });
    };
    for (const { t, block, with: partners } of plan) {
      if (!partners.some((o) => o)) continue;
      const n = numelOf(t.shape);
      for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
        if (options.signal?.aborted) throw new MergeError("ABORTED", "the comparison was cancelled");
        const count = Math.min(CHUNK_ELEMENTS, n - start);
        // Each file has its own reader and buffers, so the base chunk stays valid while the others are read.
        const b = await readers[0]!.read(t, start, count);
        let sq = 0;
        for (let i = 0; i < count; i++) sq += b[i]! * b[i]!;
        baseSq[block]! += sq;
        for (const [j, o] of partners.entries()) {
          if (!o) continue;
          const x = await readers[j + 1]!.read(o, start, count);
          let d = 0;
          for (let i = 0; i < count; i++) {
            const e = x[i]! - b[i]!;
            d += e * e;
          }
          diffSq[j]![block]! += d;
        }
        if (Date.now() - lastReport > 200) {
          lastReport = Date.now();
          report();
        }
      }
      partners.forEach((o, j) => { if (o) compared[j]![block]!++; });
    }
    report();
    const bytesRead = readers.reduce((s, r) => s + r.bytesRead, 0);
    return {
      base: { path: base.path, name: basename(base.path) },
      grouping: map ? "blocks" : "prefixes",
      groupingLabel: map ? map.label : "key prefixes",
      blocks,
      series: others.map((m, j) => ({
        path: m.path,
        name: basename(m.path),
        values: blocks.map((_, k) => (compared[j]![k]! === 0 || baseSq[k]! === 0 ? null : Math.sqrt(diffSq[j]![k]!) / Math.sqrt(baseSq[k]!))),
        tensors: compared[j]!.reduce((s, c) => s + c, 0),
        skipped: skipped[j]!,
      })),
      unassigned: floatTensors.length - strided - assigned.length,
      strided,
      bytesRead,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    for (const h of handles) await h.close().catch(() => undefined);
  }
}
