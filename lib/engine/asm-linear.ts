/**
 * The TS engine's linear kernels (weighted sum, add difference, lerp) in asm.js, on the chunk
 * buffers' asm heaps (asm-kernels.ts says why: real fp32 operations, no per-element checks).
 * Each is js-chunks.ts runKernel's JavaScript loop operation for operation: a product or a
 * difference of two fp32 values rounded once to fp32 (Math.fround of the exact double result)
 * is the fp32 operation's result, so both ways give the same bits, as native's scalar kernels
 * do. A module of its own (bound to the same heaps), so asm-kernels.ts's module stays as it is.
 */
import { kernelsOf } from "./asm-kernels";

function linearModule(stdlib: typeof globalThis, _foreign: unknown, heap: ArrayBuffer) {
  "use asm";
  var fround = stdlib.Math.fround;
  var F32 = new stdlib.Float32Array(heap);

  /** out = a·p0 + b·p1 (byte offsets, n elements). */
  function weightedSum(a: number, b: number, out: number, n: number, p0: number, p1: number): void {
    a = a | 0; b = b | 0; out = out | 0; n = n | 0; p0 = fround(p0); p1 = fround(p1);
    var i = 0, end = 0;
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      F32[(out + i) >> 2] = fround(fround(fround(F32[(a + i) >> 2]) * p0) + fround(fround(F32[(b + i) >> 2]) * p1));
    }
  }

  /** out = a + (b − c)·p0. */
  function addDifference(a: number, b: number, c: number, out: number, n: number, p0: number): void {
    a = a | 0; b = b | 0; c = c | 0; out = out | 0; n = n | 0; p0 = fround(p0);
    var i = 0, end = 0;
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      F32[(out + i) >> 2] = fround(fround(F32[(a + i) >> 2]) + fround(fround(fround(F32[(b + i) >> 2]) - fround(F32[(c + i) >> 2])) * p0));
    }
  }

  /** out = a + (b − a)·p0. */
  function lerp(a: number, b: number, out: number, n: number, p0: number): void {
    a = a | 0; b = b | 0; out = out | 0; n = n | 0; p0 = fround(p0);
    var i = 0, end = 0, ai = fround(0);
    end = n << 2;
    for (i = 0; (i | 0) < (end | 0); i = (i + 4) | 0) {
      ai = fround(F32[(a + i) >> 2]);
      F32[(out + i) >> 2] = fround(ai + fround(fround(fround(F32[(b + i) >> 2]) - ai) * p0));
    }
  }

  return { weightedSum: weightedSum, addDifference: addDifference, lerp: lerp };
}

export type LinearKernels = ReturnType<typeof linearModule>;

const instances = new WeakMap<ArrayBufferLike, LinearKernels>();

/**
 * The linear kernels bound to the asm heap `out` and every one of `args` are views of (and on
 * 4-byte boundaries of), or undefined where they are not all in one asm heap (the caller then
 * runs its JavaScript loop).
 */
export function linearKernelsFor(out: Float32Array, args: Float32Array[]): LinearKernels | undefined {
  const buffer = out.buffer;
  for (const a of args) if (a.buffer !== buffer) return undefined;
  if (!kernelsOf(buffer)) return undefined;
  let k = instances.get(buffer);
  if (!k) {
    k = linearModule(globalThis, undefined, buffer as ArrayBuffer);
    instances.set(buffer, k);
  }
  return k;
}
