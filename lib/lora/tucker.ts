/**
 * Tucker (CP) LyCORIS modules, reduced to the operands the engines already have. The core
 * t [r1, r2, kh, kw] sits between the two factors; the formulas (LyCORIS
 * `lycoris/functional/general.py` `tucker_weight_from_conv` and `rebuild_tucker`; AUTOMATIC1111
 * `extensions-builtin/Lora/lyco_helpers.py` `rebuild_cp_decomposition` / `make_weight_cp`):
 *
 * - LoCon `lora_mid`: ΔW[o, j, k, l] = Σ_n Σ_m up[o, n] · mid[n, m, k, l] · down[m, j];
 * - LoHa `hada_t1` (and `hada_t2`): ΔW₁[p, j, k, l] = Σ_i Σ_m w1a[i, p] · t1[i, m, k, l] · w1b[m, j];
 * - LoKr `lokr_t2`: w2[p, j, k, l] = the same with w2a, t2, w2b, then ΔW = w1 ⊗ w2.
 *
 * Each is a low-rank product ΔW = U · M over the flattened [out, in·kh·kw] layout, with
 *   M[n, j·K + s] = Σ_m mid[n, m, s] · down[m, j]      (K = kh·kw, s = k·kw + l)
 * and U = up (LoCon) or w_aᵀ (LoHa, LoKr). M and the transposes are computed once per module
 * here, in fp32 with a fixed order (p_m = fp32(mid · down), P = p_0, P = fp32(P + p_m), m
 * ascending), written to a small side file of fp32 values beside the output, and read by both
 * engines like any factor: both engines get the same bits because they read the same numbers.
 * A LoKr w2 is materialised whole (it is a small Kronecker factor): w2[p, c] = Σ_i
 * fp32(w2a[i, p] · M[i, c]) in the same order, i ascending.
 *
 * Size: M is r1 × in·kh·kw floats per module (a rank-32 3×3 LoCon of SD 1.5: at most 1.5 MB a
 * module); the computation yields to the event loop between modules.
 */
import { open, rm, type FileHandle } from "node:fs/promises";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { DTYPE_SIZE } from "../dtypes";
import { MergeError, fsError } from "../errors";
import type { ModelFile, TensorInfo } from "../model";
import type { LoraModule } from "./read";
import { widenValues } from "./scalar";

/** Derived factors of a module: byte offsets (fp32, row-major) in the side file. */
export interface TuckerOffsets {
  /** LoCon: M [r1, cols] (the up factor stays in the LoRA file). */
  down?: number;
  /** LoHa: per Tucker product, U = w_aᵀ [rows, r] and M [r, cols]. */
  hada1?: { up: number; down: number };
  hada2?: { up: number; down: number };
  /** LoKr: w2 whole [out2, in2·kh·kw]. */
  lokrW2?: number;
}

/** The side file of every Tucker module of a bake. */
export interface TuckerFactors {
  /** A job input of fp32 values (no header); its path is where `write` puts it. */
  model: ModelFile;
  offsets: Map<LoraModule, TuckerOffsets>;
  /** Computes the factors and writes the file (temp name beside the output; removed by `remove`). */
  write(signal?: AbortSignal): Promise<void>;
  remove(): Promise<void>;
}

/** True for a module whose ΔW needs a Tucker reduction. */
export function isTucker(m: LoraModule): boolean {
  return m.algorithm === "tucker" || !!m.factors.hada_t1 || !!m.factors.hada_t2 || !!m.factors.lokr_t2;
}

const F32 = 4;

/** Lays out the side file for the modules (each once) and returns how to write it, or undefined when none is Tucker. */
export function planTucker(modules: Iterable<{ module: LoraModule; path: string }>, sidePath: string): TuckerFactors | undefined {
  const offsets = new Map<LoraModule, TuckerOffsets>();
  const sources = new Map<LoraModule, string>();
  let size = 0;
  const take = (n: number) => {
    const at = size;
    size += n * F32;
    return at;
  };
  for (const { module: m, path } of modules) {
    if (!isTucker(m) || offsets.has(m)) continue;
    sources.set(m, path);
    const o: TuckerOffsets = {};
    if (m.algorithm === "tucker") o.down = take(m.factors.mid!.shape[0]! * m.cols);
    if (m.factors.hada_t1) o.hada1 = { up: take(m.rows * m.factors.hada_t1.shape[0]!), down: take(m.factors.hada_t1.shape[0]! * m.cols) };
    if (m.factors.hada_t2) o.hada2 = { up: take(m.rows * m.factors.hada_t2.shape[0]!), down: take(m.factors.hada_t2.shape[0]! * m.cols) };
    if (m.factors.lokr_t2) {
      const t = m.factors.lokr_t2, a = m.factors.lokr_w2_a!, b = m.factors.lokr_w2_b!;
      o.lokrW2 = take(a.shape[1]! * b.shape[1]! * t.shape[2]! * t.shape[3]!);
    }
    offsets.set(m, o);
  }
  if (offsets.size === 0) return undefined;
  const model: ModelFile = {
    path: sidePath, format: "safetensors", size, tensors: [], byName: new Map(), metadata: {}, headerLength: 0,
    notes: [`Tucker factors of ${offsets.size} LoRA modules`],
  };
  return {
    model, offsets,
    write: (signal) => writeSide(sidePath, size, offsets, sources, signal),
    remove: () => rm(sidePath, { force: true }).then(() => undefined, () => undefined),
  };
}

async function writeSide(path: string, size: number, offsets: Map<LoraModule, TuckerOffsets>, sources: Map<LoraModule, string>, signal?: AbortSignal): Promise<void> {
  let out: FileHandle;
  try {
    out = await open(path, "wx");
  } catch (e) {
    throw fsError(e, path, "creating the Tucker factor file");
  }
  const handles = new Map<string, FileHandle>();
  try {
    const read = async (file: string, t: TensorInfo): Promise<Float32Array> => {
      if (t.strided) throw new MergeError("LORA_INVALID", `${file}: ${t.name}: a non-contiguous Tucker factor (re-save the LoRA as safetensors)`, { path: file, tensor: t.name });
      let h = handles.get(file);
      if (!h) {
        try {
          h = await open(file, "r");
        } catch (e) {
          throw fsError(e, file, "opening the LoRA");
        }
        handles.set(file, h);
      }
      const n = t.shape.reduce((a, b) => a * b, 1);
      const bytes = Buffer.alloc(n * DTYPE_SIZE[t.dtype]);
      const { bytesRead } = await h.read(bytes, 0, bytes.length, t.offset);
      if (bytesRead !== bytes.length) throw new MergeError("FILE_TRUNCATED", `${file}: ${t.name}: the file ends inside the tensor`, { path: file, tensor: t.name });
      const values = widenValues(bytes, t.dtype, n);
      return values;
    };
    const put = async (at: number, values: Float32Array) => {
      const b = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
      const { bytesWritten } = await out.write(b, 0, b.length, at);
      if (bytesWritten !== b.length) throw new MergeError("IO_ERROR", `${path}: short write`, { path });
    };
    for (const [m, o] of offsets) {
      if (signal?.aborted) throw new MergeError("ABORTED", "the bake was cancelled");
      const file = sources.get(m)!;
      const f = m.factors;
      if (o.down !== undefined) {
        const mid = f.mid!;
        await put(o.down, coreTimes(await read(file, mid), mid.shape, await read(file, f.down!), f.down!.shape[1]!));
      }
      for (const [which, off] of [["1", o.hada1], ["2", o.hada2]] as const) {
        if (!off) continue;
        const t = f[`hada_t${which}`]!, a = f[`hada_w${which}_a`]!, b = f[`hada_w${which}_b`]!;
        await put(off.up, transpose(await read(file, a), a.shape[0]!, a.shape[1]!));
        await put(off.down, coreTimes(await read(file, t), t.shape, await read(file, b), b.shape[1]!));
      }
      if (o.lokrW2 !== undefined) {
        const t = f.lokr_t2!, a = f.lokr_w2_a!, b = f.lokr_w2_b!;
        const core = coreTimes(await read(file, t), t.shape, await read(file, b), b.shape[1]!);
        await put(o.lokrW2, transposedTimes(await read(file, a), a.shape[0]!, a.shape[1]!, core));
      }
      await yieldToLoop(); // one module at a time: the event loop stays responsive
    }
    await out.truncate(size);
    await out.sync();
  } catch (e) {
    await out.close().catch(() => undefined);
    await rm(path, { force: true }).catch(() => undefined);
    if (e instanceof MergeError) throw e;
    throw fsError(e, path, "writing the Tucker factor file");
  } finally {
    for (const h of handles.values()) await h.close().catch(() => undefined);
  }
  await out.close();
}

/**
 * M [r1, inputs·K] with M[n, j·K + s] = Σ_m fp32(t[n, m, s] · w[m, j]), P = p_0, P = fp32(P + p_m),
 * m ascending (t [r1, r2, kh, kw], w [r2, inputs]).
 */
export function coreTimes(t: Float32Array, tShape: readonly number[], w: Float32Array, inputs: number): Float32Array {
  const [r1, r2] = [tShape[0]!, tShape[1]!];
  const K = tShape[2]! * tShape[3]!;
  const out = new Float32Array(r1 * inputs * K);
  const f = Math.fround;
  for (let n = 0; n < r1; n++) {
    for (let j = 0; j < inputs; j++) {
      for (let s = 0; s < K; s++) {
        let acc = f(t[(n * r2) * K + s]! * w[j]!);
        for (let m = 1; m < r2; m++) acc = f(acc + f(t[(n * r2 + m) * K + s]! * w[m * inputs + j]!));
        out[(n * inputs + j) * K + s] = acc;
      }
    }
  }
  return out;
}

/** aᵀ of a [rows, cols] matrix. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

/** aᵀ · m for a [r, p] and m [r, c]: out[p, c] = Σ_i fp32(a[i, p] · m[i, c]), i ascending. */
function transposedTimes(a: Float32Array, r: number, p: number, m: Float32Array): Float32Array {
  const c = m.length / r;
  const out = new Float32Array(p * c);
  const f = Math.fround;
  for (let o = 0; o < p; o++) {
    for (let j = 0; j < c; j++) {
      let acc = f(a[o]! * m[j]!);
      for (let i = 1; i < r; i++) acc = f(acc + f(a[i * p + o]! * m[i * c + j]!));
      out[o * c + j] = acc;
    }
  }
  return out;
}
