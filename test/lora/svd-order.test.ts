/**
 * The extraction's SVD (lib/lora/svd.ts) promises the same bits for the same input and seed
 * whatever its loops share: its products handle several rows per pass and its Gram–Schmidt
 * fuses each subtraction with the next dot product, for speed only. This test writes the same
 * algorithm out plainly (one output element, one term at a time, in the documented order) and
 * requires the very same bits from the fast code, on shapes that leave every loop remainder.
 */
import assert from "node:assert/strict";
import { symmetricEigen, truncatedSvd } from "../../lib/lora/svd";

/** svd.ts's documented generator: mulberry32 uniforms, Box–Muller normals. */
function gaussian(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => {
    const u = Math.max(uniform(), 1e-300), v = uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** C = X·Y with X [m, n] given by an element function: each element summed over j ascending from 0. */
function product(m: number, n: number, k: number, x: (i: number, j: number) => number, y: Float64Array): Float64Array {
  const c = new Float64Array(m * k);
  for (let i = 0; i < m; i++)
    for (let l = 0; l < k; l++) {
      let sum = 0;
      for (let j = 0; j < n; j++) sum = sum + x(i, j) * y[j * k + l]!;
      c[i * k + l] = sum;
    }
  return c;
}

/** Σ u[i]·v[i] in four partial sums by i mod 4 (the tail into the first), (s0 + s1) + (s2 + s3). */
function dot(u: number[], v: number[]): number {
  const s = [0, 0, 0, 0];
  const body = u.length - (u.length % 4);
  for (let i = 0; i < u.length; i++) s[i < body ? i % 4 : 0] += u[i]! * v[i]!;
  return (s[0]! + s[1]!) + (s[2]! + s[3]!);
}

/** Modified Gram–Schmidt, two passes, on the columns of Y [m, k]. */
function orthonormalized(y: Float64Array, m: number, k: number): Float64Array {
  const cols = Array.from({ length: k }, (_, c) => Array.from({ length: m }, (_, i) => y[i * k + c]!));
  for (let pass = 0; pass < 2; pass++)
    for (let c = 0; c < k; c++) {
      for (let p = 0; p < c; p++) {
        const d = dot(cols[c]!, cols[p]!);
        cols[c] = cols[c]!.map((v, i) => v - d * cols[p]![i]!);
      }
      const norm = Math.sqrt(dot(cols[c]!, cols[c]!));
      cols[c] = cols[c]!.map((v) => (norm > 1e-300 ? v / norm : 0));
    }
  const out = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) out[i * k + c] = cols[c]![i]!;
  return out;
}

function plainSvd(a: Float64Array, m: number, n: number, rank: number, seed: number) {
  const r = Math.max(1, Math.min(rank, m, n));
  const k = Math.min(r + Math.max(8, r), m, n);
  const random = gaussian(seed);
  const omega = new Float64Array(n * k);
  for (let i = 0; i < omega.length; i++) omega[i] = random();
  const A = (i: number, j: number) => a[i * n + j]!, At = (j: number, i: number) => a[i * n + j]!;
  let y = orthonormalized(product(m, n, k, A, omega), m, k);
  for (let it = 0; it < 2; it++) {
    const z = orthonormalized(product(n, m, k, At, y), n, k);
    y = orthonormalized(product(m, n, k, A, z), m, k);
  }
  const bt = product(n, m, k, At, y);
  const bbt = new Float64Array(k * k);
  for (let i = 0; i < k; i++)
    for (let j = i; j < k; j++) {
      let sum = 0;
      for (let c = 0; c < n; c++) sum = sum + bt[c * k + i]! * bt[c * k + j]!;
      bbt[i * k + j] = sum;
      bbt[j * k + i] = sum;
    }
  const { values, vectors } = symmetricEigen(bbt, k);
  const s = Float64Array.from({ length: r }, (_, c) => Math.sqrt(Math.max(0, values[c]!)));
  const u = new Float64Array(m * r), vt = new Float64Array(r * n);
  for (let i = 0; i < m; i++)
    for (let c = 0; c < r; c++) {
      let sum = 0;
      for (let l = 0; l < k; l++) sum = sum + y[i * k + l]! * vectors[l * k + c]!;
      u[i * r + c] = sum;
    }
  for (let j = 0; j < n; j++)
    for (let c = 0; c < r; c++) {
      let sum = 0;
      for (let l = 0; l < k; l++) sum = sum + vectors[l * k + c]! * bt[j * k + l]!;
      if (s[c]! > 0) vt[c * n + j] = sum / s[c]!;
    }
  return { u, s, vt };
}

describe("lora: the extraction SVD's loop sharing keeps the plain order's bits", () => {
  // Odd row and column counts leave every remainder of the shared loops (2 rows, 4 terms, 4 sums).
  for (const [m, n, rank] of [[37, 23, 6], [23, 37, 6], [30, 9, 3], [9, 41, 4], [64, 64, 8], [5, 3, 8]] as const) {
    it(`${m} × ${n}, rank ${rank}`, () => {
      const random = gaussian(m * 1000 + n);
      const a = Float64Array.from({ length: m * n }, () => random());
      const fast = truncatedSvd(a, m, n, rank, { seed: 77 });
      const plain = plainSvd(a, m, n, rank, 77);
      assert.deepEqual(Array.from(fast.s), Array.from(plain.s));
      assert.deepEqual(Array.from(fast.u), Array.from(plain.u));
      assert.deepEqual(Array.from(fast.vt), Array.from(plain.vt));
    });
  }
});
