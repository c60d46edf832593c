/**
 * The TS engine's low-rank operand (the contract in lib/native/job.ts, `LowRankOperand`): the
 * same fixed order as native/core/lowrank.cc, so both engines give the same bits. For element
 * (row, col): p_r = fp32(up[row, r] · down[r, col]); P = p_0, then P = fp32(P + p_r), r ascending.
 *
 * A product of two fp32 values is exact in a double (24 + 24 < 53 bits), so `Math.fround(u * d)`
 * is the fp32 product; a double sum of two fp32 values rounded once to fp32 is the fp32 sum
 * (double has more than 2·24 + 2 bits), so storing `acc + p` into a Float32Array is the fp32 add.
 */
import type { KroneckerFactor, KroneckerOperand, LowRankFactor, LowRankOperand, LowRankProduct } from "../native/job";

/** Reads `count` elements of a factor from element `first`, widened to fp32. */
export type FactorReader = (factor: LowRankFactor, first: number, count: number) => Promise<Float32Array>;

async function productInto(p: LowRankProduct, cols: number, start: number, n: number, read: FactorReader, out: Float32Array): Promise<void> {
  const { rank } = p;
  const row0 = Math.floor(start / cols);
  const row1 = Math.floor((start + n - 1) / cols);
  // The factor rows this range needs: `up` rows row0…row1, and all of `down` (rank × cols).
  const up = await read(p.up, row0 * rank, (row1 - row0 + 1) * rank);
  const down = await read(p.down, 0, rank * cols);
  const f = Math.fround;
  let k = 0;
  while (k < n) {
    const i = start + k;
    const row = Math.floor(i / cols), col = i - row * cols;
    const len = Math.min(cols - col, n - k);
    const upRow = (row - row0) * rank;
    for (let r = 0; r < rank; r++) {
      const u = up[upRow + r]!;
      const d0 = r * cols + col;
      if (r === 0) for (let j = 0; j < len; j++) out[k + j] = u * down[d0 + j]!;
      else for (let j = 0; j < len; j++) out[k + j] = out[k + j]! + f(u * down[d0 + j]!);
    }
    k += len;
  }
}

/** Elements [start, start + n) of a low-rank operand. */
export async function lowRankValues(operand: LowRankOperand, start: number, n: number, read: FactorReader): Promise<Float32Array> {
  const out = new Float32Array(n);
  if (n === 0) return out;
  await productInto(operand, operand.cols, start, n, read, out);
  if (operand.hadamard) {
    const second = new Float32Array(n);
    await productInto(operand.hadamard, operand.cols, start, n, read, second);
    for (let j = 0; j < n; j++) out[j] = out[j]! * second[j]!;
  }
  return out;
}

/** A Kronecker factor's element function (values read once per chunk; the factors are small). */
async function kronFactor(f: KroneckerFactor, read: FactorReader): Promise<(i: number, j: number) => number> {
  if (f.full) {
    const v = await read(f.full, 0, f.rows * f.cols);
    return (i, j) => v[i * f.cols + j]!;
  }
  const p = f.product!;
  const up = await read(p.up, 0, f.rows * p.rank), down = await read(p.down, 0, p.rank * f.cols);
  const out = new Float32Array(1);
  return (i, j) => {
    out[0] = up[i * p.rank]! * down[j]!;
    for (let r = 1; r < p.rank; r++) out[0] = out[0]! + Math.fround(up[i * p.rank + r]! * down[r * f.cols + j]!);
    return out[0]!;
  };
}

/** Elements [start, start + n) of a Kronecker operand (native/core/lowrank.cc kronecker_f32). */
export async function kroneckerValues(op: KroneckerOperand, start: number, n: number, read: FactorReader): Promise<Float32Array> {
  const a = await kronFactor(op.a, read), b = await kronFactor(op.b, read);
  const out = new Float32Array(n);
  const d = op.b.cols / op.kernel;
  for (let k = 0; k < n; k++) {
    const i = start + k;
    const row = op.rowStart + Math.floor(i / op.cols), col = i % op.cols;
    const j = Math.floor(col / op.kernel), s = col % op.kernel;
    out[k] = a(Math.floor(row / op.b.rows), Math.floor(j / d)) * b(row % op.b.rows, (j % d) * op.kernel + s);
  }
  return out;
}
