/**
 * Per-piece statistics in the TS engine, with the native engine's exact decomposition
 * (native/core/reductions.h; lib/native/job.ts "Per-piece statistics"): sums in double over
 * fixed blocks and lanes, block values added in index order; k-th magnitudes by a two-pass
 * radix select on the magnitude keys. The piece is read in chunks (a multiple of the block), so
 * memory stays bounded by the chunk buffers and two 65536-entry histograms per k-th reduction.
 */
import { KEEP_NONE_KEY, REDUCTIONS, REDUCTION_BLOCK, REDUCTION_LANES, type JobPiece, type Operand } from "../native/job";

/** The values of an operand on a range of the piece, after the needed ops ran on it. */
export type RangeValues = (operand: Operand) => Promise<Float32Array>;

const BINS = 65536;

function selectBin(counts: Float64Array, k: number): { bin: number; rank: number } {
  let above = 0;
  for (let b = BINS - 1; b >= 0; b--) {
    if (above + counts[b]! >= k) return { bin: b, rank: k - above };
    above += counts[b]!;
  }
  return { bin: 0, rank: k - above };
}

/** The ops the piece's reductions read, directly or through other ops, ascending. */
export function reductionOps(piece: JobPiece): number[] {
  const needed = new Array<boolean>(piece.ops.length).fill(false);
  for (const r of piece.reductions ?? []) for (const a of r.args) if (a.kind === "op") needed[a.index] = true;
  for (let k = piece.ops.length - 1; k >= 0; k--) {
    if (!needed[k]) continue;
    for (const a of piece.ops[k]!.args) if (a.kind === "op") needed[a.index] = true;
  }
  return needed.flatMap((x, k) => (x ? [k] : []));
}

/**
 * Computes the piece's reductions. `evaluate(start, n)` runs the reduction ops on elements
 * [start, start + n) and returns the operands' values there; `chunk` is a multiple of REDUCTION_BLOCK.
 */
export async function computeReductions(piece: JobPiece, chunk: number, evaluate: (start: number, n: number) => Promise<RangeValues>): Promise<{ values: number[]; columns: (Float64Array | undefined)[] }> {
  const reductions = piece.reductions ?? [];
  const results = reductions.map(() => 0);
  // Per-column sums: each column a plain double sum in element order (native/core/reductions.h).
  const columns = reductions.map((r) => (r.columns && REDUCTIONS[r.kind] !== "kth-magnitude" ? new Float64Array(r.columns) : undefined));
  const kth = reductions.map((r) => REDUCTIONS[r.kind] === "kth-magnitude" && (r.k ?? 0) > 0);
  reductions.forEach((r, i) => { if (REDUCTIONS[r.kind] === "kth-magnitude" && !kth[i]) results[i] = KEEP_NONE_KEY; });
  const hist = reductions.map((_, i) => (kth[i] ? new Float64Array(BINS) : undefined));
  const bucket = reductions.map(() => 0), remaining = reductions.map(() => 0);
  const lanes = new Float64Array(REDUCTION_LANES);
  const passes = kth.some((x) => x) ? 2 : 1;
  for (let pass = 0; pass < passes; pass++) {
    for (let start = 0; start < piece.n; start += chunk) {
      const n = Math.min(chunk, piece.n - start);
      const values = await evaluate(start, n);
      for (let r = 0; r < reductions.length; r++) {
        const red = reductions[r]!;
        const kind = REDUCTIONS[red.kind];
        if (kind === "kth-magnitude") {
          if (!kth[r]) continue;
          const x = await values(red.args[0]!);
          const bits = new Uint32Array(x.buffer, x.byteOffset, n);
          const h = hist[r]!;
          if (pass === 0) for (let e = 0; e < n; e++) h[(bits[e]! & 0x7fffffff) >>> 16]!++;
          else {
            const want = bucket[r]!;
            for (let e = 0; e < n; e++) {
              const key = bits[e]! & 0x7fffffff;
              if (key >>> 16 === want) h[key & 0xffff]!++;
            }
          }
          continue;
        }
        if (pass !== 0) continue;
        const x = await values(red.args[0]!);
        const y = kind === "dot" ? await values(red.args[1]!) : x;
        const sums = columns[r];
        if (sums) {
          const count = sums.length;
          let c = start % count;
          for (let e = 0; e < n; e++) {
            sums[c] += x[e]! * y[e]!;
            if (++c === count) c = 0;
          }
          continue;
        }
        let total = results[r]!;
        for (let b0 = 0; b0 < n; b0 += REDUCTION_BLOCK) {
          const b1 = Math.min(n, b0 + REDUCTION_BLOCK);
          lanes.fill(0);
          for (let e = b0; e < b1; e++) lanes[e & 7] += x[e]! * y[e]!;
          total += ((lanes[0]! + lanes[1]!) + (lanes[2]! + lanes[3]!)) + ((lanes[4]! + lanes[5]!) + (lanes[6]! + lanes[7]!));
        }
        results[r] = total;
      }
    }
    for (let r = 0; r < reductions.length; r++) {
      if (!kth[r]) continue;
      const h = hist[r]!;
      if (pass === 0) {
        const { bin, rank } = selectBin(h, reductions[r]!.k!);
        bucket[r] = bin;
        remaining[r] = rank;
      } else {
        results[r] = ((bucket[r]! << 16) | selectBin(h, remaining[r]!).bin) >>> 0;
      }
      h.fill(0);
    }
  }
  columns.forEach((c, r) => { if (c) results[r] = c[0]!; });
  return { values: results, columns };
}
