/**
 * The TS engine's WebAssembly SIMD128 kernels beside their asm.js forms, against values
 * computed here element by element:
 *
 * - wasm/narrow-f16.ts: fp32 words -> fp16 codes and the NaN / Inf counts, against lib/dtypes.ts
 *   f32BitsToF16 (itself checked against @petamoriken/float16) and counts of those codes, over
 *   weight-like runs (the 8-wide integer path) with zeros, tiny values, overflow, Inf and NaN
 *   sprinkled in (the scalar path per step), at every offset modulo 16 bytes and lengths around
 *   the step; nothing past n is written;
 * - wasm/md-block.ts through method-kernels.ts's multiply-difference: the formula written out
 *   per element (C + (A·p2 + B·p3 < C ? −m : m), m = powProductF32(|A − C|, p0, |B − C|, p1)), for
 *   blocks the fused call finishes and blocks it hands back (special operands), unaligned,
 *   lengths around the f32x4 lanes and the block, with the WebAssembly kernels and with
 *   TENSORMERGE_TS_WASM=0.
 */
import { strict as assert } from "node:assert";
import { ASM_HEAP_UNIT, HEAP_RESERVED, MD_BLOCK, asmHeap, kernelsOf } from "../../lib/engine/asm-kernels";
import { narrowF16 } from "../../lib/engine/conversions";
import { powProductF32 } from "../../lib/engine/det-math";
import { METHOD_KERNELS } from "../../lib/engine/method-kernels";
import { f32BitsToF16 } from "../../lib/dtypes";
import { setEngineKnobs } from "../helpers/engines";
import { rng, valueOf } from "../native/helpers";

const f = Math.fround;
const LENGTHS = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, MD_BLOCK - 1, MD_BLOCK, MD_BLOCK + 1, 3 * MD_BLOCK + 5, 100_003];

/** A heap made with TENSORMERGE_TS_WASM set to `knob` (the kernels are chosen when a heap is made). */
function heapWith(knob: string | undefined, bytes: number): ArrayBuffer {
  const restore = setEngineKnobs({ TENSORMERGE_TS_WASM: knob });
  try {
    return asmHeap(bytes);
  } finally {
    restore();
  }
}

describe("the TS engine's WebAssembly SIMD kernels (wasm/md-block.ts, wasm/narrow-f16.ts)", function () {
  this.timeout(600_000);
  const heaps = { wasm: heapWith(undefined, 4 * ASM_HEAP_UNIT), asm: heapWith("0", 4 * ASM_HEAP_UNIT) };

  it("are bound where WebAssembly has SIMD128, and not with TENSORMERGE_TS_WASM=0", () => {
    const on = kernelsOf(heaps.wasm)!, off = kernelsOf(heaps.asm)!;
    assert.ok(on.wasmBlock && on.wasmNarrowF16 && on.wasmPow, "this Node has WebAssembly SIMD128: the kernels must be there");
    assert.ok(!off.wasmBlock && !off.wasmNarrowF16 && !off.wasmPow);
  });

  it("narrow fp32 to fp16 as f32BitsToF16 does, counting NaN and Inf codes, at every offset and length", () => {
    const next = rng(77);
    const total = 200_000;
    const words = new Uint32Array(total), values = new Float32Array(words.buffer);
    const odd = [0, 0x80000000, 1, 0x387fffff, 0x38800000, 0xb8800000, 0x477fefff, 0x477ff000, 0x477fffff, 0x7f800000, 0xff800000, 0x7fc00001, 0xffa00000, 0x7f7fffff, 0x33000000, 0x33000001];
    for (let i = 0; i < total; i++) {
      values[i] = f((next() - 0.5) * 0.1); // weights: the integer path (but for the few below 2^-14)
      if (i >= 150_000) words[i] = Math.floor(next() * 2 ** 32); // any word
      else if (next() < 0.01) words[i] = odd[Math.floor(next() * odd.length)]!;
    }
    const expected = Uint16Array.from(words, (w) => f32BitsToF16(w));
    for (const [label, heap] of Object.entries(heaps)) {
      for (let shift = 0; shift < 4; shift++) for (const n of [...LENGTHS, total - shift - 8]) {
        const src = new Uint32Array(heap, HEAP_RESERVED + 4 * shift, n + 8), dst = new Uint16Array(heap, HEAP_RESERVED + 4 * total + 64 + 2 * shift, n + 8);
        const from = (n * 7) % (total - n - shift); // a different stretch per length
        src.set(words.subarray(from, from + n + 8));
        dst.fill(0x1234);
        const count = { nan: 0, inf: 0 };
        narrowF16(src.subarray(0, n), dst.subarray(0, n), n, count);
        let nan = 0, inf = 0;
        for (let i = 0; i < n; i++) {
          const want = expected[from + i]!;
          if (dst[i] !== want) assert.fail(`${label}, shift ${shift}, n ${n}: 0x${src[i]!.toString(16)} -> 0x${dst[i]!.toString(16)}, expected 0x${want.toString(16)}`);
          if ((want & 0x7fff) > 0x7c00) nan++;
          else if ((want & 0x7fff) === 0x7c00) inf++;
        }
        for (let i = n; i < n + 8; i++) assert.equal(dst[i], 0x1234, `${label}: wrote past n = ${n}`);
        assert.deepEqual(count, { nan, inf }, `${label}, shift ${shift}, n ${n}: counts`);
      }
    }
  });

  it("compute multiply-difference as the formula written out, fused blocks and blocks handed back, unaligned, every length", () => {
    const next = rng(2031);
    const total = 400_000;
    const A = new Float32Array(total), B = new Float32Array(total), C = new Float32Array(total);
    const edge = [0, -0, 1, -1, Infinity, -Infinity, NaN, valueOf(0xffc00001), valueOf(0x00000001), valueOf(0x80000003), valueOf(0x7f7fffff)];
    for (let i = 0; i < total; i++) {
      C[i] = f((next() - 0.5) * 0.2);
      A[i] = f(C[i]! + (next() - 0.5) * 0.04);
      B[i] = f(C[i]! + (next() - 0.5) * 0.04);
      // the first half: weights only (and A = C, B = C, which the fused call finishes); then specials
      const r = next();
      if (r < 0.01) A[i] = C[i]!;
      else if (r < 0.02) B[i] = C[i]!;
      else if (i >= total / 2 && r < 0.025) [A, B, C][Math.floor(next() * 3)]![i] = edge[Math.floor(next() * edge.length)]!;
    }
    const params = [[0.7, 0.3, 0.5, 0.5], [0.25, 0.75, 0.9, 0.1], [0, 1, 0.5, 0.5], [1, 0, 0.2, 0.8], [1.5, -0.5, 0, 1]].map((p) => p.map(f));
    const reference = (a: number, b: number, c: number, [p0, p1, p2, p3]: number[]): number => {
      const m = powProductF32(Math.abs(f(a - c)), p0!, Math.abs(f(b - c)), p1!);
      const w = f(f(a * p2!) + f(b * p3!));
      return f(c + (w < c ? -m : m));
    };
    for (const [label, heap] of Object.entries(heaps)) {
      const region = (j: number, shift: number, n: number) => new Float32Array(heap, HEAP_RESERVED + j * (4 * total + 64) + 4 * shift, n + 4);
      for (const p of params) for (const shift of [0, 1, 3]) for (const n of [...LENGTHS, total / 2 - shift, total - shift - 4]) {
        const from = n >= total / 2 ? 0 : (n * 13) % (total - n - 4);
        const [a, b, c, out] = [0, 1, 2, 3].map((j) => region(j, shift, n));
        [A, B, C].forEach((x, j) => [a, b, c][j]!.set(x.subarray(from, from + n + 4)));
        out!.fill(12345);
        METHOD_KERNELS["multiply-difference"]!(out!.subarray(0, n), [a!.subarray(0, n), b!.subarray(0, n), c!.subarray(0, n)], p, n);
        for (let i = 0; i < n; i++) {
          const want = reference(a![i]!, b![i]!, c![i]!, p), got = out![i]!;
          if (Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want))) continue;
          assert.fail(`${label}, p ${p}, shift ${shift}, n ${n}: md(${a![i]}, ${b![i]}, ${c![i]}) at ${from + i}: ${got}, expected ${want}`);
        }
        for (let i = n; i < n + 4; i++) assert.equal(out![i], 12345, `${label}: wrote past n = ${n}`);
      }
    }
  });
});
