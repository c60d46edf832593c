/**
 * The TS engine's batched pow product and its block-wise multiply-difference kernel
 * (det-math.ts powProductF32Array, method-kernels.ts), which replace per-element steps by
 * table entries (LOG_SCALE, LOG_HI, EXP_SCALE) and run the kernel in blocks of 2048 elements:
 *
 * - powProductF32Array, and the asm.js kernel multiply-difference runs (asm-kernels.ts mdPow,
 *   through method-kernels.ts powProductF32Blocks), over millions of values (every fp32 exponent, subnormals, values near 1,
 *   weight-difference sizes, exact powers of two, ±0, ∞, NaN) against an independent reference,
 *   Math.pow(x1, y1)·Math.pow(x2, y2) in double (relative error ~2^-52): within the algorithm's
 *   documented 0.505 fp32 ulp; exactly the reference where the result is a power of two (the
 *   bound before the rounding, 2^-30 relative, is far below the gap to the next fp32 value);
 *   IEEE pow's value for the special operands; and the scalar powProductF32's bits everywhere;
 * - the multiply-difference kernel against the native engine's bytes (every ISA, 2 threads) over
 *   millions of elements (random values, A = C and B = C runs and single elements, edge values),
 *   in tensors whose lengths end on, before and after block boundaries;
 * - a whole multiply-difference merge in the TS engine with the WebAssembly SIMD kernel and with
 *   TENSORMERGE_TS_WASM=0 (the asm.js one), 1 and 2 threads, fp32 and fp16 out: the same bytes
 *   as each other and as the native engine.
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ASM_HEAP_UNIT, asmHeap, kernelsOf } from "../../lib/engine/asm-kernels";
import { powProductF32, powProductF32Array } from "../../lib/engine/det-math";
import { METHOD_KERNELS, powProductF32Blocks } from "../../lib/engine/method-kernels";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import { merge } from "../../lib/merge";
import { ENGINES, setEngineKnobs } from "../helpers/engines";
import { writeModel, type TestTensor } from "../helpers/models";
import { DT, KERNEL, makeJob, rng, tempDir, valueOf } from "../native/helpers";

const f = Math.fround;
const N = 1 << 22; // values per exponent pair
const F64 = new Float64Array(1), U32 = new Uint32Array(F64.buffer);
/** The fp32 ulp at the magnitude of a positive double v (2^-149 below the normal range). */
function ulp32(v: number): number {
  F64[0] = v;
  const e = ((U32[1]! >>> 20) & 0x7ff) - 1023;
  return 2 ** (Math.max(e, -126) - 23);
}
const SPECIALS = [0, Infinity, NaN, 1, valueOf(0x7fc00001), valueOf(0x00000001), valueOf(0x007fffff), valueOf(0x00800000), valueOf(0x7f7fffff)];

/** x ≥ 0 (the pow product's operands are |A − C| and |B − C|) of the kinds listed at the top. */
function operands(seed: number): Float32Array {
  const next = rng(seed);
  const x = new Float32Array(N), bits = new Uint32Array(x.buffer);
  for (let i = 0; i < N; i++) {
    switch (i % 8) {
      case 0: bits[i] = Math.floor(next() * 0x7f800000); break; // any positive finite fp32
      case 1: x[i] = f(1 + (next() - 0.5) * 1e-3); break; // near 1
      case 2: case 3: case 4: x[i] = f(Math.abs(next() - next()) * 0.05); break; // weight differences
      case 5: bits[i] = Math.floor(next() * 0x00800000); break; // subnormal
      case 6: x[i] = 2 ** (Math.floor(next() * 252) - 125); break; // exact powers of two
      default: x[i] = next() < 0.5 ? 0 : SPECIALS[Math.floor(next() * SPECIALS.length)]!; // A = C, specials
    }
  }
  return x;
}

describe("multiply-difference's pow product by blocks and tables (TS engine)", function () {
  this.timeout(900_000);
  const dir = tempDir("tm-md-blocks-");
  after(() => dir.cleanup());
  const x1 = operands(11), x2 = operands(12);
  // exponents (1 − α, α) as the planner rounds them, and pairs outside the fast path's range
  const pairs = [[0.7, 0.3], [0.5, 0.5], [0.999, 0.001], [0.1, 0.9], [1, 0], [0, 1], [1.5, -0.5], [0.75, 0.5]].map(
    ([y1, y2]) => [f(y1!), f(y2!)] as [number, number],
  );

  it("is within 0.505 ulp of Math.pow·Math.pow in double, exact on powers of two, IEEE pow on special operands, powProductF32's bits (JS, asm.js, WebAssembly SIMD)", () => {
    const out = new Float32Array(N), outAsm = new Float32Array(N), outWasm = new Float32Array(N);
    for (const [y1, y2] of pairs) {
      powProductF32Array(x1, y1, x2, y2, out, N);
      powProductF32Blocks(x1, y1, x2, y2, outAsm, N, true);
      powProductF32Blocks(x1, y1, x2, y2, outWasm, N); // the WebAssembly SIMD kernel where there is one
      let worst = 0, compared = 0, exact = 0;
      for (let i = 0; i < N; i++) {
        const a = x1[i]!, b = x2[i]!, got = out[i]!;
        const want = Math.pow(a, y1) * Math.pow(b, y2);
        const scalar = powProductF32(a, y1, b, y2);
        if (!Object.is(got, scalar) && !(Number.isNaN(got) && Number.isNaN(scalar))) assert.fail(`(${y1}, ${y2}) pow(${a})·pow(${b}): ${got}, scalar ${scalar}`);
        if (!Object.is(outAsm[i], scalar) && !(Number.isNaN(outAsm[i]!) && Number.isNaN(scalar))) assert.fail(`(${y1}, ${y2}) pow(${a})·pow(${b}): asm ${outAsm[i]}, scalar ${scalar}`);
        if (!Object.is(outWasm[i], scalar) && !(Number.isNaN(outWasm[i]!) && Number.isNaN(scalar))) assert.fail(`(${y1}, ${y2}) pow(${a})·pow(${b}): wasm ${outWasm[i]}, scalar ${scalar}`);
        // powProductF32's operand classes: a general operand enters the log sum, another is
        // the factor IEEE pow gives it (Math.pow is IEEE pow there)
        const g1 = y1 !== 0 && a > 0 && a < Infinity && a !== 1, g2 = y2 !== 0 && b > 0 && b < Infinity && b !== 1;
        if (!g1 && !g2) {
          const w = f(want);
          if (!Object.is(got, w) && !(Number.isNaN(got) && Number.isNaN(w))) assert.fail(`(${y1}, ${y2}) special pow(${a})·pow(${b}): ${got}, IEEE ${w}`);
          continue;
        }
        if (!g1 || !g2) {
          const factor = g1 ? Math.pow(b, y2) : Math.pow(a, y1), power = g1 ? Math.pow(a, y1) : Math.pow(b, y2);
          if (factor !== 1) {
            // 0, ∞ or NaN times a power inside the fp32 range
            if (power >= 2 ** -149 && power < 2 ** 128) {
              const w = f(power * factor);
              if (!Object.is(got, w) && !(Number.isNaN(got) && Number.isNaN(w))) assert.fail(`(${y1}, ${y2}) pow(${a})·pow(${b}): ${got}, IEEE ${w}`);
            }
            continue;
          }
        }
        if (want === 0 || want >= 3.4028235677973366e38 || want < 2 ** -150) continue; // the fp32 cut-offs
        const err = Math.abs(got - want) / ulp32(want);
        if (err > worst) worst = err;
        compared++;
        F64[0] = want;
        if (U32[0] === 0 && (U32[1]! & 0xfffff) === 0 && want >= 2 ** -126) {
          exact++;
          if (got !== want) assert.fail(`(${y1}, ${y2}) pow(${a})·pow(${b}) = ${want} exactly, got ${got}`);
        }
      }
      assert.ok(worst <= 0.505, `(${y1}, ${y2}): worst error ${worst} ulp`);
      assert.ok(compared > N / 2, `(${y1}, ${y2}): only ${compared} values compared`);
      if (y1 === 0.5) assert.ok(exact > 1000, `(${y1}, ${y2}): ${exact} exact powers of two`);
    }
  });

  it("gives the native engine's bytes on every ISA over millions of elements, lengths around the blocks", async () => {
    const next = rng(2027);
    const total = 3 * N;
    const a = new Float32Array(total), b = new Float32Array(total), c = new Float32Array(total);
    const edge = [0, -0, 1, -1, Infinity, -Infinity, NaN, valueOf(0xffc00001), valueOf(0x00000001), valueOf(0x80000003), valueOf(0x7f7fffff)];
    for (let i = 0; i < total; i++) {
      const k = i % 64;
      c[i] = f((next() - 0.5) * 0.2);
      a[i] = f(c[i]! + (next() - 0.5) * 0.04);
      b[i] = f(c[i]! + (next() - 0.5) * 0.04);
      if (k === 5) a[i] = c[i]!; // A = C
      else if (k === 9) b[i] = c[i]!; // B = C
      else if (k === 13) a[i] = b[i] = c[i]!; // all three
      else if (k === 17) a[i] = edge[Math.floor(next() * edge.length)]!;
      else if (k === 21) b[i] = edge[Math.floor(next() * edge.length)]!;
      else if (k === 25) c[i] = edge[Math.floor(next() * edge.length)]!;
      else if (k === 29) c[i] = f(c[i]! * 2 ** (Math.floor(next() * 200) - 100));
    }
    // whole blocks of A = C (an unchanged tensor part) and B = C
    a.set(c.subarray(10_000, 30_000), 10_000);
    b.set(c.subarray(50_000, 54_096), 50_000);
    const size = total * 4;
    const paths = ["a", "b", "c"].map((name, k) => {
      const path = dir.file(`${name}.bin`);
      writeFileSync(path, Buffer.from([a, b, c][k]!.buffer));
      return path;
    });
    // tensors of these lengths one after another, so pieces start at every offset modulo a block
    const lengths = [1, 7, 2047, 2048, 2049, 4095, 4096, 6145, 1 << 20, (1 << 21) + 3];
    let used = lengths.reduce((s, n) => s + n, 0);
    lengths.push(total - used);
    used = total;
    const params = [[0.7, 0.3, 0.5, 0.5], [0.25, 0.75, 0.9, 0.1], [0, 1, 0.5, 0.5], [1.25, -0.25, 0, 1]].map((p) => p.map(f));
    const input = (file: number, offset: number) => ({ kind: "input" as const, file, offset, dtype: DT.F32 });
    for (const [k, p] of params.entries()) {
      const pieces = [];
      let offset = 0;
      for (const [t, n] of lengths.entries()) {
        pieces.push({
          name: `md.${k}.${t}`, n,
          ops: [{ kernel: KERNEL.multiplyDifference, args: [input(0, offset * 4), input(1, offset * 4), input(2, offset * 4)], params: p, round: DT.F32 }],
          writes: [{ output: 0, offset: offset * 4, dtype: DT.F32, source: { kind: "op" as const, index: 0 } }],
        });
        offset += n;
      }
      const expected = new Float32Array(total), want = new Uint32Array(expected.buffer);
      offset = 0;
      for (const n of lengths) {
        METHOD_KERNELS["multiply-difference"]!(expected.subarray(offset, offset + n), [a.subarray(offset, offset + n), b.subarray(offset, offset + n), c.subarray(offset, offset + n)], p, n);
        offset += n;
      }
      for (const isa of (["scalar", "avx2", "avx512"] as const).filter((i) => capabilities().isas.includes(i))) {
        const out = dir.file(`md.${k}.${isa}.bin`);
        await runNativeJob(makeJob({ inputs: paths.map((path) => ({ path, size })), outputs: [{ path: out, size, literals: [] }], pieces, isa, threads: 2 }));
        const got = new Uint32Array(readFileSync(out).buffer.slice(0));
        let nanInputs = 0;
        for (let i = 0; i < total; i++) {
          if (got[i] === want[i]) continue;
          // two NaNs meeting in C + m: which one the sum returns is the compiler's or JIT's choice
          const loose = (Number.isNaN(c[i]!) || Number.isNaN(a[i]!) || Number.isNaN(b[i]!)) && Number.isNaN(valueOf(got[i]!)) && Number.isNaN(expected[i]!);
          if (loose) { nanInputs++; continue; }
          assert.fail(`${isa}, p ${p}: md(${a[i]}, ${b[i]}, ${c[i]}) at ${i}: native 0x${got[i]!.toString(16)}, TS 0x${want[i]!.toString(16)}`);
        }
        assert.ok(nanInputs < total / 100, `${isa}: ${nanInputs} NaN elements compared loosely`);
      }
    }
  });

  it("a whole merge in the TS engine gives the same bytes with the WebAssembly kernel, with TENSORMERGE_TS_WASM=0 and in the native engine", async () => {
    // the knob is read where a heap is made: check that it switches the kernel there
    for (const [knob, wasm] of [[undefined, true], ["0", false]] as const) {
      const restore = setEngineKnobs({ TENSORMERGE_TS_WASM: knob });
      try {
        assert.equal(kernelsOf(asmHeap(ASM_HEAP_UNIT))!.wasmPow !== undefined, wasm, `TENSORMERGE_TS_WASM=${knob}`);
      } finally {
        restore();
      }
    }
    const next = rng(4242);
    // lengths around the 8-element wasm step and the 2048-element block
    const lengths = [1, 7, 8, 9, 2047, 2048, 2049, 16_383, 100_003, 300_000];
    const models = ["a", "b", "c"].map((name) => join(dir.path, `whole-${name}.safetensors`));
    const tensors: Record<string, TestTensor>[] = [{}, {}, {}];
    lengths.forEach((n, t) => {
      const c = Float32Array.from({ length: n }, () => (next() - 0.5) * 0.2);
      const a = c.map((v) => (next() < 0.1 ? v : v + (next() - 0.5) * 0.04)); // A = C here and there
      const b = t === 4 ? c.slice() : c.map((v) => v + (next() - 0.5) * 0.04); // a tensor B leaves as C
      const name = `model.diffusion_model.input_blocks.${t}.0.weight`;
      [a, b, c].forEach((values, m) => (tensors[m]![name] = { dtype: "F32", shape: [n], values }));
    });
    models.forEach((path, m) => writeModel(path, tensors[m]!));
    for (const dtype of ["fp32", "fp16"] as const) {
      const outs: { label: string; bytes: Buffer }[] = [];
      const run = async (label: string, engine: "js" | "native", threads: number, knob: string | undefined) => {
        const restore = setEngineKnobs({ TENSORMERGE_TS_WASM: knob });
        try {
          const out = join(dir.path, `whole-${dtype}-${label}.safetensors`);
          await merge({ recipeMetadata: false, a: models[0]!, b: models[1]!, c: models[2]!, method: "multiply-difference", multiplier: 0.35, beta: 0.6, dtype, out, engine, threads });
          outs.push({ label, bytes: readFileSync(out) });
        } finally {
          restore();
        }
      };
      await run("wasm-1", "js", 1, undefined);
      await run("wasm-2", "js", 2, undefined);
      await run("asm-1", "js", 1, "0");
      await run("asm-2", "js", 2, "0");
      if (ENGINES.includes("native")) await run("native", "native", 2, undefined);
      for (const { label, bytes } of outs.slice(1)) assert.ok(bytes.equals(outs[0]!.bytes), `${dtype}: ${label} vs ${outs[0]!.label}`);
    }
  });
});
