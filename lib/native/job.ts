/**
 * The contract between the TypeScript planner and the native engine (and the TS engine, which
 * executes exactly the same job). A job is plain data: the binding copies it into C++ structs
 * (native/core/job.h) and the core re-checks every offset against the mapped file sizes before
 * any pointer arithmetic.
 *
 * Semantics of one piece, for every element i in [0, n):
 *   - an `input` operand reads element i at `offset + i × size(dtype)` of input file `file`,
 *     widened to fp32 (F16, BF16, F32, F64, F8_E4M3, F8_E5M2 only);
 *   - ops run in order; op k's result is fp32, then, if `round` is F16, BF16 or fp8, rounded through
 *     that type and widened back (so a chained recipe row sees exactly what a saved file holds);
 *     an `op` operand reads the result of an earlier op of the same piece;
 *   - each write stores its source at `offset + i × size(dtype)` of output file `output`.
 *     When the source is an input with the same dtype as the write, the bytes are copied as is
 *     (the only way non-float tensors are written); otherwise the fp32 value is converted.
 * All fp32 arithmetic is IEEE single precision with one rounding per operation, never fused:
 * that is what makes the native and TS engines bit-identical.
 *
 * Per-piece statistics (`JobPiece.reductions`, issue 11): before any element of a piece is
 * written, each reduction is computed over all n elements of its operands (inputs, or ops of
 * the piece: δ = M − base is an op). Ops a reduction reads (directly or through other ops) must
 * not read reduction results themselves. Results are doubles:
 *   - `sum-squares` (1 operand): Σ x², in double;
 *   - `dot` (2 operands): Σ x·y, in double;
 *   - `kth-magnitude` (1 operand, `k`): the k-th largest magnitude key, where an element's key is
 *     its fp32 bits with the sign cleared (an integer in [0, 2^31): keys order as |x|, −0 = +0, and
 *     NaNs rank above +∞). Exact (radix select on the keys: a histogram of the high 16 bits, then
 *     one of the low 16 bits inside the chosen bucket). k = 0 gives 2^31 (no key reaches it);
 *     1 ≤ k ≤ n otherwise. A kernel keeps x when key(x) ≥ the result: every element tied with the
 *     k-th is kept, so a tensor may keep a few more than k (TIES's rule, documented in README).
 * Sums use ONE decomposition whatever the threads, windows or engine: blocks of
 * REDUCTION_BLOCK elements from element 0 of the piece; inside a block, REDUCTION_LANES double
 * accumulators, element i adding x·x (or x·y, exact in double) to lane i mod REDUCTION_LANES in
 * index order; a block's value is ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); the blocks' values are then
 * added in index order starting from 0.0. Per-column sums (`columns`) are plain double sums of
 * each column in element order.
 *
 * An op reads reduction results through `stats` (indices into the piece's reductions, handed
 * to its kernel as doubles) and integer parameters through `ints` (u32: seeds, flags, name
 * hashes). Mask kernels also see each element's index in the tensor their mask is keyed to:
 * `elementStart` + the element's index in the piece. Limits: MAX_OP_ARGS operands, MAX_OP_PARAMS
 * params, MAX_OP_STATS stats, MAX_OP_INTS ints, MAX_PIECE_REDUCTIONS reductions per piece;
 * the core re-checks them all (job.cc) before running anything.
 *
 * The many-model kernels store every NaN result as the positive quiet NaN 0x7fc00000
 * (many_kernels.cc `canonical`). A reduction's operand ops may be evaluated more than once (on
 * a sample, then in each pass: sums and k-th counts; the radix select's low histograms;
 * per-column sums), on the pages the first pass brought into the page cache; the native core
 * finds most k-th magnitudes in one full pass from a sampled key bracket (kth_bracket.h), and
 * where a bracket misses keeps the keys of its first radix pass in a per-run store
 * (reductions.cc, TENSORMERGE_REDUCTION_CACHE_KIB). Room for new operand kinds (a low-rank product): a
 * reduction's `args` are plain Operands, so any kind exec can evaluate works there too.
 */

/** Kernel ids shared with C++ (`enum merge_kernel` in native/core/kernels.h). Never reorder. */
export const KERNELS = [
  "copy", "weighted-sum", "add-difference", "lerp", "train-difference", "triple-sum", "sum-twice", "multiply-difference", "similarity-add-difference", "clamp",
  // Many-model and statistics kernels (native/core/many_kernels.cc, lib/engine/many-kernels.ts):
  "task-merge", "slerp", "model-stock", "add-cosine",
] as const;
export type KernelName = (typeof KERNELS)[number];
export const KERNEL_ID = Object.fromEntries(KERNELS.map((k, i) => [k, i])) as Record<KernelName, number>;
/**
 * Kernels whose operand and parameter counts depend on the number of models (N = operands − 1),
 * checked by merge_many_check (native/core/many_kernels.cc); KERNEL_ARITY and KERNEL_PARAMS give -1.
 *   task-merge:  operands [base, M1..MN]; params [w1..wN, λ, keep1..keepN]; ints [flags, seedLo,
 *                seedHi, nameHash, dropThreshold1..N]; stats [t1..tN] (kth-magnitude keys) when
 *                flags & TRIM. Model j's mask is keyed with model index j − 1 (0-based).
 *   slerp:       operands [a, b]; params [t]; stats [a·b, a·a, b·b]; ints [variant].
 *   model-stock: operands [base, M1..MN] (N ≥ 2); params []; stats [δi·δi for i, then δi·δj for
 *                i < j in row order], δi = Mi − base.
 *   add-cosine:  operands [a, b]; params [α]; ints [variant (0 = sd-mecha add_cosine_a, 1 = _b),
 *                columns]; stats [a·b, a·a, b·b per column] (+ [a·b, a·a, b·b] for variant 1).
 * copy:           r = a
 * weighted-sum:   r = a·p0 + b·p1          (p0 = 1−M, p1 = M, each rounded to fp32 first)
 * add-difference: r = a + (b − c)·p0
 * lerp:           r = a + (b − a)·p0
 * The method kernels (train-difference … clamp) are written out, operation by operation, in
 * native/core/method_kernels.cc and lib/engine/method-kernels.ts.
 */
export const KERNEL_ARITY: Record<KernelName, number> = {
  copy: 1, "weighted-sum": 2, "add-difference": 3, lerp: 2,
  "train-difference": 3, "triple-sum": 3, "sum-twice": 3, "multiply-difference": 3, "similarity-add-difference": 3, clamp: 3,
  "task-merge": -1, slerp: 2, "model-stock": -1, "add-cosine": 2,
};
/** Parameters each kernel reads (`merge_kernel_n_params`). */
export const KERNEL_PARAMS: Record<KernelName, number> = {
  copy: 0, "weighted-sum": 2, "add-difference": 1, lerp: 1,
  "train-difference": 1, "triple-sum": 3, "sum-twice": 4, "multiply-difference": 4, "similarity-add-difference": 4, clamp: 0,
  "task-merge": -1, slerp: 1, "model-stock": 0, "add-cosine": 1,
};
/** Limits the core enforces (MERGE_MAX_ARGS, MERGE_MAX_PARAMS … in kernels.h): a base and 15 models. */
export const MAX_OP_ARGS = 16;
export const MAX_OP_PARAMS = 32;
export const MAX_OP_STATS = 128;
export const MAX_OP_INTS = 16;
export const MAX_PIECE_REDUCTIONS = 160;

/** Reduction kinds shared with C++ (`enum merge_reduction_kind` in native/core/reductions.h). Never reorder. */
export const REDUCTIONS = ["sum-squares", "dot", "kth-magnitude"] as const;
export type ReductionName = (typeof REDUCTIONS)[number];
export const REDUCTION_ID = Object.fromEntries(REDUCTIONS.map((k, i) => [k, i])) as Record<ReductionName, number>;
export const REDUCTION_ARITY: Record<ReductionName, number> = { "sum-squares": 1, dot: 2, "kth-magnitude": 1 };
/** The fixed decomposition of reduction sums (see the header). */
export const REDUCTION_BLOCK = 4096;
export const REDUCTION_LANES = 8;
/** kth-magnitude with k = 0: a key no element reaches (keys are < 2^31). */
export const KEEP_NONE_KEY = 2 ** 31;

/** task-merge flags (ints[0]). */
export const TASK_MERGE_FLAGS = {
  /** Keep δi only where key(δi) ≥ stats[i] (TIES trim). */
  TRIM: 1,
  /** Drop δi where the mask word < dropThreshold (DARE), keep the rest divided by `keep` when RESCALE. */
  DROP: 2,
  RESCALE: 4,
  /** Sign election (TIES): only δ that agree with the elected sign count. */
  CONSENSUS: 8,
  /** Elect the sign by count of signs instead of the weighted sum. */
  BY_COUNT: 16,
  /** Divide by the sum of the weights that count (mergekit `normalize`). */
  NORMALIZE: 32,
} as const;
/** slerp variants (ints[0]). */
export const SLERP_VARIANT = { mergekit: 0, mecha: 1 } as const;

/** One factor matrix of a low-rank operand: row-major, `dtype` (a float dtype id), in an input file. */
export interface LowRankFactor {
  file: number;
  /** Absolute byte offset of element 0. */
  offset: number;
  dtype: number;
}

/** A product up·down: `up` is [rows, rank], `down` [rank, cols] (rows, cols: the operand's). */
export interface LowRankProduct {
  rank: number;
  up: LowRankFactor;
  down: LowRankFactor;
}

/**
 * A low-rank operand (a LoRA's ΔW, lib/lora), an op argument only, never a write source. It has
 * `rows × cols` = the piece's n elements; element i (row = ⌊i / cols⌋, col = i mod cols) is
 *   p_r = fp32(up[row·rank + r] · down[r·cols + col])        (factors widened exactly to fp32)
 *   P   = p_0, then P = fp32(P + p_r) for r = 1 … rank − 1     (r ascending, one rounding each)
 * and with `hadamard` (LyCORIS LoHa) fp32(P · Q), Q the second product's P. Both engines compute
 * it block by block from the factors (native/core/lowrank.cc, lib/engine/lowrank.ts); the
 * product is never materialised whole. The core checks rows·cols = n, 1 ≤ rank ≤ 65536 and every
 * factor's byte range before reading it.
 */
export interface LowRankOperand extends LowRankProduct {
  kind: "lowrank";
  rows: number;
  cols: number;
  hadamard?: LowRankProduct;
}

/** One factor of a Kronecker operand: a stored matrix [rows, cols], or a low-rank product of that shape. */
export interface KroneckerFactor {
  rows: number;
  cols: number;
  full?: LowRankFactor;
  product?: LowRankProduct;
}

/**
 * A Kronecker operand (LyCORIS LoKr), an op argument only: element i is element
 * (rowStart + ⌊i / cols⌋, i mod cols) of A ⊗ B laid out as LyCORIS does, with `kernel` k > 1 for
 * a conv whose B is a full [c, d, kh, kw] tensor (k = kh·kw): for column col, with j = ⌊col / k⌋,
 * s = col mod k, d = b.cols / k, the value is fp32(A[⌊row / b.rows⌋, ⌊j / d⌋] ·
 * B[row mod b.rows, (j mod d)·k + s]); k = 1 is the plain 2-D Kronecker product. A factor given as
 * a product takes its value in the low-rank order above. The core checks a.rows·b.rows ≥
 * rowStart + rows, a.cols·b.cols = cols, rows·cols = n and every factor's byte range.
 */
export interface KroneckerOperand {
  kind: "kronecker";
  rows: number;
  cols: number;
  kernel: number;
  rowStart: number;
  a: KroneckerFactor;
  b: KroneckerFactor;
}

export type Operand =
  | { kind: "input"; file: number; offset: number; dtype: number }
  | { kind: "op"; index: number }
  | LowRankOperand
  | KroneckerOperand;

/** A statistic over all n elements of a piece (see the header). */
export interface JobReduction {
  /** REDUCTION_ID. */
  kind: number;
  /** Inputs or ops of the piece (REDUCTION_ARITY operands). */
  args: Operand[];
  /** kth-magnitude only: 0 ≤ k ≤ n. */
  k?: number;
  /**
   * sum-squares and dot: per column instead of one sum: element i adds to column i mod columns
   * (columns divides n), each column summed in element order in double; the result is a vector.
   */
  columns?: number;
}

/**
 * One step of a piece: a kernel id, its operands (inputs or earlier ops, any count the kernel
 * takes, up to MAX_OP_ARGS) and its parameters. Parameters are per op, so per tensor: the
 * planner resolves every method parameter for each tensor (per-key weights, blocks) and writes
 * the kernel's values here. New methods add a kernel id and its arity and parameter count;
 * the job format does not change. The core rejects unknown ids, wrong counts and non-finite
 * parameters before running anything.
 */
export interface JobOp {
  kernel: number;
  args: Operand[];
  /** Up to MAX_OP_PARAMS finite parameters, used as fp32 (Math.fround applied by the planner). */
  params: number[];
  /** Dtype id to round the result through (F32 = none). */
  round: number;
  /** Indices of the piece's reductions the kernel reads, as doubles, in this order. */
  stats?: number[];
  /** Integer parameters (u32 each). */
  ints?: number[];
  /** Element index of the piece's element 0 in the tensor a mask is keyed to (default 0). */
  elementStart?: number;
}

export interface JobWrite {
  output: number;
  /** Absolute byte offset in the output file. */
  offset: number;
  dtype: number;
  source: Operand;
}

export interface JobPiece {
  /** Tensor name, for error messages. */
  name: string;
  /** Element count. */
  n: number;
  ops: JobOp[];
  writes: JobWrite[];
  /** Statistics computed over the whole piece before any of its elements is written. */
  reductions?: JobReduction[];
}

export interface JobOutput {
  /** Temporary path to create (exclusively); the TS layer renames it when the job succeeds. */
  path: string;
  /** Final size of the file in bytes. */
  size: number;
  /** Literal byte ranges (headers, zip records), written at their offsets. */
  literals: { offset: number; data: Uint8Array }[];
  /**
   * Byte ranges whose CRC-32 (zip polynomial) the engine computes as it writes them, for zip
   * (.ckpt) outputs; returned in `JobResult.crc32[output][range]`. The TS layer then patches
   * the zip records before renaming the file.
   */
  crc32Ranges?: { offset: number; length: number }[];
}

/** What a merge does with the page cache when it reads uncached inputs (Job.inputCache). */
export type InputCache = "auto" | "keep" | "bypass";
export const INPUT_CACHE_MODES: readonly InputCache[] = ["auto", "keep", "bypass"];

export interface Job {
  inputs: { path: string; size: number }[];
  outputs: JobOutput[];
  /** Pieces in output order: each output's writes are at increasing offsets. */
  pieces: JobPiece[];
  /** Worker threads for the merge loop (>= 1). */
  threads: number;
  /** Kernel set: "auto" picks the best the CPU supports. */
  isa: "auto" | "scalar" | "avx2" | "avx512";
  /**
   * Uncached input bytes: "keep" reads them through the page cache (they stay cached for the next
   * merge, unless the inputs are more than half the RAM), "bypass" reads them with O_DIRECT (no
   * page-cache page is made), "auto" (default) bypasses under a hypervisor and keeps on bare
   * metal (native/core/job.h merge_input_cache). The TS engine reads through the cache always.
   */
  inputCache?: InputCache;
  /**
   * Shared control block: [0] cancel flag (JS sets 1), [1] output bytes done (native writes),
   * [2] total output bytes (set by JS).
   */
  control: Float64Array;
}

export interface JobResult {
  bytesWritten: number;
  /** Kernel set actually used. */
  isa: string;
  threads: number;
  /** Per output, the CRC-32 of each requested range (empty arrays when none were asked). */
  crc32: number[][];
  /**
   * Per output, the NaNs and infinities of the values the merge computed (writes whose source is
   * an op), counted in the output dtype; tensors copied from an input, converted or not, are not
   * counted. Both engines give the same counts.
   */
  nonFinite: { nan: number; inf: number }[];
  /** Engine-internal timings and counters, for benchmarks. */
  stats?: Record<string, number>;
}
