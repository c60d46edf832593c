/**
 * The SIMD method kernels (native/core/method_kernels_simd.h) against the scalar kernel and the
 * TS engine's kernels (lib/engine/method-kernels.ts, a second implementation of the same
 * statements): every element-wise method kernel, every kernel set the CPU has plus a forced
 * scalar run, every length 0..70 (around the 8- and 16-lane widths) at odd element offsets and at
 * byte addresses that are not 4-aligned, over values chosen to hit each branch (±0, ±Inf, NaNs,
 * subnormals, A = B, B = C, ties of |A| and |B|), and several parameter sets (α = 0 and 1 make
 * multiply-difference's pow exponents 0).
 *
 * Then pow over millions of values: random fp32 x (every exponent, subnormals) under many
 * exponents y (negative, large enough to reach the 0 and ∞ cut-offs), native bits on every ISA
 * against TS bits, and TS against Math.pow (within one fp32 ulp).
 *
 * Bits are compared exactly, but for NaNs: native vs TS, a NaN must be a NaN on both sides (an
 * operation on two NaNs keeps one payload, the compiler's or the JIT's choice, see parity.test.ts;
 * and JavaScript quiets a signalling NaN that the native clamp passes through). The same holds
 * between native kernel sets: the compiler may swap the operands of a scalar add.
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { powF32 } from "../../lib/engine/det-math";
import { METHOD_KERNELS } from "../../lib/engine/method-kernels";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import type { JobPiece } from "../../lib/native/job";
import { DT, KERNEL, bitsOf, isNaN32, makeJob, rng, tempDir, valueOf } from "../native/helpers";

const ISAS = ["scalar", "avx2", "avx512"] as const;
const available = () => ISAS.filter((isa) => capabilities().isas.includes(isa));

/** Kernel id, TS kernel name, parameter sets (the kernel's p0..p3, as the planner derives them). */
const KERNELS: [number, string, number[][]][] = [
  [KERNEL.trainDifference, "train-difference", [[0.7 * 1.8], [0], [-1.8], [1e30]]],
  [KERNEL.tripleSum, "triple-sum", [[1 - 0.3 - 0.45, 0.3, 0.45], [0, 1, 0], [-0.5, 2, -0.5]]],
  [KERNEL.sumTwice, "sum-twice", [[1 - 0.3, 0.3, 1 - 0.45, 0.45], [1, 0, 0, 1], [2, -1, 0.5, 0.5]]],
  [KERNEL.multiplyDifference, "multiply-difference", [[1 - 0.4, 0.4, 1 - 0.3, 0.3], [1, 0, 1, 0], [0, 1, 0, 1], [1 - 1.7, 1.7, 0.5, 0.5], [0.999, 0.001, 0.2, 0.8]]],
  [KERNEL.similarityAddDifference, "similarity-add-difference", [[0.8, 0.6, 1 - 0.4, 0.4], [0, 1, 1, 0], [2, -0.5, 0, 1]]],
  [KERNEL.clamp, "clamp", [[]]],
];

const SPECIALS = [
  0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7fa5a5a5 /* sNaN */, 0x00000001, 0x807fffff,
  0x3f800000, 0xbf800000, 0x3f800001, 0x7f7fffff, 0xff7fffff, 0x00800000, 0x3e800000, 0xbe800000,
];

/** Element values: random normals of moderate size, with specials and exact ties mixed in. */
function operands(n: number, seed: number): [Float32Array, Float32Array, Float32Array] {
  const next = rng(seed);
  const pick = () => {
    const u = next();
    if (u < 0.15) return valueOf(SPECIALS[Math.floor(next() * SPECIALS.length)]!);
    if (u < 0.2) return valueOf(Math.floor(next() * 0x7f800000) | (next() < 0.5 ? 0x80000000 : 0)); // any exponent
    return Math.fround((next() - 0.5) * 0.2);
  };
  const a = Float32Array.from({ length: n }, pick), b = Float32Array.from({ length: n }, pick), c = Float32Array.from({ length: n }, pick);
  for (let i = 0; i < n; i++) {
    const u = next();
    if (u < 0.05) b[i] = c[i]!; // B = C: train difference's 0/0, multiply difference's 0^y
    else if (u < 0.1) b[i] = a[i]!; // A = B
    else if (u < 0.13) b[i] = -a[i]!; // |A| = |B|: similarity's tie, clamp's ±
    else if (u < 0.15) a[i] = b[i] = c[i]!;
  }
  return [a, b, c];
}

/** Same bits, or a NaN on both sides. */
function sameElement(got: number, want: number): boolean {
  return got === want || (isNaN32(got) && isNaN32(want));
}

describe("SIMD method kernels = scalar kernels = TS kernels", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-method-simd-");
  after(() => dir.cleanup());

  const N = 4096;
  const [va, vb, vc] = operands(N, 2024);
  // Each operand file is the values at a 2-byte shift too: offsets 4k (aligned, read in place) and
  // 4k + 2 (not 4-aligned: the engine copies before the kernel); the test reads the same bytes.
  const files = [va, vb, vc].map((v, k) => {
    const bytes = new Uint8Array(4 * N + 8);
    bytes.set(new Uint8Array(v.buffer), 2);
    const path = dir.file(`op${k}.bin`);
    writeFileSync(path, bytes);
    return { path, bytes, size: bytes.length };
  });
  const f32At = (bytes: Uint8Array, offset: number, n: number) => new Float32Array(bytes.slice(offset, offset + 4 * n).buffer);

  for (const [kernel, name, paramSets] of KERNELS) {
    it(`${name}: lengths 0..70 at odd offsets, every parameter set, every ISA`, async () => {
      const cases: { piece: JobPiece; x: Float32Array[]; want: Float32Array; out: number }[] = [];
      let out = 0, start = 1;
      for (const params of paramSets) {
        for (let n = 0; n <= 70; n++) {
          start = (start * 17 + 5) % (N - 80) | 1; // odd element offsets
          const shift = n % 3 === 0 ? 0 : 2; // 2/3 of the cases at 4k + 2
          const offset = 4 * start + shift;
          const x = files.map((f) => f32At(f.bytes, offset, n));
          const want = new Float32Array(n);
          METHOD_KERNELS[name]!(want, x, params, n);
          cases.push({
            x, want, out,
            piece: {
              name: `${name}.${n}.${out}`, n,
              ops: [{ kernel, args: [0, 1, 2].map((file) => ({ kind: "input" as const, file, offset, dtype: DT.F32 })), params, round: DT.F32 }],
              writes: [{ output: 0, offset: out, dtype: DT.F32, source: { kind: "op" as const, index: 0 } }],
            },
          });
          out += 4 * n;
        }
      }
      let scalar: Uint32Array | undefined;
      for (const isa of available()) {
        const path = dir.file(`${name}.${isa}.bin`);
        await runNativeJob(makeJob({ inputs: files.map((f) => ({ path: f.path, size: f.size })), outputs: [{ path, size: out, literals: [] }], pieces: cases.map((c) => c.piece), isa, threads: 2 }));
        const got = new Uint32Array(readFileSync(path).buffer.slice(0));
        scalar ??= got; // "scalar" comes first
        for (const c of cases) {
          const want = new Uint32Array(c.want.buffer);
          for (let i = 0; i < c.want.length; i++) {
            const g = got[c.out / 4 + i]!, w = want[i]!, s: number = scalar[c.out / 4 + i]!;
            const where = `${isa} ${c.piece.name}[${i}] (${c.x.map((v) => v[i]).join(", ")}; p = ${c.piece.ops[0]!.params.join(", ")})`;
            if (!sameElement(g, w)) assert.fail(`${where}: native ${valueOf(g)} (0x${g.toString(16)}), TS ${valueOf(w)} (0x${w.toString(16)})`);
            if (!sameElement(g, s)) assert.fail(`${where}: native 0x${g.toString(16)}, native scalar 0x${s.toString(16)}`);
          }
        }
      }
      assert.equal(scalar?.length, out / 4);
    });
  }

});

describe("pow: SIMD = scalar = TS over millions of values and many exponents", function () {
  this.timeout(600_000);
  const dir = tempDir("tm-pow-simd-");
  after(() => dir.cleanup());

  // exponents as multiply-difference's 1−α and α take them, and beyond: negative, tiny, large
  const EXPONENTS = [0.6, 0.4, -0.7, 1.7, 1e-7, -1e-7, 3.5, -3.5, 12.25, -40, 150, 0.123456, 0.999999, 1.000001, -1, 2];
  const N = 1 << 18; // per exponent: 4.2M values in all
  const next = rng(4242);
  const xs = new Float32Array(N);
  const specials = [0, -0, 1, Infinity, -Infinity, NaN, 1e-45, 1.1754942e-38, 3.4028235e38, 0.5, 2, 0.99999994, 1.0000001, -2];
  for (let i = 0; i < N; i++) {
    // every fp32 exponent (subnormals included), and values near 1 where log2 x cancels
    xs[i] = i < specials.length ? specials[i]! : i % 4 === 0 ? Math.fround(1 + (next() - 0.5) * 1e-3) : valueOf(Math.floor(next() * 0x7f800000));
  }

  it("TS is within one fp32 ulp of Math.pow (special cases exact)", () => {
    let worst = 0;
    for (const y0 of EXPONENTS) {
      const y = Math.fround(y0);
      for (let i = 0; i < N; i++) {
        const x = xs[i]!, got = powF32(x, y), want = Math.fround(Math.pow(x, y));
        if (Object.is(x, -0)) continue; // pow of −0 is pow of +0 here (the kernels only pass |A − C|), unlike Math.pow for odd y
        if (x < 0 || Number.isNaN(x)) {
          assert.ok(Number.isNaN(got), `pow(${x}, ${y}) = ${got}`);
          continue;
        }
        if (!Number.isFinite(want) || want === 0 || !Number.isFinite(got) || got === 0) {
          // at the overflow/underflow edges one ulp can be the step to ∞ or from the smallest subnormal
          const edge = Math.abs(bitsOf(got) - bitsOf(want)) <= 1;
          assert.ok(Object.is(got, want) || edge, `pow(${x}, ${y}) = ${got}, Math.pow says ${want}`);
          continue;
        }
        worst = Math.max(worst, Math.abs(bitsOf(got) - bitsOf(want)));
      }
    }
    assert.ok(worst <= 1, `worst error ${worst} ulp`);
  });

  it("native gives TS's bits on every ISA", async () => {
    // multiply-difference with A = x, B = 1, C = 0 and parameters {y, 1, 1, 0} is pow(x, y)·1
    // (with the sign of x·1 + 1·0 − 0: negative for x < 0, whose pow is NaN either way)
    const size = N * 4;
    const xPath = dir.file("x.bin"), onePath = dir.file("one.bin"), zeroPath = dir.file("zero.bin");
    writeFileSync(xPath, Buffer.from(xs.buffer));
    writeFileSync(onePath, Buffer.from(new Float32Array(N).fill(1).buffer));
    writeFileSync(zeroPath, Buffer.alloc(size));
    const input = (file: number) => ({ kind: "input" as const, file, offset: 0, dtype: DT.F32 });
    const pieces = EXPONENTS.map((y, k) => ({
      name: `pow.${k}`, n: N,
      ops: [{ kernel: KERNEL.multiplyDifference, args: [input(0), input(1), input(2)], params: [y, 1, 1, 0], round: DT.F32 }],
      writes: [{ output: 0, offset: k * size, dtype: DT.F32, source: { kind: "op" as const, index: 0 } }],
    }));
    const expected = EXPONENTS.map((y) => {
      const r = new Float32Array(N);
      METHOD_KERNELS["multiply-difference"]!(r, [xs, new Float32Array(N).fill(1), new Float32Array(N)], [y, 1, 1, 0], N);
      return new Uint32Array(r.buffer);
    });
    // the kernel really is pow here (so this compares pow and not something else)
    for (let i = 0; i < 1000; i++) assert.ok(Object.is(valueOf(expected[0]![i]!), powF32(xs[i]!, Math.fround(EXPONENTS[0]!))) || Number.isNaN(xs[i]!) || xs[i]! < 0);
    for (const isa of available()) {
      const out = dir.file(`pow.${isa}.bin`);
      await runNativeJob(makeJob({ inputs: [{ path: xPath, size }, { path: onePath, size }, { path: zeroPath, size }], outputs: [{ path: out, size: size * EXPONENTS.length, literals: [] }], pieces, isa, threads: 2 }));
      const got = new Uint32Array(readFileSync(out).buffer.slice(0));
      EXPONENTS.forEach((y, k) => {
        for (let i = 0; i < N; i++) {
          if (got[k * N + i] !== expected[k]![i]) assert.fail(`${isa}: pow(${xs[i]}, ${y}): native ${valueOf(got[k * N + i]!)} vs TS ${valueOf(expected[k]![i]!)}`);
        }
      });
    }
  });

  it("native gives TS's bits on every ISA for products of two general operands (the vector loop's general path)", async () => {
    // A = xs, B = other positive fp32 of every exponent, C = 0: both operands are general in
    // nearly every vector (the pow test above has B = 1, a special operand in every lane), so
    // this covers the general path's table lookups over every exponent; the subnormal lanes
    // send their vectors to the special path.
    const size = N * 4;
    const next2 = rng(777);
    const x2 = new Float32Array(N);
    for (let i = 0; i < N; i++) x2[i] = i % 3 === 0 ? Math.fround(0.02 * (next2() + 0.01)) : valueOf(Math.floor(next2() * 0x7f800000));
    const aPath = dir.file("pp-a.bin"), bPath = dir.file("pp-b.bin"), zeroPath = dir.file("pp-zero.bin");
    writeFileSync(aPath, Buffer.from(xs.buffer));
    writeFileSync(bPath, Buffer.from(x2.buffer));
    writeFileSync(zeroPath, Buffer.alloc(size));
    const PARAMS = [[0.6, 0.4, 0.5, 0.5], [0.999, 0.001, 0.2, 0.8], [1 - 1.7, 1.7, 0.5, 0.5], [0.5, 0.5, 1, 0]].map((p) => p.map(Math.fround));
    const input = (file: number) => ({ kind: "input" as const, file, offset: 0, dtype: DT.F32 });
    const pieces = PARAMS.map((params, k) => ({
      name: `pp.${k}`, n: N,
      ops: [{ kernel: KERNEL.multiplyDifference, args: [input(0), input(1), input(2)], params, round: DT.F32 }],
      writes: [{ output: 0, offset: k * size, dtype: DT.F32, source: { kind: "op" as const, index: 0 } }],
    }));
    const expected = PARAMS.map((params) => {
      const r = new Float32Array(N);
      METHOD_KERNELS["multiply-difference"]!(r, [xs, x2, new Float32Array(N)], params, N);
      return new Uint32Array(r.buffer);
    });
    for (const isa of available()) {
      const out = dir.file(`pp.${isa}.bin`);
      await runNativeJob(makeJob({ inputs: [{ path: aPath, size }, { path: bPath, size }, { path: zeroPath, size }], outputs: [{ path: out, size: size * PARAMS.length, literals: [] }], pieces, isa, threads: 2 }));
      const got = new Uint32Array(readFileSync(out).buffer.slice(0));
      PARAMS.forEach((params, k) => {
        for (let i = 0; i < N; i++) {
          const g = got[k * N + i]!, e = expected[k]![i]!;
          if (g !== e && !(isNaN32(g) && isNaN32(e))) assert.fail(`${isa}: A ${xs[i]}, B ${x2[i]}, p ${params}: native ${valueOf(g)} vs TS ${valueOf(e)}`);
        }
      });
    }
  });
});
