/**
 * The TS engine's fast paths against the slow ways they replace:
 * - the asm.js linear kernels (asm-linear.ts: weighted sum, add difference, lerp) against
 *   their formulas written out here with Math.fround, over edge triples and random values;
 * - train difference's branch-free loop (method-kernels.ts) against the formula written out
 *   here statement for statement as native/core/method_kernels.cc has it, over edge values
 *   (±0, ±Inf, NaNs of both signs with payloads, subnormals, equal operands);
 * - multiply difference's branch-free sign against the formula of method_kernels.cc with
 *   powProductF32 (the shared pow product, its own tests in js-pipeline.test.ts);
 * - the fp8 pair tables (js-chunks.ts: one op of two fp8 inputs rounded to fp8) against the
 *   native engine and against the formula with PyTorch's fp8 rounding from lib/dtypes, on a
 *   tensor holding every pair of codes and crossing a chunk boundary;
 * - O_DIRECT output writes (js-direct.ts) against buffered ones (TENSORMERGE_DIRECT_IO=0) and
 *   the native engine, for tensors whose bytes start at every offset modulo 4 and end
 *   mid-page, with 1 and 2 threads.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { f32BitsToF16, f32BitsToF8E4m3, f32BitsToF8E5m2, f8E4m3ToF32Bits, f8E5m2ToF32Bits } from "../../lib/dtypes";
import { HEAP_RESERVED, asmHeap } from "../../lib/engine/asm-kernels";
import { linearKernelsFor } from "../../lib/engine/asm-linear";
import { narrowF16 } from "../../lib/engine/conversions";
import { JS_CHUNK_ELEMENTS } from "../../lib/engine/js-chunks";
import { powProductF32 } from "../../lib/engine/det-math";
import { METHOD_KERNELS } from "../../lib/engine/method-kernels";
import { merge } from "../../lib/merge";
import { ENGINES, setEngineKnobs } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";

const f = Math.fround;

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
}

/** native/core/method_kernels.cc train_difference, one element (absf and negf keep a NaN's bits). */
function trainDifferenceFormula(a: number, b: number, c: number, p0: number): number {
  const absf = (x: number): number => (x < 0 ? -x : x === 0 ? 0 : x);
  const negf = (x: number): number => (x === x ? -x : x);
  const t0 = f(b - c);
  const d0 = absf(t0);
  const d1 = absf(f(b - a));
  const s = f(d0 + d1);
  const q = s !== 0 ? f(d1 / s) : 0;
  const sc = t0 > 0 ? q : t0 < 0 ? negf(q) : f(0 * q);
  const nd = f(sc * d0);
  const v = f(nd * p0);
  return f(a + v);
}

/** Whether element `i` of a tensor stored as `dtype` is a NaN. */
function isNaNAt(bytes: Uint8Array, dtype: string, i: number): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32": return Number.isNaN(view.getFloat32(4 * i, true));
    case "F16": return (view.getUint16(2 * i, true) & 0x7fff) > 0x7c00;
    case "F8_E4M3": return (bytes[i]! & 0x7f) === 0x7f;
    case "F8_E5M2": return (bytes[i]! & 0x7f) > 0x7c;
    default: throw new Error(dtype);
  }
}

/**
 * The same file but where an element is NaN in both: an operation on two NaNs returns one of
 * them, which one being up to the compiler or the JIT (see parity.test.ts).
 */
function assertSameButNaN(pathX: string, pathY: string, label: string): void {
  const x = readFileSync(pathX), y = readFileSync(pathY);
  assert.equal(x.length, y.length, label);
  if (x.equals(y)) return;
  const tx = readModel(pathX).tensors, ty = readModel(pathY).tensors;
  for (const [name, t] of tx) {
    const u = ty.get(name)!;
    const size = t.bytes.length / Math.max(1, t.shape.reduce((p, q) => p * q, 1));
    for (let i = 0; i * size < t.bytes.length; i++) {
      let same = true;
      for (let k = i * size; k < (i + 1) * size; k++) same &&= t.bytes[k] === u.bytes[k];
      if (!same && !(isNaNAt(t.bytes, t.dtype, i) && isNaNAt(u.bytes, u.dtype, i))) assert.fail(`${label}: ${name}[${i}] differs`);
    }
  }
  // the tensors agree: so must everything else (header, metadata)
  assert.equal(tx.size, ty.size, label);
}

/** native/core/method_kernels.cc multiply_difference, one element. */
function multiplyDifferenceFormula(a: number, b: number, c: number, p: number[]): number {
  const absf = (x: number): number => (x < 0 ? -x : x === 0 ? 0 : x);
  const negf = (x: number): number => (x === x ? -x : x);
  const da = absf(f(a - c)), db = absf(f(b - c));
  const m = powProductF32(da, p[0]!, db, p[1]!);
  const w = f(f(a * p[2]!) + f(b * p[3]!));
  const sg = f(w - c);
  return f(c + (sg < 0 ? negf(m) : m));
}

const bitsOf = (u: number): number => new Float32Array(new Uint32Array([u]).buffer)[0]!;
const EDGE_VALUES = [0, -0, 1, -1, 0.5, -2, Infinity, -Infinity, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, bitsOf(0x7fc00001), bitsOf(0xffc00000), bitsOf(0x7f800001)].map(f);

/** Every triple of edge values, then `count` random ones with ties (B = A, C = B, C = A). */
function edgeTriples(seed: number, count: number): [Float32Array, Float32Array, Float32Array] {
  const triples: number[][] = [];
  for (const a of EDGE_VALUES) for (const b of EDGE_VALUES) for (const c of EDGE_VALUES) triples.push([a, b, c]);
  const next = lcg(seed);
  const rand = (): number => f(((next() >>> 8) / 2 ** 24 - 0.5) * 2 ** ((next() % 60) - 40));
  for (let i = 0; i < count; i++) {
    const a = rand(), b = i % 7 === 0 ? a : rand(), c = i % 5 === 0 ? b : i % 11 === 0 ? a : rand();
    triples.push([a, b, c]);
  }
  const n = triples.length;
  return [0, 1, 2].map((k) => {
    const v = new Float32Array(n), w = new Uint32Array(v.buffer);
    // through the bits, so the NaN payloads reach the kernel as written
    triples.forEach((t, i) => { w[i] = new Uint32Array(new Float32Array([t[k]!]).buffer)[0]!; });
    return v;
  }) as [Float32Array, Float32Array, Float32Array];
}

describe("TS engine fast paths", function () {
  this.timeout(600_000);

  it("the asm.js linear kernels give their formulas' bits (edge triples, random values, several parameters)", () => {
    const [a, b, c] = edgeTriples(7, 200_000);
    const n = a.length;
    const heap = asmHeap(HEAP_RESERVED + 16 * n + 4096);
    const view = (j: number): Float32Array => new Float32Array(heap, HEAP_RESERVED + 4 * n * j, n);
    const [ha, hb, hc, out] = [view(0), view(1), view(2), view(3)];
    ha.set(a); hb.set(b); hc.set(c);
    const bits = new Uint32Array(heap, out.byteOffset, n);
    const expected = new Float32Array(1), expectedBits = new Uint32Array(expected.buffer);
    const isNaN32 = (x: number): boolean => x !== x;
    const formulas: [string, (x: number, y: number, z: number, p0: number, p1: number) => number, (p0: number, p1: number) => void][] = [
      ["weighted-sum", (x, y, _z, p0, p1) => f(f(x * p0) + f(y * p1)), (p0, p1) => k.weightedSum(ha.byteOffset, hb.byteOffset, out.byteOffset, n, p0, p1)],
      ["add-difference", (x, y, z, p0) => f(x + f(f(y - z) * p0)), (p0) => k.addDifference(ha.byteOffset, hb.byteOffset, hc.byteOffset, out.byteOffset, n, p0)],
      ["lerp", (x, y, _z, p0) => f(x + f(f(y - x) * p0)), (p0) => k.lerp(ha.byteOffset, hb.byteOffset, out.byteOffset, n, p0)],
    ];
    const k = linearKernelsFor(out, [ha, hb, hc])!;
    assert.ok(k, "the views of one asm heap get the kernels");
    assert.equal(linearKernelsFor(out, [new Float32Array(n)]), undefined, "operands outside the heap get none");
    for (const [name, formula, run] of formulas) {
      for (const [p0, p1] of [[0.3, 0.7], [f(1 / 3), f(2 / 3)], [1e-40, 1], [-1.5, 2.5e38]].map(([x, y]) => [f(x!), f(y!)])) {
        run(p0!, p1!);
        for (let i = 0; i < n; i++) {
          expected[0] = formula(a[i]!, b[i]!, c[i]!, p0!, p1!);
          if (bits[i] === expectedBits[0]) continue;
          // two NaN operands: which one an operation returns is up to the JIT (see assertSameButNaN)
          const nans = [a[i]!, b[i]!, c[i]!, p0!, p1!].filter(isNaN32).length;
          if (nans >= 2 && isNaN32(out[i]!) && isNaN32(expected[0]!)) continue;
          assert.fail(`${name} (${p0}, ${p1}) element ${i} (${a[i]}, ${b[i]}, ${c[i]}): 0x${bits[i]!.toString(16)}, expected 0x${expectedBits[0]!.toString(16)}`);
        }
      }
    }
  });

  it("multiply difference's branch-free sign gives the formula's bits (edge triples, random values with ties)", () => {
    const [a, b, c] = edgeTriples(21, 100_000);
    const n = a.length;
    for (const [alpha, beta] of [[0.3, 0.5], [1, 0], [0, 1], [-0.5, 2]]) {
      const p = [f(1 - alpha), f(alpha), f(1 - beta), f(beta)];
      const got = new Float32Array(n), gotBits = new Uint32Array(got.buffer);
      METHOD_KERNELS["multiply-difference"]!(got, [a, b, c], p, n);
      const want = new Float32Array(1), wantBits = new Uint32Array(want.buffer);
      for (let i = 0; i < n; i++) {
        want[0] = multiplyDifferenceFormula(a[i]!, b[i]!, c[i]!, p);
        const nanInputs = [a[i]!, b[i]!, c[i]!].filter((x) => x !== x).length;
        const same = gotBits[i] === wantBits[0] || (nanInputs > 0 && Number.isNaN(got[i]!) && Number.isNaN(want[0]!));
        if (!same) assert.fail(`α ${alpha} β ${beta}: md(${a[i]}, ${b[i]}, ${c[i]}) = 0x${gotBits[i]!.toString(16)}, want 0x${wantBits[0]!.toString(16)}`);
      }
    }
  });

  it("train difference's branch-free loop gives the formula's bits (every triple of edge values, and random values with ties)", () => {
    const [a, b, c] = edgeTriples(9, 200_000);
    const n = a.length;
    // the asm kernel where the chunk loop runs it (operands in one asm heap) and through its scratch heap
    const heap = asmHeap(16 * n + HEAP_RESERVED);
    const inHeap = [a, b, c].map((x, k) => {
      const v = new Float32Array(heap, HEAP_RESERVED + 4 * n * k, n);
      new Uint32Array(v.buffer, v.byteOffset, n).set(new Uint32Array(x.buffer));
      return v;
    });
    for (const [p0, placed] of [1.8, -1.8, 0, 1e-30].map(f).flatMap((p) => [[p, false], [p, true]] as const)) {
      const got = placed ? new Float32Array(heap, HEAP_RESERVED + 12 * n, n) : new Float32Array(n);
      METHOD_KERNELS["train-difference"]!(got, placed ? inHeap : [a, b, c], [p0], n);
      const gotBits = new Uint32Array(got.buffer, got.byteOffset, n);
      const want = new Float32Array(1), wantBits = new Uint32Array(want.buffer);
      for (let i = 0; i < n; i++) {
        want[0] = trainDifferenceFormula(a[i]!, b[i]!, c[i]!, p0);
        const nanInputs = [a[i]!, b[i]!, c[i]!].filter((x) => x !== x).length;
        // an operation on two NaNs may return either one (JIT tier, operand order): only "a NaN" then
        const same = gotBits[i] === wantBits[0] || (nanInputs > 1 && Number.isNaN(got[i]!) && Number.isNaN(want[0]!));
        if (!same) assert.fail(`p0 ${p0}${placed ? " (in an asm heap)" : ""}: td(${a[i]}, ${b[i]}, ${c[i]}) = 0x${gotBits[i]!.toString(16)}, want 0x${wantBits[0]!.toString(16)}`);
      }
    }
  });

  it("fp32 -> fp16 narrowing (asm kernel) gives dtypes.f32BitsToF16's bits and counts, in an asm heap and through the scratch heap", () => {
    // every exponent and sign with edge and random mantissas (both paths, rounding ties, Inf/NaN)
    const words: number[] = [];
    const next = lcg(5);
    for (let se = 0; se < 512; se++) {
      for (const m of [0, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fffff, 0x7fe000, 0x7ff000]) words.push(((se << 23) | m) >>> 0);
      for (let k = 0; k < 64; k++) words.push(((se << 23) | (next() & 0x7fffff)) >>> 0);
    }
    const n = words.length;
    const heap = asmHeap(6 * n + HEAP_RESERVED);
    const placements = [
      { name: "in an asm heap", src: new Uint32Array(heap, HEAP_RESERVED, n), dst: new Uint16Array(heap, HEAP_RESERVED + 4 * n, n) },
      { name: "through the scratch heap", src: new Uint32Array(n), dst: new Uint16Array(n) },
    ];
    for (const { name, src, dst } of placements) {
      src.set(words);
      const count = { nan: 0, inf: 0 };
      narrowF16(src, dst, n, count);
      let nan = 0, inf = 0;
      for (let i = 0; i < n; i++) {
        const want = f32BitsToF16(words[i]!);
        if (dst[i] !== want) assert.fail(`${name}: 0x${words[i]!.toString(16)} gave 0x${dst[i]!.toString(16)}, want 0x${want.toString(16)}`);
        if ((want & 0x7fff) > 0x7c00) nan++;
        else if ((want & 0x7fff) === 0x7c00) inf++;
      }
      assert.deepEqual(count, { nan, inf }, name);
    }
  });

  describe("fp8 pair tables and O_DIRECT writes, merged end to end", () => {
    const dir = tempDir("tm-js-fast-");
    after(() => dir.cleanup());
    const CHUNK = JS_CHUNK_ELEMENTS;
    const N8 = CHUNK + 65536 + 3; // every pair of codes, then random ones; crosses a chunk boundary
    const paths = ["a", "b"].map((m) => join(dir.path, `${m}.safetensors`));
    before(() => {
      paths.forEach((path, m) => {
        const next = lcg(100 + m);
        // element i < 65536 holds the pair (i >> 8, i & 255): model a the high code, b the low one
        const codes = (i: number): number => (i < 65536 ? (m === 0 ? i >>> 8 : i & 255) : next() >>> 24);
        const tensors: Record<string, TestTensor> = {
          "model.diffusion_model.input_blocks.1.0.weight": { dtype: "F8_E4M3", shape: [N8], raw: Uint8Array.from({ length: N8 }, (_, i) => codes(i)) },
          "model.diffusion_model.input_blocks.2.0.weight": { dtype: "F8_E5M2", shape: [N8], raw: Uint8Array.from({ length: N8 }, (_, i) => codes(i)) },
        };
        // fp32 tensors whose output bytes start at every offset modulo 4 and end mid-page
        [1, 3, 2, 4097, 300_001, CHUNK + 2049].forEach((len, i) => {
          tensors[`model.diffusion_model.output_blocks.${i}.0.weight`] = { dtype: "F32", shape: [len], values: randomValues(len, 10 * m + i, true) };
        });
        tensors["model.diffusion_model.out.0.weight"] = { dtype: "F16", shape: [1], values: randomValues(1, 3 + m, true) };
        writeModel(path, tensors);
      });
    });

    /** Expected fp8 bits of (1 − M)·A + M·B, or A + (B − A)·w, as runKernel and torch compute them. */
    function expectedF8(dtype: "F8_E4M3" | "F8_E5M2", a: number, b: number, kernel: (x: number, y: number) => number): number {
      const widen = dtype === "F8_E4M3" ? f8E4m3ToF32Bits : f8E5m2ToF32Bits;
      const narrow = dtype === "F8_E4M3" ? f32BitsToF8E4m3 : f32BitsToF8E5m2;
      const value = (code: number): number => new Float32Array(new Uint32Array([widen(code)]).buffer)[0]!;
      const r = new Float32Array([kernel(value(a), value(b))]);
      return narrow(new Uint32Array(r.buffer)[0]!);
    }

    it("weighted sum and sigmoid of fp8 e4m3 / e5m2 tensors kept in fp8: the table gives the formula's codes and the native engine's bytes", async () => {
      for (const method of ["weighted-sum", "sigmoid"] as const) {
        const outs: string[] = [];
        for (const threads of [1, 2]) {
          const out = join(dir.path, `${method}-js-${threads}.safetensors`);
          await merge({ recipeMetadata: false, a: paths[0]!, b: paths[1]!, method, multiplier: 0.3, dtype: "same", out, engine: "js", threads });
          outs.push(out);
        }
        assert.ok(readFileSync(outs[0]!).equals(readFileSync(outs[1]!)), `${method}: threads 1 and 2`);
        const got = readModel(outs[0]!).tensors;
        // the parameters in double, rounded to fp32 once (as the planner hands them to the kernels)
        const p0 = f(1 - 0.3), p1 = f(0.3), k = f(0.3 * 0.3 * (3 - 2 * 0.3)); // sigmoid: k = M²·(3 − 2M) (MISSION.md)
        const kernel = method === "weighted-sum" ? (x: number, y: number) => f(f(x * p0) + f(y * p1)) : (x: number, y: number) => f(x + f(f(y - x) * k));
        for (const [name, dtype] of [["model.diffusion_model.input_blocks.1.0.weight", "F8_E4M3"], ["model.diffusion_model.input_blocks.2.0.weight", "F8_E5M2"]] as const) {
          const bytes = got.get(name)!.bytes;
          for (let i = 0; i < 65536; i++) {
            const want = expectedF8(dtype, i >>> 8, i & 255, kernel);
            // a NaN input's NaN: which NaN code an operation on NaNs returns is the JIT's (parity.test.ts)
            if (bytes[i] !== want && !(isNaNAt(Uint8Array.of(want), dtype, 0) && isNaNAt(bytes, dtype, i))) {
              assert.fail(`${method} ${dtype}: codes (0x${(i >>> 8).toString(16)}, 0x${(i & 255).toString(16)}) gave 0x${bytes[i]!.toString(16)}, want 0x${want.toString(16)}`);
            }
          }
        }
        if (ENGINES.includes("native")) {
          const out = join(dir.path, `${method}-native.safetensors`);
          await merge({ recipeMetadata: false, a: paths[0]!, b: paths[1]!, method, multiplier: 0.3, dtype: "same", out, engine: "native", threads: 2 });
          assertSameButNaN(out, outs[0]!, `${method}: the native engine's bytes`);
        }
      }
    });

    it("outputs written with O_DIRECT hold the same bytes as buffered writes and the native engine's (fp32 and fp16, 1 and 2 threads)", async () => {
      for (const dtype of ["fp32", "fp16"] as const) {
        const outs: Buffer[] = [];
        for (const [threads, direct] of [[1, undefined], [2, undefined], [1, "0"]] as const) {
          const restore = setEngineKnobs({ TENSORMERGE_DIRECT_IO: direct });
          try {
            const out = join(dir.path, `direct-${dtype}-${threads}-${direct ?? "on"}.safetensors`);
            await merge({ recipeMetadata: false, a: paths[0]!, b: paths[1]!, method: "weighted-sum", multiplier: 0.6, dtype, out, engine: "js", threads });
            outs.push(readFileSync(out));
          } finally {
            restore();
          }
        }
        assert.ok(outs[0]!.equals(outs[2]!), `${dtype}: direct vs buffered`);
        assert.ok(outs[1]!.equals(outs[2]!), `${dtype}: 2 threads direct vs buffered`);
        if (ENGINES.includes("native")) {
          const out = join(dir.path, `direct-${dtype}-native.safetensors`);
          await merge({ recipeMetadata: false, a: paths[0]!, b: paths[1]!, method: "weighted-sum", multiplier: 0.6, dtype, out, engine: "native", threads: 2 });
          assertSameButNaN(out, join(dir.path, `direct-${dtype}-1-on.safetensors`), `${dtype}: the native engine's bytes`);
        }
      }
    });
  });
});
