/**
 * A deterministic truncated SVD in double precision: randomized range finding (Halko,
 * Martinsson & Tropp, "Finding structure with randomness", 2011, algorithms 4.4 and 5.1) with a
 * seeded Gaussian test matrix, power iterations re-orthonormalised each step, then the exact SVD
 * of the small projected matrix B = Qᵀ·A through the cyclic Jacobi eigen-decomposition of B·Bᵀ.
 * Same input, same seed → same bits (no threads, fixed loop orders). When rank + oversampling
 * reaches min(m, n), Q spans the whole column space and the result is the exact SVD.
 */

/** Seeded standard normal values (mulberry32 + Box–Muller). */
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

// The products below keep one summation order, each output element summed over the inner index
// ascending, c = fp64(c + x·b) one term at a time; four terms per pass over the output row only
// save its loads and stores (the order, and so the bits, are those of one term at a time).

/**
 * C [m, k] = A [m, n] · B [n, k]. Two rows of C per pass share the loads of B's rows (each
 * element keeps its own sum, the order above).
 */
function mul(a: Float64Array, m: number, n: number, b: Float64Array, k: number): Float64Array {
  const c = new Float64Array(m * k);
  let i = 0;
  for (; i + 2 <= m; i += 2) {
    const ci = i * k, cj = ci + k, ai = i * n, aj = ai + n;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const x0 = a[ai + j]!, x1 = a[ai + j + 1]!, x2 = a[ai + j + 2]!, x3 = a[ai + j + 3]!;
      const z0 = a[aj + j]!, z1 = a[aj + j + 1]!, z2 = a[aj + j + 2]!, z3 = a[aj + j + 3]!;
      const b0 = j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
      for (let l = 0; l < k; l++) {
        const v0 = b[b0 + l]!, v1 = b[b1 + l]!, v2 = b[b2 + l]!, v3 = b[b3 + l]!;
        c[ci + l] = c[ci + l]! + x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3;
        c[cj + l] = c[cj + l]! + z0 * v0 + z1 * v1 + z2 * v2 + z3 * v3;
      }
    }
    for (; j < n; j++) {
      const x = a[ai + j]!, z = a[aj + j]!, bj = j * k;
      for (let l = 0; l < k; l++) {
        const v = b[bj + l]!;
        c[ci + l] = c[ci + l]! + x * v;
        c[cj + l] = c[cj + l]! + z * v;
      }
    }
  }
  for (; i < m; i++) {
    const ci = i * k, ai = i * n;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const x0 = a[ai + j]!, x1 = a[ai + j + 1]!, x2 = a[ai + j + 2]!, x3 = a[ai + j + 3]!;
      const b0 = j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
      for (let l = 0; l < k; l++) c[ci + l] = c[ci + l]! + x0 * b[b0 + l]! + x1 * b[b1 + l]! + x2 * b[b2 + l]! + x3 * b[b3 + l]!;
    }
    for (; j < n; j++) {
      const x = a[ai + j]!, bj = j * k;
      for (let l = 0; l < k; l++) c[ci + l] = c[ci + l]! + x * b[bj + l]!;
    }
  }
  return c;
}

/** C [n, k] = Aᵀ · Y, A [m, n], Y [m, k]. Two rows of C per pass share the loads of Y's rows. */
function mulT(a: Float64Array, m: number, n: number, y: Float64Array, k: number): Float64Array {
  const c = new Float64Array(n * k);
  let i = 0;
  for (; i + 4 <= m; i += 4) {
    const a0 = i * n, a1 = a0 + n, a2 = a1 + n, a3 = a2 + n;
    const y0 = i * k, y1 = y0 + k, y2 = y1 + k, y3 = y2 + k;
    let j = 0;
    for (; j + 2 <= n; j += 2) {
      const x0 = a[a0 + j]!, x1 = a[a1 + j]!, x2 = a[a2 + j]!, x3 = a[a3 + j]!;
      const z0 = a[a0 + j + 1]!, z1 = a[a1 + j + 1]!, z2 = a[a2 + j + 1]!, z3 = a[a3 + j + 1]!;
      const cj = j * k, cz = cj + k;
      for (let l = 0; l < k; l++) {
        const v0 = y[y0 + l]!, v1 = y[y1 + l]!, v2 = y[y2 + l]!, v3 = y[y3 + l]!;
        c[cj + l] = c[cj + l]! + x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3;
        c[cz + l] = c[cz + l]! + z0 * v0 + z1 * v1 + z2 * v2 + z3 * v3;
      }
    }
    for (; j < n; j++) {
      const x0 = a[a0 + j]!, x1 = a[a1 + j]!, x2 = a[a2 + j]!, x3 = a[a3 + j]!;
      const cj = j * k;
      for (let l = 0; l < k; l++) c[cj + l] = c[cj + l]! + x0 * y[y0 + l]! + x1 * y[y1 + l]! + x2 * y[y2 + l]! + x3 * y[y3 + l]!;
    }
  }
  for (; i < m; i++) {
    const yi = i * k;
    for (let j = 0; j < n; j++) {
      const x = a[i * n + j]!, cj = j * k;
      for (let l = 0; l < k; l++) c[cj + l] = c[cj + l]! + x * y[yi + l]!;
    }
  }
  return c;
}

/** Σ x[a + i]·y[b + i] over i < n, in four interleaved partial sums (a fixed order; one add chain would wait on each add). */
function dotOf(x: Float64Array, a: number, y: Float64Array, b: number, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[a + i]! * y[b + i]!;
    s1 += x[a + i + 1]! * y[b + i + 1]!;
    s2 += x[a + i + 2]! * y[b + i + 2]!;
    s3 += x[a + i + 3]! * y[b + i + 3]!;
  }
  for (; i < n; i++) s0 += x[a + i]! * y[b + i]!;
  return (s0 + s1) + (s2 + s3);
}

/**
 * x[a + i] = x[a + i] − d·x[p + i] for i < n, then Σ x[a + i]·x[q + i] over the updated values
 * in dotOf's four partial sums (q may be a itself).
 */
function subtractThenDot(x: Float64Array, a: number, p: number, d: number, q: number, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
  for (; i + 4 <= n; i += 4) {
    const v0 = x[a + i]! - d * x[p + i]!, v1 = x[a + i + 1]! - d * x[p + i + 1]!;
    const v2 = x[a + i + 2]! - d * x[p + i + 2]!, v3 = x[a + i + 3]! - d * x[p + i + 3]!;
    x[a + i] = v0;
    x[a + i + 1] = v1;
    x[a + i + 2] = v2;
    x[a + i + 3] = v3;
    s0 += v0 * x[q + i]!;
    s1 += v1 * x[q + i + 1]!;
    s2 += v2 * x[q + i + 2]!;
    s3 += v3 * x[q + i + 3]!;
  }
  for (; i < n; i++) {
    const v = x[a + i]! - d * x[p + i]!;
    x[a + i] = v;
    s0 += v * x[q + i]!;
  }
  return (s0 + s1) + (s2 + s3);
}

/**
 * Orthonormalises the k columns of Y [m, k] in place (modified Gram–Schmidt, twice). Zero
 * columns stay zero. Works on Yᵀ so each column is contiguous.
 */
function orthonormalize(y: Float64Array, m: number, k: number): void {
  const t = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) t[c * m + i] = y[i * k + c]!;
  for (let pass = 0; pass < 2; pass++) {
    for (let c = 0; c < k; c++) {
      const tc = c * m;
      // Each projection's subtraction runs in one pass with the next dot product (of the
      // updated column with the next column, or with itself for the norm): the same
      // operations in the same order as subtracting, then calling dotOf, with one pass less.
      let dot = c > 0 ? dotOf(t, tc, t, 0, m) : 0;
      for (let p = 0; p < c; p++) dot = subtractThenDot(t, tc, p * m, dot, p + 1 < c ? (p + 1) * m : tc, m);
      const norm = Math.sqrt(c > 0 ? dot : dotOf(t, tc, t, tc, m));
      for (let i = 0; i < m; i++) t[tc + i] = norm > 1e-300 ? t[tc + i]! / norm : 0;
    }
  }
  for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) y[i * k + c] = t[c * m + i]!;
}

/** Eigen-decomposition of a symmetric k×k matrix (cyclic Jacobi): eigenvalues descending, eigenvectors as columns of V. */
export function symmetricEigen(a: Float64Array, k: number): { values: Float64Array; vectors: Float64Array } {
  const s = Float64Array.from(a);
  const v = new Float64Array(k * k);
  for (let i = 0; i < k; i++) v[i * k + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0, total = 0;
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) (i === j ? (total += s[i * k + j]! ** 2) : (off += s[i * k + j]! ** 2));
    if (off <= 1e-30 * (total + off) || off === 0) break;
    for (let p = 0; p < k - 1; p++) {
      for (let q = p + 1; q < k; q++) {
        const apq = s[p * k + q]!;
        if (apq === 0) continue;
        const theta = (s[q * k + q]! - s[p * k + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), sn = t * c;
        for (let r = 0; r < k; r++) {
          const srp = s[r * k + p]!, srq = s[r * k + q]!;
          s[r * k + p] = c * srp - sn * srq;
          s[r * k + q] = sn * srp + c * srq;
        }
        for (let r = 0; r < k; r++) {
          const spr = s[p * k + r]!, sqr = s[q * k + r]!;
          s[p * k + r] = c * spr - sn * sqr;
          s[q * k + r] = sn * spr + c * sqr;
        }
        for (let r = 0; r < k; r++) {
          const vrp = v[r * k + p]!, vrq = v[r * k + q]!;
          v[r * k + p] = c * vrp - sn * vrq;
          v[r * k + q] = sn * vrp + c * vrq;
        }
      }
    }
  }
  const order = Array.from({ length: k }, (_, i) => i).sort((x, y) => s[y * k + y]! - s[x * k + x]! || x - y);
  const values = Float64Array.from(order, (i) => s[i * k + i]!);
  const vectors = new Float64Array(k * k);
  order.forEach((src, dst) => { for (let r = 0; r < k; r++) vectors[r * k + dst] = v[r * k + src]!; });
  return { values, vectors };
}

export interface TruncatedSvd {
  rank: number;
  /** U [m, rank], S [rank] (descending), Vt [rank, n]. */
  u: Float64Array;
  s: Float64Array;
  vt: Float64Array;
}

export interface SvdOptions {
  oversample?: number;
  powerIterations?: number;
  seed?: number;
}

/** The rank-r truncated SVD of A [m, n] (row-major, double). */
export function truncatedSvd(a: Float64Array, m: number, n: number, rank: number, options: SvdOptions = {}): TruncatedSvd {
  const r = Math.max(1, Math.min(rank, m, n));
  const k = Math.min(r + (options.oversample ?? Math.max(8, r)), m, n);
  const random = gaussian(options.seed ?? 0x5eed);
  const omega = new Float64Array(n * k);
  for (let i = 0; i < omega.length; i++) omega[i] = random();
  let y = mul(a, m, n, omega, k); // [m, k]
  orthonormalize(y, m, k);
  for (let it = 0; it < (options.powerIterations ?? 2); it++) {
    const z = mulT(a, m, n, y, k); // [n, k]
    orthonormalize(z, n, k);
    y = mul(a, m, n, z, k);
    orthonormalize(y, m, k);
  }
  // B = Qᵀ A [k, n], computed as (Aᵀ Q)ᵀ
  const bt = mulT(a, m, n, y, k); // [n, k] = Bᵀ
  // B·Bᵀ [k, k]: each (i, j ≥ i) summed over c ascending from 0, row c of Bᵀ at a time
  // (contiguous reads), then mirrored.
  const bbt = new Float64Array(k * k);
  for (let c = 0; c < n; c++) {
    const row = c * k;
    for (let i = 0; i < k; i++) {
      const x = bt[row + i]!, bi = i * k;
      for (let j = i; j < k; j++) bbt[bi + j] = bbt[bi + j]! + x * bt[row + j]!;
    }
  }
  for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) bbt[j * k + i] = bbt[i * k + j]!;
  const { values, vectors } = symmetricEigen(bbt, k);
  const s = new Float64Array(r), u = new Float64Array(m * r), vt = new Float64Array(r * n);
  for (let c = 0; c < r; c++) s[c] = Math.sqrt(Math.max(0, values[c]!));
  // U[:, c] = Q · W[:, c]; Vt[c, :] = W[:, c]ᵀ · B / σ: each sum over l ascending, row by row
  // (W's rows contiguous) instead of column by column.
  for (let i = 0; i < m; i++) {
    const ui = i * r;
    for (let l = 0; l < k; l++) {
      const q = y[i * k + l]!, wl = l * k;
      for (let c = 0; c < r; c++) u[ui + c] = u[ui + c]! + q * vectors[wl + c]!;
    }
  }
  const row = new Float64Array(r);
  for (let j = 0; j < n; j++) {
    row.fill(0);
    for (let l = 0; l < k; l++) {
      const b = bt[j * k + l]!, wl = l * k;
      for (let c = 0; c < r; c++) row[c] = row[c]! + vectors[wl + c]! * b;
    }
    for (let c = 0; c < r; c++) if (s[c]! > 0) vt[c * n + j] = row[c]! / s[c]!;
  }
  return { rank: r, u, s, vt };
}
