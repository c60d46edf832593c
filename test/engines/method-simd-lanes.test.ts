/**
 * Multiply difference's SIMD pow (native/core/method_kernels_simd.h) at its own boundaries,
 * against the TS engine's kernel (lib/engine/method-kernels.ts, a second implementation of the
 * same statements) and the forced scalar kernel set:
 *
 * - lengths around the vector step: one fp32 vector (8 or 16 lanes) and the unrolled step
 *   (AVX2: 4 vectors, 32 lanes; AVX-512: 3 vectors, 48 lanes), then single vectors, then the
 *   scalar tail;
 * - vectors whose lanes are all on pow's general path (x > 0 finite, not 1: the SIMD kernel then
 *   skips the special-case blends), vectors with exactly one special lane (0, 1, +∞, NaN in
 *   |A − C| or |B − C|) at every lane position of the step, vectors of specials only, and
 *   vectors whose only specials are zero differences (A = C, B = C or both, at every lane
 *   position: the kernel's zero_lanes path, checked against the formula as well);
 * - exponents 1 − α and α with α = 0 and 1 (pow(x, 0) = 1 through the general path), negative,
 *   above 1, and large enough to reach pow's 0 and ∞ cut-offs;
 * - every kernel set the CPU has, with 1 and 2 threads.
 *
 * Bits are compared exactly, NaNs as NaNs (see method-simd.test.ts).
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { METHOD_KERNELS } from "../../lib/engine/method-kernels";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import type { JobPiece } from "../../lib/native/job";
import { DT, KERNEL, isNaN32, makeJob, rng, tempDir, valueOf } from "../native/helpers";

const ISAS = ["scalar", "avx2", "avx512"] as const;
const available = () => ISAS.filter((isa) => capabilities().isas.includes(isa));

/** Around 8, 16, 32, 48 (one vector, one unrolled step on AVX2 / AVX-512) and their multiples. */
const LENGTHS = [1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 47, 48, 49, 63, 64, 65, 79, 80, 81, 95, 96, 97, 127, 128, 129];

/** α, β of multiply-difference; the kernel takes {1 − α, α, 1 − β, β} as the planner computes them. */
const PARAMS: [number, number][] = [[0.3, 0.5], [0, 0.5], [1, 0.25], [-0.5, 1], [1.7, 0], [40, 0.5], [-25, 0.5]];

type Pattern = "general" | "one-special" | "all-special" | "zero-lanes";
const PATTERNS: Pattern[] = ["general", "one-special", "all-special", "zero-lanes"];

/**
 * A, B, C with |A − C| and |B − C| of the pattern's kind. Specials, as (A, B, C): |A − C| = 0,
 * = 1 exactly, = +∞, NaN; the same for |B − C|.
 */
function operands(pattern: Pattern, n: number, seed: number): [Float32Array, Float32Array, Float32Array] {
  const next = rng(seed);
  const small = () => Math.fround((next() - 0.5) * 0.2 || 0.01);
  const a = new Float32Array(n), b = new Float32Array(n), c = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    c[i] = small();
    a[i] = Math.fround(c[i]! + 0.003 + next() * 0.05); // |A − C| in (0, 0.06): general
    b[i] = Math.fround(c[i]! - 0.003 - next() * 0.05);
  }
  const special = (i: number, kind: number) => {
    switch (kind % 8) {
      case 0: a[i] = c[i]!; break; // |A − C| = 0
      case 1: c[i] = 0.25; a[i] = 1.25; break; // |A − C| = 1
      case 2: a[i] = Infinity; break;
      case 3: a[i] = NaN; break;
      case 4: b[i] = c[i]!; break;
      case 5: c[i] = 0.75; b[i] = -0.25; break; // |B − C| = 1
      case 6: b[i] = -Infinity; break;
      default: c[i] = valueOf(0xffc00001); break; // a NaN C: both differences NaN
    }
  };
  if (pattern === "one-special") {
    // one special lane per 16-lane block, its position moving through 0..15 block after block
    // (and so through every lane of a 32-lane step), its kind cycling
    for (let block = 0; block * 16 < n; block++) {
      special(block * 16 + ((block * 7 + seed) % Math.min(16, n - block * 16)), block + seed);
    }
  } else if (pattern === "all-special") {
    for (let i = 0; i < n; i++) special(i, i + seed);
  } else if (pattern === "zero-lanes") {
    // zero differences only: one lane per 16-lane block at a moving position (every lane of a
    // step), and about one lane in six more at random; A = C, B = C or both
    const zero = (i: number, kind: number) => {
      if (kind % 3 !== 1) a[i] = c[i]!;
      if (kind % 3 !== 0) b[i] = c[i]!;
    };
    for (let block = 0; block * 16 < n; block++) zero(block * 16 + ((block * 5 + seed) % Math.min(16, n - block * 16)), block + seed);
    for (let i = 0; i < n; i++) if (next() < 1 / 6) zero(i, Math.floor(next() * 3));
  }
  return [a, b, c];
}

describe("multiply difference SIMD pow: step boundaries, special lanes, forced ISAs", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-md-lanes-");
  after(() => dir.cleanup());

  // Every case's operands, one after the other in three files (A, B, C).
  const cases: { piece: JobPiece; want: Float32Array; x: Float32Array[]; out: number }[] = [];
  const chunks: Float32Array[][] = [[], [], []];
  let inOffset = 0, out = 0, seed = 1;
  for (const pattern of PATTERNS) {
    for (const [alpha, beta] of PARAMS) {
      const params = [Math.fround(1 - alpha), alpha, Math.fround(1 - beta), beta];
      for (const n of LENGTHS) {
        const x = operands(pattern, n, seed++);
        const want = new Float32Array(n);
        METHOD_KERNELS["multiply-difference"]!(want, x, params, n);
        x.forEach((v, k) => chunks[k]!.push(v));
        cases.push({
          x, want, out,
          piece: {
            name: `${pattern}.a${alpha}.b${beta}.n${n}`, n,
            ops: [{ kernel: KERNEL.multiplyDifference, args: [0, 1, 2].map((file) => ({ kind: "input" as const, file, offset: inOffset, dtype: DT.F32 })), params, round: DT.F32 }],
            writes: [{ output: 0, offset: out, dtype: DT.F32, source: { kind: "op" as const, index: 0 } }],
          },
        });
        inOffset += 4 * n;
        out += 4 * n;
      }
    }
  }
  const files = chunks.map((list, k) => {
    const bytes = new Uint8Array(inOffset);
    let at = 0;
    for (const v of list) {
      bytes.set(new Uint8Array(v.buffer), at);
      at += v.byteLength;
    }
    const path = dir.file(`op${k}.bin`);
    writeFileSync(path, bytes);
    return { path, size: bytes.length };
  });

  it("the patterns are what they claim (so the fast and the special paths both run)", () => {
    // the general pattern has no special difference, the others have some
    const specialLanes = (x: Float32Array[]) => {
      let count = 0;
      for (let i = 0; i < x[0]!.length; i++) {
        for (const d of [Math.abs(x[0]![i]! - x[2]![i]!), Math.abs(x[1]![i]! - x[2]![i]!)]) {
          const df = Math.fround(d);
          if (!(df > 0 && df < Infinity && df !== 1)) count++;
        }
      }
      return count;
    };
    for (const c of cases) {
      const s = specialLanes(c.x);
      if (c.piece.name.startsWith("general")) assert.equal(s, 0, c.piece.name);
      else if (c.piece.name.startsWith("one-special")) assert.ok(s >= Math.ceil(c.x[0]!.length / 16) && s <= 2 * Math.ceil(c.x[0]!.length / 16), `${c.piece.name}: ${s}`);
      else if (c.piece.name.startsWith("zero-lanes")) {
        // every special is a zero difference, and there is one in every 16-lane block
        let zeros = 0;
        for (let i = 0; i < c.x[0]!.length; i++) zeros += +(c.x[0]![i] === c.x[2]![i]) + +(c.x[1]![i] === c.x[2]![i]);
        assert.ok(s === zeros && s >= Math.ceil(c.x[0]!.length / 16), `${c.piece.name}: ${s} specials, ${zeros} zeros`);
      }
      else assert.ok(s >= c.x[0]!.length, `${c.piece.name}: ${s}`);
    }
  });

  it("zero differences give C + ±0 on every ISA (a zero factor with a positive exponent: the formula)", async () => {
    // C + copysign(|A − C|^(1 − α) · |B − C|^α, (1 − β)·A + β·B − C): a factor 0^y with y > 0
    // (the other's exponent in [0, 1], so that factor finite) makes the product +0, negated
    // where the sign term is < 0
    const zeroCases = cases.filter((c) => c.piece.name.startsWith("zero-lanes"));
    let checked = 0;
    for (const isa of available()) {
      const path = dir.file(`md-zero.${isa}.bin`);
      await runNativeJob(makeJob({ inputs: files, outputs: [{ path, size: out, literals: [] }], pieces: cases.map((c) => c.piece), isa, threads: 2 }));
      const got = new Float32Array(readFileSync(path).buffer.slice(0));
      for (const c of zeroCases) {
        const p = c.piece.ops[0]!.params!;
        const [y1, y2] = [p[0]!, p[1]!];
        const [a, b, cc] = c.x as [Float32Array, Float32Array, Float32Array];
        for (let i = 0; i < c.piece.n; i++) {
          const zeroA = a[i] === cc[i] && y1 > 0 && y2 >= 0 && y2 <= 1, zeroB = b[i] === cc[i] && y2 > 0 && y1 >= 0 && y1 <= 1;
          if (!zeroA && !zeroB) continue;
          const w = Math.fround(Math.fround(a[i]! * p[2]!) + Math.fround(b[i]! * p[3]!));
          const sg = Math.fround(w - cc[i]!);
          const want = Math.fround(cc[i]! + (sg < 0 ? -0 : 0));
          assert.ok(Object.is(got[c.out / 4 + i], want), `${isa} ${c.piece.name}[${i}]: ${got[c.out / 4 + i]}, want ${want}`);
          checked++;
        }
      }
    }
    assert.ok(checked > 1000, `${checked} zero lanes checked`);
  });

  for (const threads of [1, 2]) {
    it(`native = TS on every ISA, ${threads} thread(s)`, async () => {
      let scalar: Uint32Array | undefined;
      const isas = available();
      assert.ok(isas.includes("scalar"));
      for (const isa of isas) {
        const path = dir.file(`md.${isa}.${threads}.bin`);
        await runNativeJob(makeJob({ inputs: files, outputs: [{ path, size: out, literals: [] }], pieces: cases.map((c) => c.piece), isa, threads }));
        const got = new Uint32Array(readFileSync(path).buffer.slice(0));
        scalar ??= got; // "scalar" comes first
        for (const c of cases) {
          const want = new Uint32Array(c.want.buffer);
          for (let i = 0; i < want.length; i++) {
            const g = got[c.out / 4 + i]!, w = want[i]!, s: number = scalar[c.out / 4 + i]!;
            const same = (p: number, q: number) => p === q || (isNaN32(p) && isNaN32(q));
            const where = `${isa} ${c.piece.name}[${i}] (A, B, C = ${c.x.map((v) => v[i]).join(", ")})`;
            if (!same(g, w)) assert.fail(`${where}: native ${valueOf(g)} (0x${g.toString(16)}), TS ${valueOf(w)} (0x${w.toString(16)})`);
            if (!same(g, s)) assert.fail(`${where}: native 0x${g.toString(16)}, native scalar 0x${s.toString(16)}`);
          }
        }
      }
    });
  }
});
