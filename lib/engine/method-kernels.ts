/**
 * The element-wise method kernels of the TS engine: native/core/method_kernels.cc statement for
 * statement. Every fp32 operation is wrapped in Math.fround (one rounding each, in the written
 * order); the product of powers of multiply-difference is merge_pow_product's algorithm
 * (doubles inside, one rounding): asm-kernels.ts mdPow, or det-math.ts's powProductF32Array.
 */
import { ASM_HEAP_UNIT, MD_BLOCK, MD_LIST, MD_SCRATCH, asmHeap, kernelsOf, runAsm, type Kernels } from "./asm-kernels";
import { powFastExponents, powProductF32, powProductF32Array, powZeroKills } from "./det-math";

const f = Math.fround;

/** |x| leaving a NaN as it is (Math.abs may or may not clear its sign bit); ±0 give +0. */
const absf = (x: number): number => (x < 0 ? -x : x === 0 ? 0 : x);

const signbit = (x: number): boolean => x < 0 || (x === 0 && 1 / x < 0);
/** IEEE 754-2019 minimum/maximum as minf/maxf in C++: a NaN operand is the result, −0 < +0. */
function minf(x: number, y: number): number {
  if (x !== x) return x;
  if (y !== y) return y;
  if (x < y) return x;
  if (y < x) return y;
  return signbit(x) ? x : y;
}
function maxf(x: number, y: number): number {
  if (x !== x) return x;
  if (y !== y) return y;
  if (x > y) return x;
  if (y > x) return y;
  return signbit(x) ? y : x;
}

/** One train-difference element, statement for statement as native/core/method_kernels.cc. */
export function trainDifferenceExact(ai: number, bi: number, ci: number, p0: number): number {
  const t0 = f(bi - ci);
  const d0 = absf(t0);
  const d1 = absf(f(bi - ai));
  const s = f(d0 + d1);
  const q = s !== 0 ? f(d1 / s) : 0;
  const sc = t0 > 0 ? q : t0 < 0 ? (q === q ? -q : q) : f(0 * q);
  const nd = f(sc * d0);
  const v = f(nd * p0);
  return f(ai + v);
}

/** The scratch blocks and mdPow's list in a heap. */
const scratchViews = (buffer: ArrayBufferLike) => ({
  x1: new Float32Array(buffer, MD_SCRATCH, MD_BLOCK), x2: new Float32Array(buffer, MD_SCRATCH + 4 * MD_BLOCK, MD_BLOCK),
  list: new Int32Array(buffer, MD_LIST, MD_BLOCK),
});

/** The `left` elements mdPow listed (special operands), by powProductF32, in place in the first scratch block. */
function powListed({ counts }: Kernels, left: number, y1: number, y2: number): void {
  const { x1, x2, list } = scratchViews(counts.buffer);
  for (let j = 0; j < left; j++) {
    const i = list[j]!;
    x1[i] = powProductF32(x1[i]!, y1, x2[i]!, y2);
  }
}

/**
 * The pow product x1^y1 · x2^y2 of the n <= MD_BLOCK elements in a heap's two scratch blocks,
 * in place in the first: asm-kernels.ts mdPow where pow_in_range holds (the elements it lists
 * back, with a special operand, by powProductF32), else powProductF32Array.
 */
function mdPowOf(y1: number, y2: number, asm = false): (kernels: Kernels, n: number) => void {
  if (!powFastExponents(y1, y2)) return ({ counts }, n) => {
    const { x1, x2 } = scratchViews(counts.buffer);
    powProductF32Array(x1, y1, x2, y2, x1, n);
  };
  const zero1 = +powZeroKills(y1, y2), zero2 = +powZeroKills(y2, y1);
  return (kernels, n) => {
    const { k, wasmPow } = kernels;
    const left = wasmPow && !asm ? wasmPow(n, y1, y2, zero1, zero2) : k.mdPow(n, y1, y2, zero1, zero2);
    if (left !== 0) powListed(kernels, left, y1, y2);
  };
}

/**
 * out[i] = x1[i]^y1 · x2[i]^y2 for i < n, computed as multiply-difference computes it (mdPowOf,
 * through the scratch blocks of an asm heap of its own): for tests, beside powProductF32Array.
 * `asm`: the asm.js kernel even where the WebAssembly SIMD one is there.
 */
export function powProductF32Blocks(x1: Float32Array, y1: number, x2: Float32Array, y2: number, out: Float32Array, n: number, asm = false): void {
  const heap = (testHeap ??= asmHeap(ASM_HEAP_UNIT));
  const kernels = kernelsOf(heap)!;
  const pow = mdPowOf(y1, y2, asm);
  const s1 = new Float32Array(heap, MD_SCRATCH, MD_BLOCK), s2 = new Float32Array(heap, MD_SCRATCH + 4 * MD_BLOCK, MD_BLOCK);
  for (let start = 0; start < n; start += MD_BLOCK) {
    const block = Math.min(MD_BLOCK, n - start);
    s1.set(x1.subarray(start, start + block));
    s2.set(x2.subarray(start, start + block));
    pow(kernels, block);
    out.set(s1.subarray(0, block), start);
  }
}
let testHeap: ArrayBuffer | undefined;

type Kernel = (out: Float32Array, x: Float32Array[], p: number[], n: number) => void;

export const METHOD_KERNELS: Record<string, Kernel> = {
  "train-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), xa = a!, xb = b!, xc = c!;
    // asm-kernels.ts's loop, branch-free for the common element (the signs of B−C and B−A are
    // random, so absf's and the sign choice's branches would mispredict half the time). Math.abs
    // equals absf but on a NaN, and sign(B−C)·q·|B−C| is the product q·(B−C) but for its zero's
    // sign when B−C = −0; that zero only reaches the result through A + v with v = ±0, where it
    // changes nothing unless A = ±0, and then B − A is ±0 too, so s = 0. Every element where the
    // two ways can differ (a NaN anywhere, s = 0 where q = 0/0 there) is therefore NaN there, and
    // is recomputed here as native computes it.
    const someNaN = runAsm(({ k }, [oa, ob, oc, or], len) => k.trainDifference(oa!, ob!, oc!, or!, len, p0), r, [xa, xb, xc], n);
    if (someNaN) for (let i = 0; i < n; i++) if (r[i] !== r[i]) r[i] = trainDifferenceExact(xa[i]!, xb[i]!, xc[i]!, p0);
  },
  "triple-sum": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!);
    for (let i = 0; i < n; i++) {
      const u = f(a![i]! * p0);
      const v = f(b![i]! * p1);
      const w = f(c![i]! * p2);
      r[i] = f(f(u + v) + w);
    }
  },
  "sum-twice": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!), p3 = f(p[3]!);
    for (let i = 0; i < n; i++) {
      const ab = f(f(a![i]! * p0) + f(b![i]! * p1));
      r[i] = f(f(ab * p2) + f(c![i]! * p3));
    }
  },
  "multiply-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!), p3 = f(p[3]!);
    // Block by block, so the two scratch blocks (in the operands' asm heap) stay in L1 between
    // the three passes: |A − C| and |B − C| (asm-kernels.ts mdAbs), their product of powers
    // (powProductF32Array), then the combination (mdCombine).
    // - mdAbs: abs, not absf (whose branch on a random sign would mispredict half the time):
    //   they differ only in a NaN's sign bit, which the pow product never reads (pow_special's
    //   NaN is its own), as the native kernel clears it too; |round(x)| = round(|x|).
    // - mdCombine: native's sg = w − C < 0, as w < C: an fp32 difference is negative exactly
    //   when its operands are ordered so (a nonzero exact difference is at least 2^−149, so it
    //   never rounds to −0; overflow keeps the sign; ∞ − ∞ and NaN compare false both ways).
    //   negf(m) where sg < 0 as a product by ±1, without a branch on the (random) sign: a
    //   product by −1 negates a number exactly and gives back a NaN operand as it is (IEEE 754
    //   6.2.3 keeps its payload; x86-64 and AArch64 keep its sign too), which is negf.
    // - the pow product: mdPowOf.
    // - one block in one call where the WebAssembly kernels are there (wasm/md-block.ts: its
    //   passes are f32x4; a block whose pow product listed elements comes back uncombined, and
    //   is finished here as without it).
    const pow = mdPowOf(p0, p1);
    const fused = powFastExponents(p0, p1);
    const zero1 = +powZeroKills(p0, p1), zero2 = +powZeroKills(p1, p0);
    runAsm((kernels, [oa, ob, oc, or], len) => {
      const { k, wasmBlock } = kernels;
      for (let start = 0; start < len; start += MD_BLOCK) {
        const block = Math.min(MD_BLOCK, len - start), at = 4 * start;
        if (fused && wasmBlock) {
          const left = wasmBlock(oa! + at, ob! + at, oc! + at, or! + at, block, p0, p1, zero1, zero2, p2, p3);
          if (left === 0) continue;
          powListed(kernels, left, p0, p1);
        } else {
          k.mdAbs(oa! + at, ob! + at, oc! + at, block);
          pow(kernels, block);
        }
        k.mdCombine(oa! + at, ob! + at, oc! + at, or! + at, block, p2, p3);
      }
      return 0;
    }, r, [a!, b!, c!], n);
  },
  "similarity-add-difference": (r, [a, b, c], p, n) => {
    const p0 = f(p[0]!), p1 = f(p[1]!), p2 = f(p[2]!), p3 = f(p[3]!);
    for (let i = 0; i < n; i++) {
      const ai = a![i]!, bi = b![i]!;
      const prod = f(ai * bi);
      const aa = absf(ai), bb = absf(bi);
      const th = aa > bb ? aa : bb;
      const th2 = f(th * th);
      let q = f(prod / th2);
      q = f(q + 1);
      q = f(q / 2);
      let s = f(q * p1);
      if (Number.isNaN(s)) s = p1;
      const diff = f(ai + f(p0 * f(bi - c![i]!)));
      const sum = f(f(p2 * ai) + f(p3 * bi));
      r[i] = f(f(f(1 - s) * diff) + f(s * sum));
    }
  },
  clamp: (r, [v, a, b], _p, n) => {
    for (let i = 0; i < n; i++) r[i] = minf(maxf(v![i]!, minf(a![i]!, b![i]!)), maxf(a![i]!, b![i]!));
  },
};
