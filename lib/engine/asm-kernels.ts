/**
 * Kernels of the TS engine written in the asm.js subset of JavaScript, and the heaps they run on.
 *
 * Why: V8's optimizing compiler has no fp32 arithmetic for ordinary JavaScript. Every
 * Math.fround costs two conversions (double -> float -> double) and every Float32Array access a
 * map, length and bounds check, so train difference's nine fp32 operations took ~16 conversions
 * and ~4 ns per element, bound by the conversion throughput (RESULTS "TS engine speed, fourth
 * pass"). Code that validates as asm.js ("use asm") is compiled by V8 as WebAssembly: `fround`
 * coercions become real fp32 operations (IEEE 754 binary32, round to nearest even, subnormals
 * kept: the same bits as the C++ kernels' scalar fp32 operations) and heap accesses need no
 * per-element checks. Where asm.js does not validate or link, the same function runs as plain
 * JavaScript with the same results (asm.js's semantics are JavaScript's), only slower.
 *
 * A module instance is bound to one heap: the memory of a WebAssembly.Memory (page-aligned, so
 * the O_DIRECT writer can take it, js-direct.ts) whose size asm.js accepts (a multiple of
 * 16 MiB). The chunk loop keeps each thread's chunk buffers in such heaps (js-chunks.ts), so
 * the kernels run where the inputs were read; operands anywhere else go through a scratch heap.
 */
import { f16NarrowTables } from "./conversions";
import { powHeapTables } from "./det-math";
import { PAGE, memoryOf, pageAlignedBuffer } from "./js-direct";
import { MD_WASM_GROUP, mdPowWasm, type MdBlock, type MdPow } from "./wasm/md-pow";
import { narrowF16Wasm, type NarrowF16 } from "./wasm/narrow-f16";

/** asm.js heap sizes are multiples of this (V8: a power of two below 16 MiB, else multiples). */
export const ASM_HEAP_UNIT = 1 << 24;

/** The asm.js module: every offset is a byte offset into `heap`, every count in elements. */
function kernelModule(stdlib: typeof globalThis, _foreign: unknown, heap: ArrayBuffer) {
  "use asm";
  var fround = stdlib.Math.fround;
  var abs = stdlib.Math.abs;
  var floor = stdlib.Math.floor;
  var F32 = new stdlib.Float32Array(heap);
  var F64 = new stdlib.Float64Array(heap);
  var I32 = new stdlib.Int32Array(heap);
  var U16 = new stdlib.Uint16Array(heap);

  /**
   * out = train difference of (a, b, c) with multiplier p0, statement for statement as
   * method-kernels.ts's branch-free loop (its comment says why it equals native but where the
   * result is NaN); returns 1 when some result is NaN (the caller recomputes those exactly).
   */
  function trainDifference(a: number, b: number, c: number, out: number, n: number, p0: number): number {
    a = a | 0; b = b | 0; c = c | 0; out = out | 0; n = n | 0; p0 = fround(p0);
    var i = 0, end = 0, ai = fround(0), bi = fround(0), t0 = fround(0), d1 = fround(0), s = fround(0), q = fround(0), r = fround(0), bad = 0;
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      ai = fround(F32[(a + i) >> 2]);
      bi = fround(F32[(b + i) >> 2]);
      t0 = fround(bi - fround(F32[(c + i) >> 2]));
      d1 = fround(abs(fround(bi - ai)));
      s = fround(fround(abs(t0)) + d1);
      q = fround(d1 / s);
      r = fround(ai + fround(fround(q * t0) * p0));
      F32[(out + i) >> 2] = r;
      bad = bad | ((r != r) as unknown as number);
    }
    return bad | 0;
  }

  /**
   * fp32 bits at `src` -> fp16 bits at `dst`, n elements, as conversions.ts narrowF16 (its
   * comments explain both paths); the tables of the rare path sit at the heap's start
   * (HEAP_TABLES), and the NaNs and infinities among the results are stored at COUNTS.
   */
  function narrowF16(src: number, dst: number, n: number): void {
    src = src | 0; dst = dst | 0; n = n | 0;
    var i = 0, word = 0, a = 0, se = 0, man = 0, m = 0, s = 0, h = 0, ha = 0, nan = 0, inf = 0;
    for (i = 0; (i | 0) < (n | 0); i = (i + 1) | 0) {
      word = I32[(src + (i << 2)) >> 2] | 0;
      a = word & 0x7fffffff;
      if (((a - 0x38800000) >>> 0) < 0x0effe000) {
        // 2^-14 <= |x| < 65520, the common case: rebias the exponent (−112 << 23) and round the
        // 13 dropped bits to nearest even in one add (0xfff + the kept lsb); a carry moves into
        // the exponent, as the tables do (never into Inf: 65520, half-way above 65504, is the
        // first value that rounds to it). These results are finite: nothing to count.
        U16[(dst + (i << 1)) >> 1] = ((word >> 16) & 0x8000) | ((a - 0x37fff001 + ((a >> 13) & 1)) >> 13);
        continue;
      }
      // the table method (conversions.ts, top comment): Inf and NaN by a branch, the rest by
      // base + rne(mantissa | implicit bit, shift) for its sign and exponent
      se = (word >>> 23) | 0;
      if ((se & 0xff) == 0xff) {
        man = word & 0x7fffff;
        h = ((word >>> 16) & 0x8000) | ((man | 0) != 0 ? 0x7e00 | (man >>> 13) : 0x7c00);
      } else {
        m = (word & 0x7fffff) | 0x800000;
        s = I32[(2048 + (se << 2)) >> 2] | 0;
        h = ((I32[(se << 2) >> 2] | 0) + ((m + (I32[(4096 + (se << 2)) >> 2] | 0) + ((m >>> s) & 1)) >>> s)) | 0;
      }
      U16[(dst + (i << 1)) >> 1] = h;
      ha = h & 0x7fff;
      if ((ha | 0) > 0x7c00) nan = (nan + 1) | 0;
      else if ((ha | 0) == 0x7c00) inf = (inf + 1) | 0;
    }
    I32[1536] = nan;
    I32[1537] = inf;
  }

  /**
   * fp16 bits at `src` -> fp32 bits at `dst`, n elements: dtypes.f16BitsToF32Bits for every
   * code. A normal value (exponent field 1..30) is rebiased in one add (112 << 10) and shifted;
   * zeros, subnormals (m·2^−24, exact in fp32, then the sign), infinities and NaNs (payload
   * shifted, quiet bit kept) by branches a model's weights seldom take.
   */
  function widenF16(src: number, dst: number, n: number): void {
    src = src | 0; dst = dst | 0; n = n | 0;
    var i = 0, h = 0, e = 0, m = 0, sign = 0, at = 0;
    for (i = 0; (i | 0) < (n | 0); i = (i + 1) | 0) {
      h = U16[(src + (i << 1)) >> 1] | 0;
      e = h & 0x7c00;
      at = (dst + (i << 2)) | 0;
      if (((e - 0x400) >>> 0) < 0x7800) {
        I32[at >> 2] = ((h & 0x8000) << 16) | (((h & 0x7fff) + 0x1c000) << 13);
        continue;
      }
      sign = (h & 0x8000) << 16;
      m = h & 0x3ff;
      if ((e | 0) == 0x7c00) I32[at >> 2] = sign | 0x7f800000 | (m << 13);
      else if ((m | 0) == 0) I32[at >> 2] = sign;
      else {
        F32[at >> 2] = fround(fround(m | 0) * fround(5.9604644775390625e-8));
        I32[at >> 2] = I32[at >> 2] | sign;
      }
    }
  }

  /**
   * Multiply difference's first pass over a block of n <= MD_BLOCK elements: |A − C| and
   * |B − C| into the heap's two scratch blocks (MD_SCRATCH), for the pow product.
   */
  function mdAbs(a: number, b: number, c: number, n: number): void {
    a = a | 0; b = b | 0; c = c | 0; n = n | 0;
    var i = 0, end = 0, ci = fround(0);
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      ci = fround(F32[(c + i) >> 2]);
      F32[(8192 + i) >> 2] = fround(abs(fround(fround(F32[(a + i) >> 2]) - ci)));
      F32[(16384 + i) >> 2] = fround(abs(fround(fround(F32[(b + i) >> 2]) - ci)));
    }
  }

  /**
   * Its last pass: out = C + m, or C − m where w = A·p2 + B·p3 < C, for m the pow product the
   * first scratch block holds (method-kernels.ts says why these are native's operations).
   */
  function mdCombine(a: number, b: number, c: number, out: number, n: number, p2: number, p3: number): void {
    a = a | 0; b = b | 0; c = c | 0; out = out | 0; n = n | 0; p2 = fround(p2); p3 = fround(p3);
    var i = 0, end = 0, ci = fround(0), w = fround(0);
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      ci = fround(F32[(c + i) >> 2]);
      w = fround(fround(fround(F32[(a + i) >> 2]) * p2) + fround(fround(F32[(b + i) >> 2]) * p3));
      F32[(out + i) >> 2] = fround(ci + fround(fround(F32[(8192 + i) >> 2]) * fround((1 - (((w < ci) as unknown as number) << 1)) | 0)));
    }
  }

  /**
   * Multiply difference's pow product over the two scratch blocks, in place in the first:
   * det-math.ts powProductF32Array's fast path, operation for operation (the same doubles in the
   * same order; its comments say why they equal native's merge_pow_product), for exponents
   * y1, y2 with pow_in_range (the caller checks; else it runs powProductF32Array). Its tables
   * are in the heap (POW_TABLES: the log and exp coefficients, then LOG_SCALE, LOG_HI and
   * EXP_SCALE as doubles). Elements with both operands normal, positive, finite and not 1 are
   * computed here, one per step (two per step, as powProductF32Array does, ran slower here:
   * V8's wasm code spilled to the stack); zero1 / zero2 (zero_kills) make an exact-zero first / second operand give +0 where the other
   * is finite, as native skips A = C; the indices of the rest are listed at MD_LIST, for the
   * caller to compute with powProductF32. Returns their count.
   */
  function mdPow(n: number, y1: number, y2: number, zero1: number, zero2: number): number {
    n = n | 0; y1 = +y1; y2 = +y2; zero1 = zero1 | 0; zero2 = zero2 | 0;
    var i = 0, end = 0, left = 0, u = 0, v = 0, s1 = 0, s2 = 0;
    var lp0 = 0.0, lp1 = 0.0, lp2 = 0.0, lp3 = 0.0, lp4 = 0.0, ep0 = 0.0, ep1 = 0.0, ep2 = 0.0, ep3 = 0.0, ep4 = 0.0;
    var r1 = 0.0, r2 = 0.0, p1 = 0.0, p2 = 0.0, t = 0.0, k = 0.0, fr = 0.0, w = 0.0;
    lp0 = +F64[4096]; lp1 = +F64[4097]; lp2 = +F64[4098]; lp3 = +F64[4099]; lp4 = +F64[4100];
    ep0 = +F64[4101]; ep1 = +F64[4102]; ep2 = +F64[4103]; ep3 = +F64[4104]; ep4 = +F64[4105];
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      u = I32[(8192 + i) >> 2] | 0; v = I32[(16384 + i) >> 2] | 0;
      // both operands' bits in [2^23, 0x7f800000) and not 1.0's: `|`, one branch for the four tests
      if ((((((u - 0x00800000) >>> 0) >= 0x7f000000) as unknown as number) | (((u | 0) == 0x3f800000) as unknown as number) | ((((v - 0x00800000) >>> 0) >= 0x7f000000) as unknown as number) | (((v | 0) == 0x3f800000) as unknown as number)) != 0) {
        left = mdPowOne(i, left, zero1, zero2) | 0;
        continue;
      }
      s1 = u >> 19; s2 = v >> 19;
      r1 = +F32[(8192 + i) >> 2] * +F64[(32896 + (s1 << 3)) >> 3] - 1.0;
      r2 = +F32[(16384 + i) >> 2] * +F64[(32896 + (s2 << 3)) >> 3] - 1.0;
      p1 = lp4 * r1; p2 = lp4 * r2;
      p1 = p1 + lp3; p2 = p2 + lp3;
      p1 = p1 * r1; p2 = p2 * r2;
      p1 = p1 + lp2; p2 = p2 + lp2;
      p1 = p1 * r1; p2 = p2 * r2;
      p1 = p1 + lp1; p2 = p2 + lp1;
      p1 = p1 * r1; p2 = p2 * r2;
      p1 = p1 + lp0; p2 = p2 + lp0;
      t = y1 * (+F64[(65664 + (s1 << 3)) >> 3] + p1 * r1) + y2 * (+F64[(65664 + (s2 << 3)) >> 3] + p2 * r2);
      k = +floor(t * 16.0 + 0.5);
      fr = t - k * 0.0625;
      w = ep4 * fr; w = w + ep3;
      w = w * fr; w = w + ep2;
      w = w * fr; w = w + ep1;
      w = w * fr; w = w + ep0;
      // the fp32 store: the one rounding (EXP_SCALE index k − EXP_K_MIN, EXP_K_MIN = −2560)
      F32[(8192 + i) >> 2] = w * +F64[(98432 + ((((~~k) + 2560) | 0) << 3)) >> 3];
    }
    return left | 0;
  }

  /**
   * mdPow's element at byte offset i of the scratch blocks with a special operand: +0 where
   * zero1 / zero2 say so, else its index appended to MD_LIST. Returns the new count listed.
   */
  function mdPowOne(i: number, left: number, zero1: number, zero2: number): number {
    i = i | 0; left = left | 0; zero1 = zero1 | 0; zero2 = zero2 | 0;
    var u = 0, v = 0;
    u = I32[(8192 + i) >> 2] | 0; v = I32[(16384 + i) >> 2] | 0;
    if ((zero1 & (((u | 0) == 0) as unknown as number) & (((v >>> 0) < 0x7f800000) as unknown as number) | zero2 & (((v | 0) == 0) as unknown as number) & (((u >>> 0) < 0x7f800000) as unknown as number)) != 0) {
      F32[(8192 + i) >> 2] = fround(0);
      return left | 0;
    }
    I32[(24576 + (left << 2)) >> 2] = i >> 2;
    return (left + 1) | 0;
  }

  return { trainDifference: trainDifference, narrowF16: narrowF16, widenF16: widenF16, mdAbs: mdAbs, mdPow: mdPow, mdCombine: mdCombine };
}

/**
 * A module instance and the counts words of its heap (see HEAP_RESERVED); wasmPow: mdPow's
 * SIMD128 WebAssembly form (wasm/md-pow.ts, the same bits), and wasmBlock: mdAbs, it and
 * mdCombine in one call (wasm/md-block.ts), and wasmNarrowF16: narrowF16 in SIMD128
 * (wasm/narrow-f16.ts, the same bits and counts), bound to the same heap, where the platform
 * has them and TENSORMERGE_TS_WASM is not 0.
 */
export interface Kernels {
  k: ReturnType<typeof kernelModule>; counts: Int32Array;
  wasmPow: MdPow | undefined; wasmBlock: MdBlock | undefined; wasmNarrowF16: NarrowF16 | undefined;
}

/**
 * The first bytes of every heap hold narrowF16's tables (Int32 base, shift and bias per sign
 * and exponent, at bytes 0, 2048 and 4096; conversions.ts f16NarrowTables), its two counts
 * (bytes 6144 and 6148, Int32 words 1536 and 1537), multiply difference's two scratch
 * blocks of MD_BLOCK fp32 (MD_SCRATCH, MD_SCRATCH + 4 · MD_BLOCK), mdPow's list (MD_LIST) and
 * its tables (POW_TABLES); buffers start at HEAP_RESERVED.
 */
export const MD_SCRATCH = 8192;
export const MD_BLOCK = 2048;
/** mdPow's list of the elements it left to the caller: MD_BLOCK Int32 indices. */
export const MD_LIST = MD_SCRATCH + 8 * MD_BLOCK;
/**
 * The pow product's tables (det-math.ts powHeapTables), as doubles: the five log and five exp
 * coefficients (16 slots), then LOG_SCALE and LOG_HI (4096 each) and EXP_SCALE (4625).
 */
export const POW_TABLES = MD_LIST + 4 * MD_BLOCK;
const POW_LOG_SCALE = POW_TABLES + 8 * 16, POW_LOG_HI = POW_LOG_SCALE + 8 * 4096, POW_EXP_SCALE = POW_LOG_HI + 8 * 4096;
/** Where buffers start: after the pow tables, rounded up to a page (the O_DIRECT writer takes them). */
export const HEAP_RESERVED = Math.ceil((POW_EXP_SCALE + 8 * 4625) / 4096) * 4096;

const instances = new WeakMap<ArrayBufferLike, Kernels>();

/**
 * A page-aligned heap of at least `bytes` bytes (rounded up to ASM_HEAP_UNIT) with the kernels
 * bound to it; its memory also serves the O_DIRECT writer.
 */
export function asmHeap(bytes: number): ArrayBuffer {
  const size = Math.max(1, Math.ceil(bytes / ASM_HEAP_UNIT)) * ASM_HEAP_UNIT;
  const heap = pageAlignedBuffer(size - PAGE); // pageAlignedBuffer adds a page of room
  const { base, shift, bias } = f16NarrowTables();
  const words = new Int32Array(heap, 0, 1536);
  words.set(base, 0);
  words.set(shift, 512);
  words.set(bias, 1024);
  // mdPow's literal offsets (asm.js takes no constants from outside the module) are these
  const pow = powHeapTables();
  if (MD_LIST !== 24576 || POW_TABLES !== 32768 || POW_LOG_SCALE !== 32896 || POW_LOG_HI !== 65664 || POW_EXP_SCALE !== 98432 || pow.expScale.length !== 4625) throw new Error("asm heap layout");
  const doubles = new Float64Array(heap, POW_TABLES, (POW_EXP_SCALE - POW_TABLES) / 8 + pow.expScale.length);
  doubles.set(pow.logp, 0);
  doubles.set(pow.expp, 5);
  doubles.set(pow.logScale, (POW_LOG_SCALE - POW_TABLES) / 8);
  doubles.set(pow.logHi, (POW_LOG_HI - POW_TABLES) / 8);
  doubles.set(pow.expScale, (POW_EXP_SCALE - POW_TABLES) / 8);
  const layout = { x1: MD_SCRATCH, x2: MD_SCRATCH + 4 * MD_BLOCK, list: MD_LIST, logScale: POW_LOG_SCALE, logHi: POW_LOG_HI, expScale: POW_EXP_SCALE };
  if (MD_BLOCK % MD_WASM_GROUP !== 0) throw new Error("md block");
  const wasm = mdPowWasm(memoryOf(heap)!, layout, pow);
  instances.set(heap, {
    k: kernelModule(globalThis, undefined, heap), counts: new Int32Array(heap, 6144, 2), wasmPow: wasm?.pow, wasmBlock: wasm?.block, wasmNarrowF16: narrowF16Wasm(memoryOf(heap)!),
  });
  return heap;
}

/** The kernels bound to `heap`, if it is an asm heap (asmHeap). */
export function kernelsOf(heap: ArrayBufferLike): Kernels | undefined {
  return instances.get(heap);
}

/** The kernels bound to the heap all of `arrays` are views of, if they share one. */
function kernelsFor(arrays: ArrayBufferView[]): Kernels | undefined {
  const buffer = arrays[0]!.buffer;
  for (const a of arrays) if (a.buffer !== buffer) return undefined;
  return instances.get(buffer);
}

type View = Float32Array | Int32Array | Uint32Array | Uint16Array;
/** Elements per pass through the scratch heap: four operands of up to 4 bytes each fit one unit. */
const SCRATCH_ELEMENTS = (ASM_HEAP_UNIT - HEAP_RESERVED) / 16;
let scratch: ArrayBuffer | undefined;

/**
 * Runs `kernel(kernels, [byte offsets of args..., of out], count)` on n elements: in place
 * when `out` and `args` are views of one asm heap, else through a scratch heap, block by block.
 * Returns the OR of the kernel's results.
 */
export function runAsm<T extends View>(kernel: (k: Kernels, offsets: number[], n: number) => number, out: T, args: View[], n: number): number {
  const direct = kernelsFor([out, ...args]);
  if (direct) return kernel(direct, [...args.map((a) => a.byteOffset), out.byteOffset], n);
  const heap = (scratch ??= asmHeap(ASM_HEAP_UNIT));
  const k = instances.get(heap)!;
  const offsets = [...args.keys(), args.length].map((j) => HEAP_RESERVED + j * SCRATCH_ELEMENTS * 4);
  const view = <V extends View>(like: V, j: number, len: number): V =>
    new (like.constructor as new (b: ArrayBuffer, o: number, l: number) => V)(heap, offsets[j]!, len);
  let result = 0;
  for (let start = 0; start < n; start += SCRATCH_ELEMENTS) {
    const len = Math.min(SCRATCH_ELEMENTS, n - start);
    args.forEach((a, j) => view(a, j, len).set(a.subarray(start, start + len) as never));
    result |= kernel(k, offsets, len);
    out.set(view(out, args.length, len) as never, start);
  }
  return result;
}
