/**
 * The pow both engines use, one operand of the pow product (merge_pow_product in
 * native/core/method_kernels.cc, powF32 = powProductF32(x, y, 1, 1) in lib/engine/det-math.ts;
 * the two-operand product: pow-product.test.ts), for multiply-difference: millions of fp32 x (every exponent,
 * subnormals, random mantissas) per exponent y, native bits vs TS bits, and both against
 * Math.pow (within one fp32 ulp; special cases exact, as IEEE pow defines them).
 *
 * The native side runs through a job: multiply-difference with A = x, B = 1, C = 0 and kernel
 * parameters {y, 1, 1, 0} computes 0 + copysign(pow(x, y)·pow(1, 1), x·1 + 1·0 − 0) = pow(x, y).
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { powF32 } from "../../lib/engine/det-math";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import { DT, KERNEL, bitsOf, makeJob, rng, tempDir, valueOf } from "./helpers";

const N = 1 << 20; // x values per exponent (10 exponents: ~10M values)
const EXPONENTS = [0.5, 0.3, 0.7, 0.001, 0.999, 1, 2, -0.5, 0.25, 1 / 3];

/** ulp distance between two finite fp32 values of the same sign (or both zero). */
function ulps(x: number, y: number): number {
  return Math.abs(bitsOf(x) - bitsOf(y));
}

describe("pow shared by the engines (multiply-difference)", function () {
  this.timeout(300_000);
  const dir = tempDir();
  after(() => dir.cleanup());

  // x: random positive fp32 bit patterns (every exponent, subnormals), then special values.
  const specials = [0, -0, 1, Infinity, NaN, 1e-45, 1.1754942e-38, 3.4028235e38, 0.5, 2, 4, 1e-10, 65504];
  const xs = new Float32Array(N);
  const next = rng(99);
  for (let i = 0; i < N; i++) xs[i] = i < specials.length ? specials[i]! : valueOf(Math.floor(next() * 0x7f800000));

  it("gives the same bits natively (every ISA) and in TS, within 1 ulp of Math.pow", async () => {
    const xPath = dir.file("x.bin"), onePath = dir.file("one.bin"), zeroPath = dir.file("zero.bin");
    writeFileSync(xPath, Buffer.from(xs.buffer));
    writeFileSync(onePath, Buffer.from(new Float32Array(N).fill(1).buffer));
    writeFileSync(zeroPath, Buffer.alloc(N * 4));
    const size = N * 4;
    const input = (file: number) => ({ kind: "input" as const, file, offset: 0, dtype: DT.F32 });
    const pieces = EXPONENTS.map((y, k) => ({
      name: `pow.${y}`, n: N,
      ops: [{ kernel: KERNEL.multiplyDifference, args: [input(0), input(1), input(2)], params: [y, 1, 1, 0], round: DT.F32 }],
      writes: [{ output: 0, offset: k * size, dtype: DT.F32, source: { kind: "op" as const, index: 0 } }],
    }));
    const expected = EXPONENTS.map((y) => Float32Array.from(xs, (x) => powF32(x, Math.fround(y))));
    let worst = 0, inexact = 0;
    EXPONENTS.forEach((y, k) => {
      const yf = Math.fround(y);
      for (let i = 0; i < N; i++) {
        const x = xs[i]!, got = expected[k]![i]!, want = Math.fround(Math.pow(x, yf));
        if (Number.isNaN(want) || !Number.isFinite(want) || want === 0 || Number.isNaN(got)) {
          if (!Object.is(got, want === 0 ? 0 : want) && !(Number.isNaN(got) && Number.isNaN(want))) assert.fail(`pow(${x}, ${yf}) = ${got}, Math.pow says ${want}`);
          continue;
        }
        const d = ulps(got, want);
        if (d > 0) inexact++;
        worst = Math.max(worst, d);
      }
    });
    assert.ok(worst <= 1, `worst error ${worst} ulp`);
    assert.ok(inexact < N * EXPONENTS.length * 1e-3, `${inexact} results differ from Math.pow rounded`); // nearly always the correctly rounded value
    for (const isa of ["scalar", "avx2", "avx512"] as const) {
      if (!capabilities().isas.includes(isa)) continue;
      const out = dir.file(`pow.${isa}.bin`);
      await runNativeJob(makeJob({ inputs: [{ path: xPath, size }, { path: onePath, size }, { path: zeroPath, size }], outputs: [{ path: out, size: size * EXPONENTS.length, literals: [] }], pieces, isa, threads: 2 }));
      const got = new Uint32Array(readFileSync(out).buffer.slice(0));
      EXPONENTS.forEach((y, k) => {
        const want = new Uint32Array(expected[k]!.buffer);
        for (let i = 0; i < N; i++) {
          if (got[k * N + i] !== want[i]) assert.fail(`${isa}: pow(${xs[i]}, ${y}) native ${valueOf(got[k * N + i]!)} vs TS ${valueOf(want[i]!)}`);
        }
      });
    }
  });

  it("follows IEEE pow's special cases", () => {
    assert.equal(powF32(0, 0.5), 0);
    assert.equal(powF32(0, -0.5), Infinity);
    assert.equal(powF32(NaN, 0), 1);
    assert.equal(powF32(Infinity, 0.5), Infinity);
    assert.equal(powF32(Infinity, -0.5), 0);
    assert.equal(powF32(1, 1e30), 1);
    assert.ok(Number.isNaN(powF32(-2, 0.5)));
    assert.equal(powF32(4, 0.5), 2);
    assert.equal(powF32(8, Math.fround(1 / 3)), Math.fround(Math.pow(8, Math.fround(1 / 3))));
  });
});
