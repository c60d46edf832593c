/**
 * The pure-TypeScript engine: executes a `Job` with exactly the native engine's arithmetic
 * (fp32 per operation via Math.fround, the same conversions), reading inputs in bounded chunks
 * with positioned reads. It is the fallback where the addon cannot load and the yardstick the
 * native engine is measured and tested against. Runs inside a worker thread (see js-worker.ts).
 */
import { open, unlink, type FileHandle } from "node:fs/promises";
import { crc32 } from "node:zlib";
import {
  DTYPES, DTYPE_SIZE, bf16BitsToF32Bits, f32BitsToBf16, f32BitsToF16, f32BitsToF8E4m3, f32BitsToF8E5m2, f16ToF32Table, f8ToF32BitsTable, type Dtype,
} from "../dtypes";
import { MergeError, fsError } from "../errors";
import { KERNELS, type Job, type JobResult, type Operand } from "../native/job";
import { METHOD_KERNELS } from "./method-kernels";

/** Elements per chunk: bounds memory to a few MiB per operand whatever the tensor size. */
export const JS_CHUNK_ELEMENTS = 1 << 20;

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

function decode(bytes: Buffer, dtype: Dtype, out: Float32Array, n: number): void {
  switch (dtype) {
    case "F32":
      if (bytes.byteOffset % 4 === 0) out.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
      else for (let i = 0; i < n; i++) out[i] = bytes.readFloatLE(i * 4);
      return;
    case "F16": {
      const table = f16ToF32Table();
      for (let i = 0; i < n; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
      return;
    }
    case "BF16": {
      const bits = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) bits[i] = bf16BitsToF32Bits(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
      return;
    }
    case "F64":
      for (let i = 0; i < n; i++) out[i] = bytes.readDoubleLE(i * 8); // Float32Array store rounds to nearest even
      return;
    case "F8_E4M3":
    case "F8_E5M2": {
      // through the bits: a NaN read into a JS number could have its payload changed
      const table = f8ToF32BitsTable(dtype);
      const bits = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) bits[i] = table[bytes[i]!]!;
      return;
    }
    default:
      throw new MergeError("DTYPE_UNSUPPORTED", `cannot compute with ${dtype}`);
  }
}

function encode(values: Float32Array, n: number, dtype: Dtype, out: Buffer): void {
  switch (dtype) {
    case "F32":
      Buffer.from(values.buffer, values.byteOffset, n * 4).copy(out, 0);
      return;
    case "F64":
      for (let i = 0; i < n; i++) out.writeDoubleLE(values[i]!, i * 8);
      return;
    case "F16":
    case "BF16": {
      const bits = new Uint32Array(values.buffer, values.byteOffset, n);
      const convert = dtype === "F16" ? f32BitsToF16 : f32BitsToBf16;
      for (let i = 0; i < n; i++) {
        const h = convert(bits[i]!);
        out[2 * i] = h & 0xff;
        out[2 * i + 1] = h >>> 8;
      }
      return;
    }
    case "F8_E4M3":
    case "F8_E5M2": {
      const bits = new Uint32Array(values.buffer, values.byteOffset, n);
      const convert = dtype === "F8_E4M3" ? f32BitsToF8E4m3 : f32BitsToF8E5m2;
      for (let i = 0; i < n; i++) out[i] = convert(bits[i]!);
      return;
    }
    default:
      throw new MergeError("DTYPE_UNSUPPORTED", `cannot store floats as ${dtype}`);
  }
}

/**
 * Adds the NaNs and infinities among n stored values (bytes in `dtype`) to `count`, on the
 * output's own bits as exec.cc counts them (e4m3fn has no infinity: S.1111.111 is its NaN).
 * With `source` (a converted copy of an input), only elements whose fp32 source is finite count.
 */
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

/** Rounds fp32 values through F16/BF16/fp8 and back, as a saved and re-read file would hold them. */
function roundThrough(values: Float32Array, n: number, dtype: Dtype): void {
  if (dtype === "F32") return;
  const scratch = Buffer.alloc(n * DTYPE_SIZE[dtype]);
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

/** Executes a job; the same contract as the native `runJob`. */
export async function runJsJob(job: Job): Promise<JobResult> {
  const pauseMs = chunkPauseMs();
  const inputs: FileHandle[] = [];
  const outputs: FileHandle[] = [];
  const created: string[] = [];
  const control = job.control;
  let bytesWritten = 0;
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
    const values: Float32Array[] = [];
    const raw = Buffer.alloc(JS_CHUNK_ELEMENTS * 8);
    const outBytes = Buffer.alloc(JS_CHUNK_ELEMENTS * 8);
    const operandValues = new Map<string, Float32Array>();
    // Per output, by the rule of exec.h (exec_write_range): op results, and converted copies where the input was finite.
    const nonFinite = job.outputs.map(() => ({ nan: 0, inf: 0 }));
    for (const piece of job.pieces) {
      for (let start = 0; start < piece.n; start += JS_CHUNK_ELEMENTS) {
        if (control[0] !== 0) throw new MergeError("ABORTED", "the merge was cancelled");
        const n = Math.min(JS_CHUNK_ELEMENTS, piece.n - start);
        operandValues.clear();
        const load = async (operand: Operand): Promise<Float32Array> => {
          if (operand.kind === "op") return values[operand.index]!;
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
        values.length = 0;
        for (const op of piece.ops) {
          const args: Float32Array[] = [];
          for (const arg of op.args) args.push(await load(arg));
          const out = new Float32Array(n);
          runKernel(op.kernel, args, op.params, out, n);
          roundThrough(out, n, DTYPES[op.round]!);
          values.push(out);
        }
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
          bytesWritten += n * size;
          control[1] = bytesWritten;
        }
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
    }
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
    return { bytesWritten, isa: "js", threads: 1, crc32: crcs, nonFinite };
  } catch (e) {
    for (const path of created) await unlink(path).catch(() => undefined);
    throw e;
  } finally {
    for (const h of [...inputs, ...outputs]) await h.close().catch(() => undefined);
  }
}
