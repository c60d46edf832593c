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
import { PAGE, pageAlignedBuffer } from "./js-direct";

/** asm.js heap sizes are multiples of this (V8: a power of two below 16 MiB, else multiples). */
export const ASM_HEAP_UNIT = 1 << 24;

/** The asm.js module: every offset is a byte offset into `heap`, every count in elements. */
function kernelModule(stdlib: typeof globalThis, _foreign: unknown, heap: ArrayBuffer) {
  "use asm";
  var fround = stdlib.Math.fround;
  var abs = stdlib.Math.abs;
  var F32 = new stdlib.Float32Array(heap);

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

  return { trainDifference: trainDifference };
}

type Kernels = ReturnType<typeof kernelModule>;

const instances = new WeakMap<ArrayBufferLike, Kernels>();

/**
 * A page-aligned heap of at least `bytes` bytes (rounded up to ASM_HEAP_UNIT) with the kernels
 * bound to it; its memory also serves the O_DIRECT writer.
 */
export function asmHeap(bytes: number): ArrayBuffer {
  const size = Math.max(1, Math.ceil(bytes / ASM_HEAP_UNIT)) * ASM_HEAP_UNIT;
  const heap = pageAlignedBuffer(size - PAGE); // pageAlignedBuffer adds a page of room
  instances.set(heap, kernelModule(globalThis, undefined, heap));
  return heap;
}

/** The kernels bound to the heap all of `arrays` are views of, if they share one. */
function kernelsFor(arrays: Float32Array[]): Kernels | undefined {
  const buffer = arrays[0]!.buffer;
  for (const a of arrays) if (a.buffer !== buffer) return undefined;
  return instances.get(buffer);
}

/** Elements per pass through the scratch heap: four operands of this many fp32 fit one unit. */
const SCRATCH_ELEMENTS = ASM_HEAP_UNIT / 16;
let scratch: { heap: ArrayBuffer; f32: Float32Array } | undefined;

/**
 * Runs `kernel(offsets of args..., offset of out, count)` on n elements: in place when `out`
 * and `args` are views of one asm heap, else through the scratch heap block by block.
 * Returns the OR of the kernel's results.
 */
export function runAsm(kernel: (k: Kernels, offsets: number[], n: number) => number, out: Float32Array, args: Float32Array[], n: number): number {
  const direct = kernelsFor([out, ...args]);
  if (direct) return kernel(direct, [...args.map((a) => a.byteOffset), out.byteOffset], n);
  if (!scratch) {
    const heap = asmHeap(ASM_HEAP_UNIT);
    scratch = { heap, f32: new Float32Array(heap) };
  }
  const k = instances.get(scratch.heap)!, f32 = scratch.f32;
  const offsets = [...args.keys(), args.length].map((j) => j * SCRATCH_ELEMENTS * 4);
  let result = 0;
  for (let start = 0; start < n; start += SCRATCH_ELEMENTS) {
    const len = Math.min(SCRATCH_ELEMENTS, n - start);
    args.forEach((a, j) => f32.set(a.subarray(start, start + len), j * SCRATCH_ELEMENTS));
    result |= kernel(k, offsets, len);
    out.set(f32.subarray(args.length * SCRATCH_ELEMENTS, args.length * SCRATCH_ELEMENTS + len), start);
  }
  return result;
}
