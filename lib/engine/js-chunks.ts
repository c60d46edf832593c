/**
 * The TS engine's chunk loop: computes and writes the chunks a thread claims, with the next
 * chunk's reads in flight while the current one is computed and the previous one's writes
 * still going out (three buffer sets, in turn). Every buffer is allocated once per thread and reused: fp32
 * inputs are used in place (no copy), an op rounded to the output's dtype is written from the
 * bytes its rounding produced (narrow(widen(c)) = c for every code a narrowing yields, so
 * those are the bytes encoding again would give). Each chunk's output bytes have fixed
 * positions, so which thread computes which chunk, and when, changes nothing in the files.
 */
import type { FileHandle } from "node:fs/promises";
import { DTYPES, DTYPE_SIZE, f8ToF32BitsTable, type Dtype } from "../dtypes";
import { MergeError } from "../errors";
import { KERNELS, type Job, type JobPiece, type LowRankFactor, type Operand } from "../native/job";
import { alignedBuffer, countNonFinite, decode, encode, readExact, type NonFiniteCount } from "./js-codec";
import { ASM_HEAP_UNIT, HEAP_RESERVED, asmHeap } from "./asm-kernels";
import { linearKernelsFor } from "./asm-linear";
import { PAGE, type OutputWriter } from "./js-direct";
import { kroneckerValues, lowRankValues } from "./lowrank";
import { MANY_KERNELS } from "./many-kernels";
import { METHOD_KERNELS } from "./method-kernels";
import { computeReductions, reductionOps } from "./reductions";

/** Elements per chunk: bounds memory to a few MiB per operand whatever the tensor size. */
export const JS_CHUNK_ELEMENTS = 1 << 20;

/** Buffer sets per thread (see runChunks). */
const JS_BUFFER_SETS = 3;

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
  /**
   * Per op: the output offset of the first write of its values as they are (its rounding
   * dtype, or fp32 when it has none), so its buffers can sit where O_DIRECT takes them.
   */
  opWriteOffset: (number | undefined)[];
  /** Set when the piece is one two-input op on fp8 codes rounded to fp8 (see pairOp). */
  pair?: { slots: [number, number]; table?: Uint8Array };
}

/** Kernels of two inputs whose fp8 results the pair table may give (runKernel computes them). */
const PAIR_KERNELS = new Set(["weighted-sum", "lerp"]);
/** Below this many elements building the table (65536 results) costs more than it saves. */
const PAIR_TABLE_MIN_ELEMENTS = 1 << 18;
const isF8 = (d: Dtype | undefined): d is "F8_E4M3" | "F8_E5M2" => d === "F8_E4M3" || d === "F8_E5M2";

/**
 * Whether the piece is one op of PAIR_KERNELS on two fp8 inputs, rounded to fp8 and written
 * only in that dtype: each result code is then a function of the two input codes, and a
 * 65536-entry table of them (computed by the generic path itself, pairTable) replaces the
 * widening, the kernel and the narrowing of every element.
 */
function pairOp(piece: JobPiece): boolean {
  if (piece.ops.length !== 1 || piece.reductions?.length || piece.n < PAIR_TABLE_MIN_ELEMENTS) return false;
  const op = piece.ops[0]!;
  if (!PAIR_KERNELS.has(KERNELS[op.kernel] ?? "") || op.args.length !== 2 || !isF8(DTYPES[op.round])) return false;
  if (!op.args.every((a) => a.kind === "input" && isF8(DTYPES[a.dtype]))) return false;
  return piece.writes.every((w) => w.source.kind !== "op" || w.dtype === op.round);
}

/** The result code of `op` for every pair of input codes: table[(a << 8) | b]. */
function pairTable(op: JobPiece["ops"][number]): Uint8Array {
  const [x, y] = op.args as [Operand & { kind: "input" }, Operand & { kind: "input" }];
  const wx = f8ToF32BitsTable(DTYPES[x.dtype] as "F8_E4M3" | "F8_E5M2"), wy = f8ToF32BitsTable(DTYPES[y.dtype] as "F8_E4M3" | "F8_E5M2");
  const a = new Float32Array(65536), b = new Float32Array(65536), out = new Float32Array(65536);
  const abits = new Uint32Array(a.buffer), bbits = new Uint32Array(b.buffer);
  for (let c = 0; c < 65536; c++) {
    abits[c] = wx[c >>> 8]!;
    bbits[c] = wy[c & 255]!;
  }
  runKernel(op.kernel, [a, b], op.params, out, 65536);
  const table = new Uint8Array(65536);
  encode(out, 65536, DTYPES[op.round]!, table);
  return table;
}

const inputKey = (o: { file: number; offset: number; dtype: number }): string => `${o.file}:${o.offset}:${o.dtype}`;

function planPiece(piece: JobPiece): PiecePlan {
  const plan: PiecePlan = { inputs: [], slotOf: new Map(), opValuesRead: piece.ops.map(() => false), opWriteOffset: piece.ops.map(() => undefined) };
  for (const w of piece.writes) {
    if (w.source.kind !== "op") continue;
    const k = w.source.index;
    if (piece.ops[k]!.round === w.dtype) plan.opWriteOffset[k] ??= w.offset;
  }
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
  const pair = pairOp(piece);
  for (const op of piece.ops) for (const a of op.args) add(a, !pair);
  for (const w of piece.writes) add(w.source, w.source.kind === "input" && w.source.dtype !== w.dtype);
  for (const r of piece.reductions ?? []) for (const a of r.args) add(a, true);
  if (pair) {
    const [x, y] = piece.ops[0]!.args as [Operand & { kind: "input" }, Operand & { kind: "input" }];
    plan.pair = { slots: [plan.slotOf.get(inputKey(x))!, plan.slotOf.get(inputKey(y))!] };
  }
  return plan;
}

/**
 * One chunk's buffers: regions of one asm heap (asm-kernels.ts, so the kernels run where the
 * inputs were read), grown on demand, then reused for every chunk this set holds.
 */
class BufferSet {
  raw: Uint8Array[] = [];
  /** Per input slot: its fp32 values (a view of `raw` for fp32, else widened into their own region). */
  inputValues: Float32Array[] = [];
  opValues: Float32Array[] = [];
  /** Per op: its values as stored in its rounding dtype, when it has one. */
  opBytes: Uint8Array[] = [];
  /** Per op: the NaNs and infinities among opBytes, counted while encoding them (else undefined). */
  opNonFinite: (NonFiniteCount | undefined)[] = [];
  /** The page-aligned heap under every buffer of the set (js-direct.ts takes it for O_DIRECT). */
  private heap: ArrayBuffer | undefined;
  /** Per key: its region of `heap`, [offset, offset + bytes); regions are bump-allocated from `top`. */
  private regions = new Map<string, { offset: number; bytes: number }>();
  private top = HEAP_RESERVED;
  /**
   * @param reserve bytes the set's first heap gets (regionsBound): enough for every region
   * the job's pieces ask for, so the heap never grows, since each heap it outgrew stayed
   * resident (its touched pages) until collected. Untouched pages cost no memory.
   */
  constructor(private readonly reserve = 0) {}
  /** The reads of the chunk this set holds. */
  reading: Promise<void> = Promise.resolve();
  /** The writes from this set's buffers still going out. */
  writing: Promise<void> = Promise.resolve();
  piece = -1;
  start = 0;
  n = 0;

  /**
   * `bytes` bytes of the set's heap (its own region per `key`, page-aligned, reused), starting
   * `shift` (< PAGE) bytes into its first page: the offset modulo the page of the file position
   * they will be written at. A region that does not fit moves the set to a larger heap; views
   * handed out before keep the old one (alive while they are), so nothing in them is lost.
   */
  placed(key: string, bytes: number, shift: number): Uint8Array {
    let region = this.regions.get(key);
    if (!region || region.bytes < bytes + PAGE) {
      const size = Math.ceil(Math.max(bytes, JS_CHUNK_ELEMENTS * 4) / PAGE) * PAGE + PAGE;
      if (!this.heap || this.top + size > this.heap.byteLength) {
        this.heap = asmHeap(Math.max(this.heap ? 2 * this.heap.byteLength : Math.max(ASM_HEAP_UNIT, this.reserve), HEAP_RESERVED + size));
        this.regions.clear();
        this.top = HEAP_RESERVED;
      }
      region = { offset: this.top, bytes: size };
      this.top += size;
      this.regions.set(key, region);
    }
    return new Uint8Array(this.heap!, region.offset + shift, bytes);
  }

  /** n fp32 values in the region of `key` (see placed). */
  floats(key: string, n: number, shift = 0): Float32Array {
    const bytes = this.placed(key, n * 4, shift);
    return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  }
}

/**
 * An upper bound of the heap bytes a buffer set takes for any chunk of the job: every region
 * (BufferSet.placed) is at most a chunk of the widest dtype (F64) plus two pages, and a piece
 * asks for at most two per input (read, widened), two per op (values, rounded bytes) and one
 * per write (encoded).
 */
export function regionsBound(job: Job): number {
  let regions = 0;
  for (const piece of job.pieces) {
    const inputs = new Set<string>();
    for (const o of [...piece.ops.flatMap((op) => op.args), ...piece.writes.map((w) => w.source), ...(piece.reductions ?? []).flatMap((r) => r.args)]) {
      if (o.kind === "input") inputs.add(inputKey(o));
    }
    regions = Math.max(regions, 2 * inputs.size + 2 * piece.ops.length + piece.writes.length);
  }
  return HEAP_RESERVED + regions * (JS_CHUNK_ELEMENTS * 8 + 2 * PAGE);
}

/** The offset into a page of file position `position`, when a view of `size`-byte elements may start there. */
function shiftFor(position: number | undefined, size: number): number {
  if (position === undefined) return 0;
  const shift = position % PAGE;
  return shift % size === 0 ? shift : 0;
}

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
    // asm-linear.ts where the operands share an asm heap (the chunk buffers), else the same loop here
    case "weighted-sum": {
      const p0 = f(params[0]!), p1 = f(params[1]!), bb = b!;
      const k = linearKernelsFor(out, [a, bb]);
      if (k) k.weightedSum(a.byteOffset, bb.byteOffset, out.byteOffset, n, p0, p1);
      else for (let i = 0; i < n; i++) out[i] = f(f(a[i]! * p0) + f(bb[i]! * p1));
      return;
    }
    case "add-difference": {
      const p0 = f(params[0]!), bb = b!, cc = c!;
      const k = linearKernelsFor(out, [a, bb, cc]);
      if (k) k.addDifference(a.byteOffset, bb.byteOffset, cc.byteOffset, out.byteOffset, n, p0);
      else for (let i = 0; i < n; i++) out[i] = f(a[i]! + f(f(bb[i]! - cc[i]!) * p0));
      return;
    }
    case "lerp": {
      const p0 = f(params[0]!), bb = b!;
      const k = linearKernelsFor(out, [a, bb]);
      if (k) k.lerp(a.byteOffset, bb.byteOffset, out.byteOffset, n, p0);
      else for (let i = 0; i < n; i++) out[i] = f(a[i]! + f(f(bb[i]! - a[i]!) * p0));
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
  job: Job, inputs: FileHandle[], outputs: OutputWriter[], claim: () => number,
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
  // Three sets: the chunk computed, the next one's reads, and the previous one's writes, which
  // O_DIRECT makes wait for the disk (a buffered write returned once copied): with two, the
  // next chunk's reads waited for them and each thread kept one 1–4 MiB write in flight.
  const reserve = regionsBound(job);
  const sets = Array.from({ length: JS_BUFFER_SETS }, () => new BufferSet(reserve));
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
      const raw = (set.raw[s] = set.placed(`r${s}`, n * size, 0));
      await readExact(inputs[input.file]!, raw, n * size, input.offset + start * size, job.inputs[input.file]!.path);
      // fp32 is used where it was read; other dtypes are widened once per chunk
      if (!input.values) return;
      if (input.dtype === "F32") set.inputValues[s] = new Float32Array(raw.buffer, raw.byteOffset, n);
      else decode(raw, input.dtype, (set.inputValues[s] = set.floats(`w${s}`, n)), n);
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
    if (plan.pair && !which) {
      const op = piece.ops[0]!;
      const table = (plan.pair.table ??= pairTable(op));
      const x = set.raw[plan.pair.slots[0]]!, y = set.raw[plan.pair.slots[1]]!;
      const at = plan.opWriteOffset[0];
      const codes = (set.opBytes[0] = set.placed("b0", n, at === undefined ? 0 : (at + set.start) % PAGE));
      for (let i = 0; i < n; i++) codes[i] = table[(x[i]! << 8) | y[i]!]!;
      set.opNonFinite[0] = undefined;
      return;
    }
    for (const k of which ?? piece.ops.keys()) {
      const op = piece.ops[k]!;
      const args: Float32Array[] = [];
      for (const arg of op.args) args.push(await valuesOf(set, arg));
      const at = plan.opWriteOffset[k];
      const round = DTYPES[op.round]!;
      const roundSize = DTYPE_SIZE[round];
      const shift = shiftFor(at === undefined ? undefined : at + set.start * roundSize, roundSize);
      // fp32 values written as they are sit where O_DIRECT takes them; others anywhere
      const out = (set.opValues[k] = set.floats(`v${k}`, n, round === "F32" ? shift : 0));
      const many = MANY_KERNELS[KERNELS[op.kernel] ?? ""];
      if (many) {
        const ids = op.stats ?? [];
        many(out, { x: args, params: op.params, stats: ids.map((r) => stats!.values[r]!), columns: ids.map((r) => stats!.columns[r]), ints: op.ints ?? [], index: (op.elementStart ?? 0) + set.start }, n);
      } else runKernel(op.kernel, args, op.params, out, n);
      if (round !== "F32") {
        // Rounds through the dtype and back, as a saved and re-read file would hold the values.
        const bytes = (set.opBytes[k] = set.placed(`b${k}`, n * roundSize, shift));
        const count = (set.opNonFinite[k] = { nan: 0, inf: 0 });
        encode(out, n, round, bytes, count);
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
      const set = (statsSet ??= new BufferSet(reserve));
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
        const opIndex = src.kind === "op" ? src.index : -1;
        const op = opIndex >= 0 ? piece.ops[opIndex]! : undefined;
        // (an op's fp32 values are not looked at here when its rounded bytes are written: the
        // pair table of a pair op makes only those)
        const computed = op && DTYPES[op.round] === dtype && dtype !== "F32" ? undefined : await valuesOf(set, src);
        if (!computed) bytes = set.opBytes[opIndex]!;
        else if (dtype === "F32") bytes = new Uint8Array(computed.buffer, computed.byteOffset, n * 4);
        else {
          bytes = set.placed(`o${wi}`, n * size, shiftFor(position, size));
          encode(computed, n, dtype, bytes);
        }
        // A converted copy (the input, or the planner's copy op of one) counts only where the input was finite.
        const copied = op && KERNELS[op.kernel] === "copy" && op.args[0]!.kind === "input" ? await valuesOf(set, op.args[0]!) : undefined;
        const counted = !computed && !copied ? set.opNonFinite[opIndex] : undefined;
        if (counted) {
          // the op's own rounded bytes, counted when runOps encoded them
          nonFinite[w.output]!.nan += counted.nan;
          nonFinite[w.output]!.inf += counted.inf;
        } else countNonFinite(bytes, n, dtype, nonFinite[w.output]!, src.kind === "input" ? computed : copied);
      }
      await outputs[w.output]!.write(bytes, n * size, position);
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
    let turn = 0;
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
      turn++;
      cur = next;
      next = sets[(turn + 1) % sets.length]!;
    }
    await Promise.all(sets.map((s) => s.writing));
    return computedStats;
  } finally {
    // Nothing may still use a handle or a buffer when the caller closes them.
    await Promise.allSettled(sets.flatMap((s) => [s.reading, s.writing]));
  }
}
