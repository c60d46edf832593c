/**
 * The low-rank operand on every kernel set (native/core/lowrank_simd.h for AVX2 / AVX-512, the
 * scalar loops for isa "scalar") and on the TS engine, against the contract's fixed order written
 * out here: p_r = fp32(up[row, r] · down[r, col]), P = p_0, P = fp32(P + p_r), r ascending
 * (LoHa: fp32(P · Q); LoKr: fp32(A[..] · B[..]) with low-rank factors in the same order).
 *
 * Ranks around the vector widths (1, 7, 8, 15, 16, 17), around and past the 64-rank chunks the SIMD
 * code splits the sum at (64, 65, 128, 300), column counts that are not multiples of 8 or 16, fewer columns
 * than one vector, LoCon's flattened 3×3 convs, F16 / BF16 / F32 factors (down at a byte address
 * that is not 4-aligned too), 1 and 2 threads (other window cuts). The values span 2^±12, so a
 * different summation order changes bits: a self-check below proves the reference would see it.
 *
 * The native engine computes a low-rank operand in bands of up to 65536 elements per write range
 * (EXEC_LOWRANK_BAND, exec.h) and keeps 4 of them per thread: operands past 65536 elements (a
 * band ends mid-row, the last band is short) and an op chain reading 5 low-rank operands per
 * block (the fifth finds every band in use and is computed block by block) check those paths.
 * A column tile that more than 4 rows read is widened once into a contiguous fp32 copy: the cases
 * of more than 4 rows take that path (F16, BF16 and F32 down), those of 4 rows or fewer the other.
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setFloat16 } from "@petamoriken/float16";
import { newControl, runJob } from "../../lib/engine";
import { capabilities } from "../../lib/native/binding";
import { KERNEL_ID, type Job, type Operand } from "../../lib/native/job";
import { ENGINES } from "../helpers/engines";
import { DT, bitsOf, refBf16Bits, refLoad, rng, tempDir, valueOf } from "../native/helpers";

const f = Math.fround;
type Dt = typeof DT.F16 | typeof DT.BF16 | typeof DT.F32;
const SIZE = { [DT.F16]: 2, [DT.BF16]: 2, [DT.F32]: 4 } as Record<number, number>;

/** Values of wide range (mantissa random, exponent in 2^-12 … 2^12, either sign), as dtype bytes. */
function factorBytes(n: number, dtype: Dt, seed: number): Uint8Array {
  const next = rng(seed);
  const bytes = new Uint8Array(n * SIZE[dtype]!);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < n; i++) {
    const x = f((next() + 0.5) * 2 ** Math.floor(next() * 25 - 12) * (next() < 0.5 ? -1 : 1));
    if (dtype === DT.F32) view.setFloat32(4 * i, x, true);
    else if (dtype === DT.F16) setFloat16(view, 2 * i, x, true);
    else view.setUint16(2 * i, refBf16Bits({ bits: bitsOf(x), looseNaN: false }), true);
  }
  return bytes;
}

/** The widened fp32 values of dtype bytes (test/native/helpers' independent conversions). */
function widen(bytes: Uint8Array, dtype: Dt): number[] {
  const n = bytes.length / SIZE[dtype]!;
  return Array.from({ length: n }, (_, i) => valueOf(refLoad(bytes, i * SIZE[dtype]!, dtype).bits));
}

/** ΔW[row, col] in the contract's order (ascending r unless `reverse`, the self-check's wrong order). */
function product(up: number[], down: number[], rows: number, rank: number, cols: number, reverse = false): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const r0 = reverse ? rank - 1 : 0;
      let acc = f(up[i * rank + r0]! * down[r0 * cols + j]!);
      for (let k = 1; k < rank; k++) {
        const r = reverse ? rank - 1 - k : k;
        acc = f(acc + f(up[i * rank + r]! * down[r * cols + j]!));
      }
      out[i * cols + j] = acc;
    }
  }
  return out;
}

interface Factor { bytes: Uint8Array; dtype: Dt }
interface Case { name: string; rows: number; cols: number; rank: number; up: Dt; down: Dt; hadamardRank?: number; shift?: number }

const CASES: Case[] = [
  ...[1, 7, 8, 15, 16, 17, 64, 65, 128].map((rank): Case => ({ name: `rank ${rank}, 33 × 77 f16`, rows: 33, cols: 77, rank, up: DT.F16, down: DT.F16 })),
  { name: "rank 300 (five rank chunks), 9 × 160 f16", rows: 9, cols: 160, rank: 300, up: DT.F16, down: DT.F16 },
  { name: "rank 128, 40 × 1281 f16 (windows cut rows)", rows: 40, cols: 1281, rank: 128, up: DT.F16, down: DT.F16 },
  { name: "rank 16, 4 × 5000 bf16 (a window is part of a row)", rows: 4, cols: 5000, rank: 16, up: DT.BF16, down: DT.BF16 },
  { name: "rank 17, 300 × 5 f32 (fewer columns than a vector)", rows: 300, cols: 5, rank: 17, up: DT.F32, down: DT.F32 },
  { name: "rank 8, 64 × 3 f32 down at a 2-byte address", rows: 64, cols: 3, rank: 8, up: DT.F32, down: DT.F32, shift: 2 },
  { name: "rank 9, 20 × 70 f32 down at a 2-byte address", rows: 20, cols: 70, rank: 9, up: DT.F16, down: DT.F32, shift: 2 },
  { name: "LoCon 3×3 conv: rank 16, 48 out × (40·9) f16", rows: 48, cols: 360, rank: 16, up: DT.F16, down: DT.F16 },
  { name: "LoCon 3×3 conv: rank 7, 20 out × (13·9) bf16 up, f16 down", rows: 20, cols: 117, rank: 7, up: DT.BF16, down: DT.F16 },
  { name: "LoHa: ranks 8 and 8, 31 × 95 f16", rows: 31, cols: 95, rank: 8, up: DT.F16, down: DT.F16, hadamardRank: 8 },
  { name: "LoHa: ranks 17 and 5, 12 × 144 f32", rows: 12, cols: 144, rank: 17, up: DT.F32, down: DT.F32, hadamardRank: 5 },
  { name: "rank 16, 70 × 1500 f16 (105000 elements: a band ends mid-row)", rows: 70, cols: 1500, rank: 16, up: DT.F16, down: DT.F16 },
  { name: "LoHa: ranks 9 and 8, 53 × 1300 bf16 (68900 elements: a short last band)", rows: 53, cols: 1300, rank: 9, up: DT.BF16, down: DT.BF16, hadamardRank: 8 },
];

const isas = () => (["scalar", "avx2", "avx512"] as const).filter((isa) => capabilities().isas.includes(isa));

describe("the low-rank operand: SIMD kernel sets = scalar = TS = the fixed order", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-lowrank-simd-");
  after(() => dir.cleanup());

  /** One file: [shift bytes][up][down][hadamard up][hadamard down], each factor 4-aligned but for `shift`. */
  function layout(c: Case, seed: number) {
    const parts: { factor: Factor; offset: number }[] = [];
    let offset = c.shift ?? 0;
    const add = (n: number, dtype: Dt) => {
      const factor = { bytes: factorBytes(n, dtype, seed + parts.length * 101), dtype };
      parts.push({ factor, offset });
      offset += factor.bytes.length;
      offset += (4 - (offset % 4)) % 4 + (c.shift ?? 0);
    };
    add(c.rows * c.rank, c.up);
    add(c.rank * c.cols, c.down);
    if (c.hadamardRank) {
      add(c.rows * c.hadamardRank, c.up);
      add(c.hadamardRank * c.cols, c.down);
    }
    const file = new Uint8Array(offset + 8);
    for (const p of parts) file.set(p.factor.bytes, p.offset);
    return { parts, file };
  }

  for (const [k, c] of CASES.entries()) {
    it(c.name, async () => {
      const { parts, file } = layout(c, 1000 + 17 * k);
      const path = dir.file(`case${k}.bin`);
      writeFileSync(path, file);
      const values = parts.map((p) => widen(p.factor.bytes, p.factor.dtype));
      let want = product(values[0]!, values[1]!, c.rows, c.rank, c.cols);
      if (c.hadamardRank) {
        const q = product(values[2]!, values[3]!, c.rows, c.hadamardRank, c.cols);
        want = want.map((x, i) => f(x * q[i]!));
      }
      if (c.rank >= 8) {
        // The reference sees the order: summing r descending changes some elements' bits.
        const right = product(values[0]!, values[1]!, c.rows, c.rank, c.cols), wrong = product(values[0]!, values[1]!, c.rows, c.rank, c.cols, true);
        assert.ok(wrong.some((x, i) => bitsOf(x) !== bitsOf(right[i]!)), "values too tame to tell orders apart");
      }
      const ref = (i: number) => ({ file: 0, offset: parts[i]!.offset, dtype: parts[i]!.factor.dtype });
      const lowrank: Operand = { kind: "lowrank", rows: c.rows, cols: c.cols, rank: c.rank, up: ref(0), down: ref(1), ...(c.hadamardRank ? { hadamard: { rank: c.hadamardRank, up: ref(2), down: ref(3) } } : {}) };
      await compareRuns(path, file.length, c.rows * c.cols, [lowrank], [want], `case${k}`);
    });
  }

  it("an op chain reading 5 low-rank operands per block (more than the 4 bands a thread keeps), 30 × 2500", async () => {
    const rows = 30, cols = 2500, ranks = [3, 16, 1, 17, 8];
    const parts: { offset: number; up: Uint8Array; down: Uint8Array }[] = [];
    let offset = 0;
    for (const [k, rank] of ranks.entries()) {
      const up = factorBytes(rows * rank, DT.F16, 500 + 2 * k), down = factorBytes(rank * cols, DT.F16, 501 + 2 * k);
      parts.push({ offset, up, down });
      offset += up.length + down.length;
      offset += (4 - (offset % 4)) % 4;
    }
    const file = new Uint8Array(offset);
    for (const p of parts) { file.set(p.up, p.offset); file.set(p.down, p.offset + p.up.length); }
    const path = dir.file("five.bin");
    writeFileSync(path, file);
    const wants = parts.map((p, k) => product(widen(p.up, DT.F16), widen(p.down, DT.F16), rows, ranks[k]!, cols));
    const operands = parts.map((p, k): Operand => ({
      kind: "lowrank", rows, cols, rank: ranks[k]!, up: { file: 0, offset: p.offset, dtype: DT.F16 }, down: { file: 0, offset: p.offset + p.up.length, dtype: DT.F16 },
    }));
    await compareRuns(path, file.length, rows * cols, operands, wants, "five");
  });

  it("LoKr: a full factor ⊗ a low-rank factor (rank 17), and two low-rank factors", async () => {
    // A [2, 3] full, B [5, 40] = up [5, 17] · down [17, 40]: module [10, 120]
    const a = factorBytes(6, DT.F32, 7), bu = factorBytes(5 * 17, DT.F16, 8), bd = factorBytes(17 * 40, DT.F16, 9);
    const file = new Uint8Array(24 + bu.length + bd.length + 8);
    file.set(a, 0); file.set(bu, 24); file.set(bd, 24 + bu.length);
    const path = dir.file("lokr.bin");
    writeFileSync(path, file);
    const av = widen(a, DT.F32), bv = product(widen(bu, DT.F16), widen(bd, DT.F16), 5, 17, 40);
    const want = new Float32Array(10 * 120);
    for (let row = 0; row < 10; row++) for (let col = 0; col < 120; col++) want[row * 120 + col] = f(av[Math.floor(row / 5) * 3 + Math.floor(col / 40)]! * bv[(row % 5) * 40 + (col % 40)]!);
    const kron: Operand = {
      kind: "kronecker", rows: 10, cols: 120, kernel: 1, rowStart: 0,
      a: { rows: 2, cols: 3, full: { file: 0, offset: 0, dtype: DT.F32 } },
      b: { rows: 5, cols: 40, product: { rank: 17, up: { file: 0, offset: 24, dtype: DT.F16 }, down: { file: 0, offset: 24 + bu.length, dtype: DT.F16 } } },
    };
    await compareRuns(path, file.length, 1200, [kron], [want], "lokr");
    // A as a product too (rank 1 of a [2, 1]·[1, 3]): its values in the same order
    const au = factorBytes(2, DT.F32, 10), ad = factorBytes(3, DT.F32, 11);
    const file2 = new Uint8Array(file.length + 20);
    file2.set(file, 0); file2.set(au, file.length); file2.set(ad, file.length + 8);
    const path2 = dir.file("lokr2.bin");
    writeFileSync(path2, file2);
    const av2 = product(widen(au, DT.F32), widen(ad, DT.F32), 2, 1, 3);
    const want2 = want.map((_, i) => f(av2[Math.floor(Math.floor(i / 120) / 5) * 3 + Math.floor((i % 120) / 40)]! * bv[(Math.floor(i / 120) % 5) * 40 + ((i % 120) % 40)]!));
    const kron2 = { ...kron, a: { rows: 2, cols: 3, product: { rank: 1, up: { file: 0, offset: file.length, dtype: DT.F32 }, down: { file: 0, offset: file.length + 8, dtype: DT.F32 } } } } as Operand;
    await compareRuns(path2, file2.length, 1200, [kron2], [want2], "lokr2");
  });

  /**
   * Runs r_0 = fp32(0·1 + fp32(X_0·1)), r_k = fp32(r_(k-1)·1 + fp32(X_k·1)) (weighted sums, W = 0 a
   * second file of zeros) on every engine, kernel set and thread count: bits must be
   * fp32(…fp32(0 + want_0) … + want_k).
   */
  async function compareRuns(input: string, size: number, n: number, operands: Operand[], wants: Float32Array[], tag: string): Promise<void> {
    const zeros = dir.file(`${tag}-zeros.bin`);
    writeFileSync(zeros, new Uint8Array(4 * n));
    const runs: { engine: "native" | "js"; isa: Job["isa"]; threads: number }[] = [];
    if (ENGINES.includes("native")) for (const isa of isas()) for (const threads of [1, 2]) runs.push({ engine: "native", isa, threads });
    if (ENGINES.includes("js")) runs.push({ engine: "js", isa: "auto", threads: 1 });
    assert.ok(runs.length > 0);
    const expected = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (const w of wants) acc = f(acc + w[i]!);
      expected[i] = bitsOf(acc);
    }
    for (const run of runs) {
      const out = join(dir.path, `${tag}-${run.engine}-${run.isa}-${run.threads}.bin`);
      const job: Job = {
        inputs: [{ path: input, size }, { path: zeros, size: 4 * n }],
        outputs: [{ path: out, size: 4 * n, literals: [] }],
        pieces: [{
          name: tag, n,
          ops: operands.map((operand, k) => ({
            kernel: KERNEL_ID["weighted-sum"], args: [k === 0 ? { kind: "input", file: 1, offset: 0, dtype: DT.F32 } : { kind: "op", index: k - 1 }, operand], params: [1, 1], round: DT.F32,
          })),
          writes: [{ output: 0, offset: 0, dtype: DT.F32, source: { kind: "op", index: operands.length - 1 } }],
        }],
        threads: run.threads, isa: run.isa, control: newControl(4 * n),
      };
      await runJob(job, run.engine);
      const bytes = readFileSync(out);
      for (let i = 0; i < n; i++) {
        const got = bytes.readUInt32LE(4 * i);
        if (got !== expected[i]) assert.fail(`${tag} ${run.engine} ${run.isa} ${run.threads} thread(s): element ${i} is 0x${got.toString(16)}, want 0x${expected[i]!.toString(16)}`);
      }
    }
  }
});
