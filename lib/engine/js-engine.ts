/**
 * The pure-TypeScript engine: executes a `Job` with exactly the native engine's arithmetic
 * (fp32 per operation via Math.fround, the same conversions), reading inputs in bounded chunks
 * with positioned reads. It is the fallback where the addon cannot load and the yardstick the
 * native engine is measured and tested against. Runs inside a worker thread (see js-worker.ts),
 * and with `threads` > 1 shares the chunks out to that many more.
 */
import { open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { crc32 } from "node:zlib";
import { DTYPES, DTYPE_SIZE, type Dtype } from "../dtypes";
import { MergeError, fsError, type ErrorCode } from "../errors";
import { KERNELS, type Job, type JobResult, type LowRankFactor, type Operand } from "../native/job";
import { kroneckerValues, lowRankValues } from "./lowrank";
import { narrowBf16, narrowF16, narrowF8, widenBf16, widenF16, widenF8 } from "./conversions";
import { MANY_KERNELS } from "./many-kernels";
import { METHOD_KERNELS } from "./method-kernels";
import { computeReductions, reductionOps } from "./reductions";

/** Elements per chunk: bounds memory to a few MiB per operand whatever the tensor size. */
export const JS_CHUNK_ELEMENTS = 1 << 20;

function decode(bytes: Buffer, dtype: Dtype, out: Float32Array, n: number): void {
  // `bytes` starts on an 8-byte boundary (see alignedBuffer); values move as bits
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

function encode(values: Float32Array, n: number, dtype: Dtype, out: Buffer): void {
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

/**
 * Adds the NaNs and infinities among n stored values (bytes in `dtype`) to `count`, on the
 * output's own bits as exec.cc counts them (e4m3fn has no infinity: S.1111.111 is its NaN).
 * With `source` (a converted copy of an input), only elements whose fp32 source is finite count.
 */
/** NaNs and infinities among one output's stored values. */
interface NonFiniteCount { nan: number; inf: number }

export function countNonFinite(bytes: Buffer, n: number, dtype: Dtype, count: { nan: number; inf: number }, source?: Float32Array): void {
  let nan = 0, inf = 0;
  for (let i = 0; i < n; i++) {
    if (source && !Number.isFinite(source[i]!)) continue;
    let kind = 0; // 1 NaN, 2 infinity
    switch (dtype) {
      case "F32": {
        const a = bytes.readUInt32LE(4 * i) & 0x7fffffff;
        kind = a > 0x7f800000 ? 1 : a === 0x7f800000 ? 2 : 0;
        break;
      }
      case "F64": {
        const hi = bytes.readUInt32LE(8 * i + 4) & 0x7fffffff, lo = bytes.readUInt32LE(8 * i);
        kind = hi > 0x7ff00000 || (hi === 0x7ff00000 && lo !== 0) ? 1 : hi === 0x7ff00000 ? 2 : 0;
        break;
      }
      case "F16":
      case "BF16": {
        const infBits = dtype === "F16" ? 0x7c00 : 0x7f80;
        const a = (bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) & 0x7fff;
        kind = a > infBits ? 1 : a === infBits ? 2 : 0;
        break;
      }
      case "F8_E5M2": {
        const a = bytes[i]! & 0x7f;
        kind = a > 0x7c ? 1 : a === 0x7c ? 2 : 0;
        break;
      }
      case "F8_E4M3":
        kind = (bytes[i]! & 0x7f) === 0x7f ? 1 : 0;
        break;
      default:
        return;
    }
    if (kind === 1) nan++;
    else if (kind === 2) inf++;
  }
  count.nan += nan;
  count.inf += inf;
}

/** A Buffer of its own ArrayBuffer (offset 0), so typed-array views of it are aligned. */
function alignedBuffer(bytes: number): Buffer {
  return Buffer.from(new ArrayBuffer(bytes));
}

/** Rounds fp32 values through F16/BF16/fp8 and back, as a saved and re-read file would hold them. */
function roundThrough(values: Float32Array, n: number, dtype: Dtype): void {
  if (dtype === "F32") return;
  const scratch = alignedBuffer(n * DTYPE_SIZE[dtype]);
  encode(values, n, dtype, scratch);
  decode(scratch, dtype, values, n);
}

function runKernel(kernel: number, args: Float32Array[], params: number[], out: Float32Array, n: number): void {
  const f = Math.fround;
  const [a, b, c] = args as [Float32Array, Float32Array | undefined, Float32Array | undefined];
  switch (KERNELS[kernel]) {
    case "copy":
      out.set(a.subarray(0, n));
      return;
    case "weighted-sum": {
      const p0 = f(params[0]!), p1 = f(params[1]!);
      for (let i = 0; i < n; i++) out[i] = f(f(a[i]! * p0) + f(b![i]! * p1));
      return;
    }
    case "add-difference": {
      const p0 = f(params[0]!);
      for (let i = 0; i < n; i++) out[i] = f(a[i]! + f(f(b![i]! - c![i]!) * p0));
      return;
    }
    case "lerp": {
      const p0 = f(params[0]!);
      for (let i = 0; i < n; i++) out[i] = f(a[i]! + f(f(b![i]! - a[i]!) * p0));
      return;
    }
    default: {
      const method = METHOD_KERNELS[KERNELS[kernel] ?? ""];
      if (!method) throw new MergeError("INVALID_ARGUMENT", `unknown kernel id ${kernel}`);
      method(out, args, params, n);
    }
  }
}

async function readExact(handle: FileHandle, buffer: Buffer, length: number, position: number, path: string): Promise<void> {
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

/** Tests only (as in the native engine): pause after each chunk so a test can act mid-job. */
function chunkPauseMs(): number {
  const ms = Number(process.env.TENSORMERGE_WINDOW_PAUSE_MS);
  return Number.isInteger(ms) && ms > 0 && ms <= 10_000 ? ms : 0;
}

/** The job's work units: each piece cut into chunks of at most JS_CHUNK_ELEMENTS, in order. */
function chunksOf(job: Job): Array<[piece: number, start: number]> {
  const chunks: Array<[number, number]> = [];
  job.pieces.forEach((piece, p) => {
    for (let start = 0; start < piece.n; start += JS_CHUNK_ELEMENTS) chunks.push([p, start]);
  });
  return chunks;
}

/** Thrown by a worker that stopped because another one failed (never reaches the caller). */
const STOPPED = "stopped";

/**
 * Computes and writes the chunks handed out by `claim` (indexes into chunksOf(job), -1 when none
 * is left). Each chunk's output bytes have fixed positions, so which thread computes which chunk
 * changes nothing in the files. `stop` (when set) is raised when another thread failed.
 */
export async function runChunks(
  job: Job, inputs: FileHandle[], outputs: FileHandle[], claim: () => number,
  onBytes: (bytes: number) => void, nonFinite: NonFiniteCount[], stop?: Int32Array,
): Promise<void> {
  const pauseMs = chunkPauseMs();
  const chunks = chunksOf(job);
  const values: Float32Array[] = [];
  const raw = alignedBuffer(JS_CHUNK_ELEMENTS * 8);
  const outBytes = alignedBuffer(JS_CHUNK_ELEMENTS * 8);
  const operandValues = new Map<string, Float32Array>();
  // Per piece, its reduction results (each worker computes those of the pieces it writes).
  const pieceStats = new Map<number, { values: number[]; columns: (Float64Array | undefined)[] }>();
  let piece = job.pieces[0]!, start = 0, n = 0;
  const readFactor = async (f: LowRankFactor, first: number, count: number): Promise<Float32Array> => {
    const dtype = DTYPES[f.dtype]!;
    const size = DTYPE_SIZE[dtype];
    const bytes = alignedBuffer(count * size);
    await readExact(inputs[f.file]!, bytes, count * size, f.offset + first * size, job.inputs[f.file]!.path);
    const out = new Float32Array(count);
    decode(bytes, dtype, out, count);
    return out;
  };
  const load = async (operand: Operand): Promise<Float32Array> => {
    if (operand.kind === "op") return values[operand.index]!;
    if (operand.kind === "lowrank") return lowRankValues(operand, start, n, readFactor);
    if (operand.kind === "kronecker") return kroneckerValues(operand, start, n, readFactor);
    const key = `${operand.file}:${operand.offset}:${operand.dtype}`;
    const cached = operandValues.get(key);
    if (cached) return cached;
    const dtype = DTYPES[operand.dtype]!;
    const size = DTYPE_SIZE[dtype];
    await readExact(inputs[operand.file]!, raw, n * size, operand.offset + start * size, job.inputs[operand.file]!.path);
    const out = new Float32Array(n);
    decode(raw, dtype, out, n);
    operandValues.set(key, out);
    return out;
  };
  /** Runs ops `which` (ascending; all when undefined) of `piece` on [start, start + n). */
  const runOps = async (stats: { values: number[]; columns: (Float64Array | undefined)[] } | undefined, which?: number[]): Promise<void> => {
    operandValues.clear();
    values.length = 0;
    for (const k of which ?? piece.ops.keys()) {
      const op = piece.ops[k]!;
      const args: Float32Array[] = [];
      for (const arg of op.args) args.push(await load(arg));
      const out = new Float32Array(n);
      const many = MANY_KERNELS[KERNELS[op.kernel] ?? ""];
      if (many) {
        const ids = op.stats ?? [];
        many(out, { x: args, params: op.params, stats: ids.map((r) => stats!.values[r]!), columns: ids.map((r) => stats!.columns[r]), ints: op.ints ?? [], index: (op.elementStart ?? 0) + start }, n);
      } else runKernel(op.kernel, args, op.params, out, n);
      roundThrough(out, n, DTYPES[op.round]!);
      values[k] = out;
    }
  };
  for (let g = claim(); g >= 0 && g < chunks.length; g = claim()) {
    if (job.control[0] !== 0) throw new MergeError("ABORTED", "the merge was cancelled");
    if (stop && Atomics.load(stop, 0) !== 0) throw new Error(STOPPED);
    const [p, chunkStart] = chunks[g]!;
    piece = job.pieces[p]!;
    let stats: { values: number[]; columns: (Float64Array | undefined)[] } | undefined;
    if (piece.reductions?.length) {
      stats = pieceStats.get(p);
      if (!stats) {
        const ops = reductionOps(piece);
        stats = await computeReductions(piece, JS_CHUNK_ELEMENTS, async (s0, count) => {
          start = s0;
          n = count;
          await runOps(undefined, ops);
          return load;
        });
        pieceStats.set(p, stats);
      }
    }
    start = chunkStart;
    n = Math.min(JS_CHUNK_ELEMENTS, piece.n - start);
    await runOps(stats);
    for (const w of piece.writes) {
      const dtype = DTYPES[w.dtype]!;
      const size = DTYPE_SIZE[dtype];
      const position = w.offset + start * size;
      if (w.source.kind === "input" && w.source.dtype === w.dtype) {
        await readExact(inputs[w.source.file]!, raw, n * size, w.source.offset + start * size, job.inputs[w.source.file]!.path);
        await outputs[w.output]!.write(raw, 0, n * size, position);
      } else {
        const computed = await load(w.source);
        encode(computed, n, dtype, outBytes);
        // A converted copy (the input, or the planner's copy op of one) counts only where the input was finite.
        const op = w.source.kind === "op" ? piece.ops[w.source.index]! : undefined;
        const copied = op && KERNELS[op.kernel] === "copy" && op.args[0]!.kind === "input" ? await load(op.args[0]!) : undefined;
        countNonFinite(outBytes, n, dtype, nonFinite[w.output]!, w.source.kind === "input" ? computed : copied);
        await outputs[w.output]!.write(outBytes, 0, n * size, position);
      }
      onBytes(n * size);
    }
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
  }
}

/** What a part worker (js-worker.ts) is given: the job without its literals, and shared counters. */
export interface PartData {
  part: true;
  job: Job;
  /** [0] the next unclaimed chunk, [1] stop flag (a worker failed). */
  shared: Int32Array;
}
type PartMessage = { bytes: number } | { ok: true; nonFinite: NonFiniteCount[] } | { ok: false; stopped?: boolean; error?: { code: ErrorCode; message: string; path?: string; tensor?: string } };

/** Runs `threads` part workers over the job's chunks; the first real error wins, after all stopped. */
async function runParts(job: Job, threads: number, onBytes: (bytes: number) => void, nonFinite: NonFiniteCount[]): Promise<void> {
  const shared = new Int32Array(new SharedArrayBuffer(8));
  const partJob: Job = { ...job, outputs: job.outputs.map((o) => ({ ...o, literals: [] })) };
  let failure: MergeError | undefined;
  const fail = (e: MergeError): void => {
    failure ??= e;
    Atomics.store(shared, 1, 1);
  };
  await Promise.all(Array.from({ length: threads }, () => new Promise<void>((resolve) => {
    const data: PartData = { part: true, job: partJob, shared };
    const worker = new Worker(join(__dirname, "js-worker.js"), { workerData: data });
    let done = false;
    worker.on("message", (m: PartMessage) => {
      if ("bytes" in m) { onBytes(m.bytes); return; }
      done = true;
      if (m.ok) m.nonFinite.forEach((c, o) => { nonFinite[o]!.nan += c.nan; nonFinite[o]!.inf += c.inf; });
      if (!m.ok && !m.stopped) {
        const { code, message, ...context } = m.error!;
        fail(new MergeError(code, message, Object.fromEntries(Object.entries(context).filter(([, v]) => v !== undefined))));
      }
    });
    worker.once("error", (e) => { done = true; fail(new MergeError("INTERNAL", `TS engine worker failed: ${e.message}`, { cause: e })); });
    worker.once("exit", (code) => {
      if (!done) fail(new MergeError("INTERNAL", `TS engine worker exited with code ${code}`));
      resolve();
    });
  })));
  if (failure) throw failure;
}

/** Part worker body: opens its own handles (the outputs exist by now) and claims chunks. */
export async function runPart(data: PartData, post: (m: PartMessage) => void): Promise<void> {
  const { job, shared } = data;
  const handles: FileHandle[] = [];
  try {
    const inputs: FileHandle[] = [];
    for (const input of job.inputs) {
      inputs.push(await open(input.path, "r").catch((e) => { throw fsError(e, input.path, "opening an input"); }));
      handles.push(inputs[inputs.length - 1]!);
    }
    const outputs: FileHandle[] = [];
    for (const output of job.outputs) {
      outputs.push(await open(output.path, "r+").catch((e) => { throw fsError(e, output.path, "opening the output"); }));
      handles.push(outputs[outputs.length - 1]!);
    }
    const nonFinite = job.outputs.map(() => ({ nan: 0, inf: 0 }));
    await runChunks(job, inputs, outputs, () => Atomics.add(shared, 0, 1), (bytes) => post({ bytes }), nonFinite, shared.subarray(1));
    post({ ok: true, nonFinite });
  } catch (e) {
    if (e instanceof Error && e.message === STOPPED && !(e instanceof MergeError)) post({ ok: false, stopped: true });
    else {
      const err = e instanceof MergeError ? e : new MergeError("INTERNAL", e instanceof Error ? e.message : String(e));
      post({ ok: false, error: { code: err.code, message: err.message, path: err.path, tensor: err.tensor } });
    }
  } finally {
    for (const h of handles) await h.close().catch(() => undefined);
  }
}

/**
 * Executes a job; the same contract as the native `runJob`. With `job.threads` > 1 the chunks
 * are shared out to that many part workers (disjoint element ranges, each written at its own
 * position): the same bytes as one thread, memory bounded by threads × a few chunk buffers.
 */
export async function runJsJob(job: Job): Promise<JobResult> {
  const inputs: FileHandle[] = [];
  const outputs: FileHandle[] = [];
  const created: string[] = [];
  const control = job.control;
  let bytesWritten = 0;
  const onBytes = (bytes: number): void => {
    bytesWritten += bytes;
    control[1] = bytesWritten;
  };
  try {
    for (const input of job.inputs) {
      const handle = await open(input.path, "r").catch((e) => { throw fsError(e, input.path, "opening an input"); });
      inputs.push(handle);
      const size = (await handle.stat()).size;
      if (size !== input.size) throw new MergeError("SIZE_MISMATCH", `${input.path}: the file changed size (${input.size} → ${size} bytes) since it was read`, { path: input.path });
    }
    for (const output of job.outputs) {
      // "wx+": CRC ranges are read back from the output
      const handle = await open(output.path, "wx+").catch((e) => { throw fsError(e, output.path, "creating the output"); });
      created.push(output.path);
      outputs.push(handle);
      await handle.truncate(output.size);
      for (const l of output.literals) await handle.write(l.data, 0, l.data.length, l.offset);
    }
    // Per output, by the rule of exec.h (exec_write_range): op results, and converted copies where the input was finite.
    const nonFinite = job.outputs.map(() => ({ nan: 0, inf: 0 }));
    const threads = Math.max(1, Math.min(job.threads || 1, chunksOf(job).length));
    if (threads > 1) await runParts(job, threads, onBytes, nonFinite);
    else {
      let next = 0;
      await runChunks(job, inputs, outputs, () => next++, onBytes, nonFinite);
    }
    const raw = alignedBuffer(JS_CHUNK_ELEMENTS * 8);
    const crcs: number[][] = [];
    for (let o = 0; o < job.outputs.length; o++) {
      const ranges = job.outputs[o]!.crc32Ranges ?? [];
      const sums: number[] = [];
      for (const r of ranges) {
        let crc = 0;
        for (let done = 0; done < r.length; done += raw.length) {
          const len = Math.min(raw.length, r.length - done);
          await readExact(outputs[o]!, raw, len, r.offset + done, job.outputs[o]!.path);
          crc = crc32(raw.subarray(0, len), crc);
        }
        sums.push(crc >>> 0);
      }
      crcs.push(sums);
      await outputs[o]!.sync();
    }
    return { bytesWritten, isa: "js", threads, crc32: crcs, nonFinite };
  } catch (e) {
    for (const path of created) await unlink(path).catch(() => undefined);
    throw e;
  } finally {
    for (const h of [...inputs, ...outputs]) await h.close().catch(() => undefined);
  }
}
