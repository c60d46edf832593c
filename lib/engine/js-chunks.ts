/**
 * The TS engine's chunk loop: computes and writes the chunks a thread claims, with the next
 * chunk's reads in flight while the current one is computed and its writes still going out
 * (two buffer sets, alternating). Every buffer is allocated once per thread and reused: fp32
 * inputs are used in place (no copy), an op rounded to the output's dtype is written from the
 * bytes its rounding produced (narrow(widen(c)) = c for every code a narrowing yields, so
 * those are the bytes encoding again would give). Each chunk's output bytes have fixed
 * positions, so which thread computes which chunk, and when, changes nothing in the files.
 */
import type { FileHandle } from "node:fs/promises";
import { DTYPES, DTYPE_SIZE, type Dtype } from "../dtypes";
import { MergeError } from "../errors";
import { KERNELS, type Job, type JobPiece, type LowRankFactor, type Operand } from "../native/job";
import { alignedBuffer, countNonFinite, decode, encode, readExact, type NonFiniteCount } from "./js-codec";
import { kroneckerValues, lowRankValues } from "./lowrank";
import { MANY_KERNELS } from "./many-kernels";
import { METHOD_KERNELS } from "./method-kernels";
import { computeReductions, reductionOps } from "./reductions";

/** Elements per chunk: bounds memory to a few MiB per operand whatever the tensor size. */
export const JS_CHUNK_ELEMENTS = 1 << 20;

/** A piece's reduction results (native/core/reductions.h), as the kernels take them. */
export interface PieceStats { values: number[]; columns: (Float64Array | undefined)[] }

/**
 * How threads share reduction results (issue 11): the first thread to need a piece's
 * statistics claims and computes them, publishes them, and the others wait for them.
 */
export interface StatsExchange {
  /** True for the one caller that must compute piece p's statistics. */
  claim(p: number): boolean;
  publish(p: number, stats: PieceStats): void;
  /** The statistics another thread computes (rejects when the job stops). */
  wait(p: number): Promise<PieceStats>;
}

/** Thrown by a worker that stopped because another one failed (never reaches the caller). */
export const STOPPED = "stopped";

/** The job's work units: each piece cut into chunks of at most JS_CHUNK_ELEMENTS, in order. */
export function chunksOf(job: Job): Array<[piece: number, start: number]> {
  const chunks: Array<[number, number]> = [];
  job.pieces.forEach((piece, p) => {
    for (let start = 0; start < piece.n; start += JS_CHUNK_ELEMENTS) chunks.push([p, start]);
  });
  return chunks;
}

/** Tests only (as in the native engine): pause after each chunk so a test can act mid-job. */
function chunkPauseMs(): number {
  const ms = Number(process.env.TENSORMERGE_WINDOW_PAUSE_MS);
  return Number.isInteger(ms) && ms > 0 && ms <= 10_000 ? ms : 0;
}

/** The distinct input ranges a piece reads (op arguments, write sources, reduction arguments). */
interface PiecePlan {
  /** `values`: widened for ops (not when only copied as they are, whatever the dtype). */
  inputs: { file: number; offset: number; dtype: Dtype; values: boolean }[];
  slotOf: Map<string, number>;
  /** Per op: whether its fp32 values are read after it ran (not only written in its rounding dtype). */
  opValuesRead: boolean[];
}

const inputKey = (o: { file: number; offset: number; dtype: number }): string => `${o.file}:${o.offset}:${o.dtype}`;

function planPiece(piece: JobPiece): PiecePlan {
  const plan: PiecePlan = { inputs: [], slotOf: new Map(), opValuesRead: piece.ops.map(() => false) };
  const read = (o: Operand): void => { if (o.kind === "op") plan.opValuesRead[o.index] = true; };
  for (const op of piece.ops) op.args.forEach(read);
  for (const r of piece.reductions ?? []) r.args.forEach(read);
  for (const w of piece.writes) if (w.source.kind === "op" && piece.ops[w.source.index]!.round !== w.dtype) read(w.source);
  const add = (o: Operand, values: boolean): void => {
    if (o.kind !== "input") return;
    const key = inputKey(o);
    const slot = plan.slotOf.get(key);
    if (slot !== undefined) { plan.inputs[slot]!.values ||= values; return; }
    plan.slotOf.set(key, plan.inputs.length);
    plan.inputs.push({ file: o.file, offset: o.offset, dtype: DTYPES[o.dtype]!, values });
  };
  for (const op of piece.ops) for (const a of op.args) add(a, true);
  for (const w of piece.writes) add(w.source, w.source.kind === "input" && w.source.dtype !== w.dtype);
  for (const r of piece.reductions ?? []) for (const a of r.args) add(a, true);
  return plan;
}

/** One chunk's buffers: grown on demand, then reused for every chunk this set holds. */
class BufferSet {
  raw: Uint8Array[] = [];
  /** Per input slot: its fp32 values (a view of `raw` for fp32, else `widened`). */
  inputValues: Float32Array[] = [];
  widened: Float32Array[] = [];
  opValues: Float32Array[] = [];
  /** Per op: its values as stored in its rounding dtype, when it has one. */
  opBytes: Uint8Array[] = [];
  outBytes: Uint8Array[] = [];
  /** The reads of the chunk this set holds. */
  reading: Promise<void> = Promise.resolve();
  /** The writes from this set's buffers still going out. */
  writing: Promise<void> = Promise.resolve();
  piece = -1;
  start = 0;
  n = 0;

  static grow<T extends Uint8Array | Float32Array>(list: T[], i: number, length: number, make: (n: number) => T): T {
    const have = list[i];
    if (have && have.length >= length) return have;
    return (list[i] = make(Math.max(length, JS_CHUNK_ELEMENTS)));
  }
}

const bytesOf = (n: number): Uint8Array => alignedBuffer(n);
const floatsOf = (n: number): Float32Array => new Float32Array(n);

/** Starts a promise whose rejection is handled later, when it is awaited. */
function track(p: Promise<void>): Promise<void> {
  p.catch(() => undefined);
  return p;
}

function runKernel(kernel: number, args: Float32Array[], params: number[], out: Float32Array, n: number): void {
  const f = Math.fround;
  const a = args[0]!, b = args[1], c = args[2];
  switch (KERNELS[kernel]) {
    case "copy":
      out.set(a.subarray(0, n));
      return;
    case "weighted-sum": {
      const p0 = f(params[0]!), p1 = f(params[1]!), bb = b!;
      for (let i = 0; i < n; i++) out[i] = f(f(a[i]! * p0) + f(bb[i]! * p1));
      return;
    }
    case "add-difference": {
      const p0 = f(params[0]!), bb = b!, cc = c!;
      for (let i = 0; i < n; i++) out[i] = f(a[i]! + f(f(bb[i]! - cc[i]!) * p0));
      return;
    }
    case "lerp": {
      const p0 = f(params[0]!), bb = b!;
      for (let i = 0; i < n; i++) out[i] = f(a[i]! + f(f(bb[i]! - a[i]!) * p0));
      return;
    }
    default: {
      const method = METHOD_KERNELS[KERNELS[kernel] ?? ""];
      if (!method) throw new MergeError("INVALID_ARGUMENT", `unknown kernel id ${kernel}`);
      method(out, args, params, n);
    }
  }
}

/**
 * Computes and writes the chunks handed out by `claim` (indexes into chunksOf(job), -1 when none
 * is left). `stop` (when set) is raised when another thread failed; `exchange` (when set) shares
 * reduction results with the other threads. Returns how many pieces' statistics it computed.
 */
export async function runChunks(
  job: Job, inputs: FileHandle[], outputs: FileHandle[], claim: () => number,
  onBytes: (bytes: number) => void, nonFinite: NonFiniteCount[], stop?: Int32Array, exchange?: StatsExchange,
): Promise<number> {
  const pauseMs = chunkPauseMs();
  let computedStats = 0;
  const chunks = chunksOf(job);
  const plans = new Map<number, PiecePlan>();
  const planOf = (p: number): PiecePlan => {
    let plan = plans.get(p);
    if (!plan) {
      // chunks are claimed in increasing order: a piece far behind never comes back
      if (plans.size >= 4) plans.delete(plans.keys().next().value!);
      plan = planPiece(job.pieces[p]!);
      plans.set(p, plan);
    }
    return plan;
  };
  const pieceStats = new Map<number, PieceStats>();
  const sets = [new BufferSet(), new BufferSet()];
  let statsSet: BufferSet | undefined;

  const readFactor = async (f: LowRankFactor, first: number, count: number): Promise<Float32Array> => {
    const dtype = DTYPES[f.dtype]!;
    const size = DTYPE_SIZE[dtype];
    const bytes = alignedBuffer(count * size);
    await readExact(inputs[f.file]!, bytes, count * size, f.offset + first * size, job.inputs[f.file]!.path);
    const out = new Float32Array(count);
    decode(bytes, dtype, out, count);
    return out;
  };

  /** Issues the reads of elements [start, start + n) of piece p into `set`. */
  const startReads = (set: BufferSet, p: number, start: number, n: number): void => {
    set.piece = p;
    set.start = start;
    set.n = n;
    const plan = planOf(p);
    set.reading = track(Promise.all(plan.inputs.map(async (input, s) => {
      const size = DTYPE_SIZE[input.dtype];
      const raw = BufferSet.grow(set.raw, s, n * size, bytesOf);
      await readExact(inputs[input.file]!, raw, n * size, input.offset + start * size, job.inputs[input.file]!.path);
      // fp32 is used where it was read; other dtypes are widened once per chunk
      if (!input.values) return;
      if (input.dtype === "F32") set.inputValues[s] = new Float32Array(raw.buffer, raw.byteOffset, n);
      else decode(raw, input.dtype, (set.inputValues[s] = BufferSet.grow(set.widened, s, n, floatsOf)), n);
    })).then(() => undefined));
  };

  /** The values of an operand in `set` (after its reads and the ops before it). */
  const valuesOf = async (set: BufferSet, o: Operand): Promise<Float32Array> => {
    switch (o.kind) {
      case "input": return set.inputValues[planOf(set.piece).slotOf.get(inputKey(o))!]!;
      case "op": return set.opValues[o.index]!;
      case "lowrank": return lowRankValues(o, set.start, set.n, readFactor);
      case "kronecker": return kroneckerValues(o, set.start, set.n, readFactor);
      default: throw new MergeError("INVALID_ARGUMENT", "unknown operand kind");
    }
  };

  /** Runs ops `which` (ascending; all when undefined) of the set's piece on its chunk. */
  const runOps = async (set: BufferSet, stats: PieceStats | undefined, which?: number[]): Promise<void> => {
    const piece = job.pieces[set.piece]!, n = set.n;
    const plan = planOf(set.piece);
    for (const k of which ?? piece.ops.keys()) {
      const op = piece.ops[k]!;
      const args: Float32Array[] = [];
      for (const arg of op.args) args.push(await valuesOf(set, arg));
      const out = BufferSet.grow(set.opValues, k, n, floatsOf);
      const many = MANY_KERNELS[KERNELS[op.kernel] ?? ""];
      if (many) {
        const ids = op.stats ?? [];
        many(out, { x: args, params: op.params, stats: ids.map((r) => stats!.values[r]!), columns: ids.map((r) => stats!.columns[r]), ints: op.ints ?? [], index: (op.elementStart ?? 0) + set.start }, n);
      } else runKernel(op.kernel, args, op.params, out, n);
      const round = DTYPES[op.round]!;
      if (round !== "F32") {
        // Rounds through the dtype and back, as a saved and re-read file would hold the values.
        const bytes = BufferSet.grow(set.opBytes, k, n * DTYPE_SIZE[round], bytesOf);
        encode(out, n, round, bytes);
        if (plan.opValuesRead[k] || which) decode(bytes, round, out, n);
      }
    }
  };

  const statsOf = async (p: number): Promise<PieceStats> => {
    const have = pieceStats.get(p);
    if (have) return have;
    for (const q of pieceStats.keys()) if (q < p) pieceStats.delete(q);
    let stats: PieceStats;
    if (exchange && !exchange.claim(p)) stats = await exchange.wait(p);
    else {
      const piece = job.pieces[p]!;
      const ops = reductionOps(piece);
      const set = (statsSet ??= new BufferSet());
      stats = await computeReductions(piece, JS_CHUNK_ELEMENTS, async (s0, count) => {
        startReads(set, p, s0, count);
        await set.reading;
        await runOps(set, undefined, ops);
        return (o) => valuesOf(set, o);
      });
      computedStats++;
      exchange?.publish(p, stats);
    }
    pieceStats.set(p, stats);
    return stats;
  };

  /** Writes the set's chunk; resolves when every write is done. */
  const startWrites = (set: BufferSet): Promise<void> => {
    const piece = job.pieces[set.piece]!, n = set.n, start = set.start;
    const plan = planOf(set.piece);
    return Promise.all(piece.writes.map(async (w, wi) => {
      const dtype = DTYPES[w.dtype]!;
      const size = DTYPE_SIZE[dtype];
      const position = w.offset + start * size;
      const src = w.source;
      let bytes: Uint8Array;
      if (src.kind === "input" && DTYPES[src.dtype] === dtype) {
        bytes = set.raw[plan.slotOf.get(inputKey(src))!]!;
      } else {
        const computed = await valuesOf(set, src);
        const opIndex = src.kind === "op" ? src.index : -1;
        const op = opIndex >= 0 ? piece.ops[opIndex]! : undefined;
        if (op && DTYPES[op.round] === dtype && dtype !== "F32") bytes = set.opBytes[opIndex]!;
        else if (dtype === "F32") bytes = new Uint8Array(computed.buffer, computed.byteOffset, n * 4);
        else {
          bytes = BufferSet.grow(set.outBytes, wi, n * size, bytesOf);
          encode(computed, n, dtype, bytes);
        }
        // A converted copy (the input, or the planner's copy op of one) counts only where the input was finite.
        const copied = op && KERNELS[op.kernel] === "copy" && op.args[0]!.kind === "input" ? await valuesOf(set, op.args[0]!) : undefined;
        countNonFinite(bytes, n, dtype, nonFinite[w.output]!, src.kind === "input" ? computed : copied);
      }
      await outputs[w.output]!.write(bytes, 0, n * size, position);
      onBytes(n * size);
    })).then(() => undefined);
  };

  const check = (): void => {
    if (job.control[0] !== 0) throw new MergeError("ABORTED", "the merge was cancelled");
    if (stop && Atomics.load(stop, 0) !== 0) throw new Error(STOPPED);
  };
  const claimChunk = (): number => {
    const g = claim();
    return g >= 0 && g < chunks.length ? g : -1;
  };
  const load = (set: BufferSet, g: number): void => {
    const [p, start] = chunks[g]!;
    startReads(set, p, start, Math.min(JS_CHUNK_ELEMENTS, job.pieces[p]!.n - start));
  };

  try {
    check();
    let g = claimChunk();
    if (g < 0) return 0;
    let cur = sets[0]!, next = sets[1]!;
    load(cur, g);
    while (g >= 0) {
      check();
      // Read ahead: the next chunk's reads overlap this one's compute (not when a test pauses
      // between chunks: it must see each chunk read after the previous one was written).
      let gNext = pauseMs ? -1 : claimChunk();
      if (gNext >= 0) {
        await next.writing;
        load(next, gNext);
      }
      const p = chunks[g]![0];
      const stats = job.pieces[p]!.reductions?.length ? await statsOf(p) : undefined;
      await cur.reading;
      await runOps(cur, stats);
      cur.writing = track(startWrites(cur));
      if (pauseMs) {
        await cur.writing;
        await new Promise((r) => setTimeout(r, pauseMs));
        check();
        gNext = claimChunk();
        if (gNext >= 0) load(next, gNext);
      }
      g = gNext;
      [cur, next] = [next, cur];
    }
    await Promise.all(sets.map((s) => s.writing));
    return computedStats;
  } finally {
    // Nothing may still use a handle or a buffer when the caller closes them.
    await Promise.allSettled(sets.flatMap((s) => [s.reading, s.writing]));
  }
}
