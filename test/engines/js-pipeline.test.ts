/**
 * The TS engine's chunk pipeline (lib/engine/js-chunks.ts): tensors ending just before, on and
 * just after chunk boundaries, mixed with small ones, merged with 1, 2 and 3 worker threads,
 * must give the native engine's bytes (an independent implementation) and, for add difference
 * to fp32, the formula written out here. Per-tensor statistics are computed once per tensor
 * whatever the thread count (issue 11), counted by the engine's `computedStats`; no buffer set's
 * heap ever grows (`heapGrowths`: js-chunks.ts regionsBound sized them up front). And the two
 * shortcuts the pipeline takes: writing an op's rounded bytes as they are (narrowing a
 * widened narrowing result gives it back), and the batched pow product (powProductF32Array = powProductF32).
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as engine from "../../lib/engine";
import { JS_CHUNK_ELEMENTS } from "../../lib/engine/js-chunks";
import { countNonFinite } from "../../lib/engine/js-codec";
import { narrowBf16, narrowF16, narrowF8, widenBf16, widenF16, widenF8 } from "../../lib/engine/conversions";
import { powF32, powProductF32, powProductF32Array } from "../../lib/engine/det-math";
import { merge } from "../../lib/merge";
import type { Job, JobResult } from "../../lib/native/job";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";

const CHUNK = JS_CHUNK_ELEMENTS;
const LENGTHS = [CHUNK - 1, 7, CHUNK, 1, CHUNK + 1, 2 * CHUNK + 3];

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
}

/** fp32 and fp16 tensors at the chunk-boundary lengths, then one fp8 tensor of random codes. */
function buildModel(path: string, seed: number): void {
  const tensors: Record<string, TestTensor> = {};
  LENGTHS.forEach((n, i) => {
    tensors[`model.diffusion_model.input_blocks.${i}.0.weight`] = { dtype: i % 2 ? "F16" : "F32", shape: [n], values: randomValues(n, seed + i, true) };
  });
  const next = lcg(seed);
  tensors["model.diffusion_model.out.2.weight"] = { dtype: "F8_E4M3", shape: [CHUNK + 5], raw: Uint8Array.from({ length: CHUNK + 5 }, () => next() >>> 24) };
  writeModel(path, tensors);
}

/** Runs `f` with the engine's JobResults and Jobs recorded (runJob is looked up at call time). */
async function recording<T>(f: () => Promise<T>): Promise<{ value: T; runs: { job: Job; result: JobResult }[] }> {
  const mod = engine as unknown as { runJob: (job: Job, e: "native" | "js") => Promise<JobResult> };
  const original = mod.runJob;
  const runs: { job: Job; result: JobResult }[] = [];
  mod.runJob = async (job, e) => {
    const result = await original(job, e);
    runs.push({ job, result });
    return result;
  };
  try {
    return { value: await f(), runs };
  } finally {
    mod.runJob = original;
  }
}

/**
 * Byte-identical outputs but for elements that are NaN in both: an operation on two NaNs (or
 * Inf − Inf) returns a NaN whose sign and payload are up to the JIT tier and the compiler (see
 * parity.test.ts), so two threads, or two engines, may store different NaN codes there.
 */
function assertSameButNaN(pathX: string, pathY: string, label: string): void {
  const x = readFileSync(pathX), y = readFileSync(pathY);
  assert.equal(x.length, y.length, label);
  if (x.equals(y)) return;
  const tx = readModel(pathX).tensors, ty = readModel(pathY).tensors;
  const isNaN = (b: Buffer, size: number): boolean => (size === 4 ? Number.isNaN(b.readFloatLE(0)) : size === 2 ? (b.readUInt16LE(0) & 0x7fff) > 0x7c00 : (b[0]! & 0x7f) === 0x7f);
  for (const [name, t] of tx) {
    const u = ty.get(name)!;
    const size = t.bytes.length / Math.max(1, t.shape.reduce((p, q) => p * q, 1));
    const tb = Buffer.from(t.bytes), ub = Buffer.from(u.bytes);
    for (let i = 0; i * size < tb.length; i++) {
      const xb = tb.subarray(i * size, (i + 1) * size), yb = ub.subarray(i * size, (i + 1) * size);
      if (!xb.equals(yb) && !(isNaN(xb, size) && isNaN(yb, size))) assert.fail(`${label}: ${name}[${i}] differs`);
    }
  }
}

describe("TS engine pipeline: chunk boundaries, thread counts, shared statistics", function () {
  this.timeout(600_000);
  const dir = tempDir("tm-js-pipeline-");
  after(() => dir.cleanup());
  const paths = ["a", "b", "c"].map((m) => join(dir.path, `${m}.safetensors`));
  before(() => paths.forEach((p, i) => buildModel(p, 1000 * (i + 1))));

  const cases = [
    { method: "add-difference", dtype: "fp32" },
    { method: "add-difference", dtype: "fp16" },
    { method: "add-difference", dtype: "same" },
    { method: "multiply-difference", dtype: "fp16", beta: 0.4 },
    { method: "train-difference", dtype: "fp8-e4m3" },
  ] as const;
  for (const c of cases) {
    it(`${c.method} → ${c.dtype}: threads 1, 2 and 3 give the same bytes${ENGINES.includes("native") ? " as the native engine" : ""}`, async () => {
      const outs: string[] = [];
      for (const threads of [1, 2, 3]) {
        const out = join(dir.path, `${c.method}-${c.dtype}-js-${threads}.safetensors`);
        const { runs } = await recording(() => merge({ recipeMetadata: false, a: paths[0]!, b: paths[1]!, c: paths[2]!, method: c.method, multiplier: 0.7, ...("beta" in c ? { beta: c.beta } : {}), dtype: c.dtype, out, engine: "js", threads }));
        assert.equal(runs[0]!.result.stats?.heapGrowths, 0, `threads ${threads}: regionsBound made every buffer set's heap big enough`);
        outs.push(out);
      }
      assertSameButNaN(outs[1]!, outs[0]!, "threads 2 vs 1");
      assertSameButNaN(outs[2]!, outs[0]!, "threads 3 vs 1");
      if (ENGINES.includes("native")) {
        const out = join(dir.path, `${c.method}-${c.dtype}-native.safetensors`);
        await merge({ recipeMetadata: false, a: paths[0]!, b: paths[1]!, c: paths[2]!, method: c.method, multiplier: 0.7, ...("beta" in c ? { beta: c.beta } : {}), dtype: c.dtype, out, engine: "native", threads: 2 });
        assertSameButNaN(out, outs[0]!, "the native engine");
      }
      if (c.method === "add-difference" && c.dtype === "fp32") {
        // R = A + (B − C)·M in fp32, one rounding per operation, for the fp32 tensors
        const f = Math.fround, m = f(0.7);
        const t = [0, 1, 2].map((i) => readModel(paths[i]!).tensors);
        const r = readModel(outs[2]!).tensors;
        for (const i of [0, 2, 4]) {
          const name = `model.diffusion_model.input_blocks.${i}.0.weight`;
          const [a, b, cc] = t.map((x) => new Float32Array(new Uint8Array(x.get(name)!.bytes).slice().buffer));
          const got = new Float32Array(new Uint8Array(r.get(name)!.bytes).slice().buffer);
          assert.equal(got.length, LENGTHS[i]);
          for (let e = 0; e < got.length; e++) {
            const want = f(a![e]! + f(f(b![e]! - cc![e]!) * m));
            if (!Object.is(got[e], want) && !(Number.isNaN(got[e]!) && Number.isNaN(want))) assert.fail(`${name}[${e}]: ${got[e]} ≠ ${want}`);
          }
        }
      }
    });
  }

  for (const c of [{ method: "ties", params: { density: 0.3 } }, { method: "slerp" }] as const) {
    it(`${c.method}: each tensor's statistics computed once with threads 1, 2 and 3, and the same bytes`, async () => {
      const outs: Buffer[] = [];
      for (const threads of [1, 2, 3]) {
        const out = join(dir.path, `${c.method}-js-${threads}.safetensors`);
        const inputs = c.method === "ties" ? { base: paths[0]!, models: [paths[1]!, paths[2]!], params: c.params } : { a: paths[0]!, b: paths[1]!, multiplier: 0.4 };
        const { runs } = await recording(() => merge({ recipeMetadata: false, ...inputs, method: c.method, dtype: "fp16", out, engine: "js", threads } as never));
        assert.equal(runs.length, 1);
        const withStats = runs[0]!.job.pieces.filter((p) => p.reductions?.length).length;
        assert.ok(runs[0]!.job.pieces.some((p) => p.reductions?.length && p.n > CHUNK), "a multi-chunk tensor has statistics");
        assert.equal(runs[0]!.result.stats?.computedStats, withStats, `threads ${threads}: one computation per tensor`);
        assert.equal(runs[0]!.result.stats?.heapGrowths, 0, `threads ${threads}: regionsBound made every buffer set's heap big enough`);
        outs.push(readFileSync(out));
      }
      assert.ok(outs[1]!.equals(outs[0]!) && outs[2]!.equals(outs[0]!), "same bytes for threads 1, 2, 3");
      if (ENGINES.includes("native")) {
        const out = join(dir.path, `${c.method}-native.safetensors`);
        const inputs = c.method === "ties" ? { base: paths[0]!, models: [paths[1]!, paths[2]!], params: c.params } : { a: paths[0]!, b: paths[1]!, multiplier: 0.4 };
        await merge({ recipeMetadata: false, ...inputs, method: c.method, dtype: "fp16", out, engine: "native", threads: 2 } as never);
        assert.ok(readFileSync(out).equals(outs[0]!), "native engine");
      }
    });
  }
});

describe("TS engine pipeline shortcuts", () => {
  it("narrowing a widened narrowing result gives it back (fp16, bf16, fp8), so rounded op bytes are written as they are", () => {
    const next = lcg(77);
    const n = 1 << 18;
    // every 16-bit pattern in the high half (all fp16/bf16/fp8 ranges, NaN payloads), random low halves
    const src = Uint32Array.from({ length: n }, (_, i) => ((((i & 0xffff) << 16) | (next() & (i < 65536 ? 0 : 0xffff))) >>> 0));
    const cases = [
      { name: "F16", codes: new Uint16Array(n), narrow: (d: Uint16Array) => narrowF16(src, d, n), widen: (c: Uint16Array, w: Uint32Array) => widenF16(c, w, n), again: (w: Uint32Array, d: Uint16Array) => narrowF16(w, d, n) },
      { name: "BF16", codes: new Uint16Array(n), narrow: (d: Uint16Array) => narrowBf16(src, d, n), widen: (c: Uint16Array, w: Uint32Array) => widenBf16(c, w, n), again: (w: Uint32Array, d: Uint16Array) => narrowBf16(w, d, n) },
    ];
    for (const c of cases) {
      c.narrow(c.codes);
      const wide = new Uint32Array(n), back = new Uint16Array(n);
      c.widen(c.codes, wide);
      c.again(wide, back);
      for (let i = 0; i < n; i++) if (back[i] !== c.codes[i]) assert.fail(`${c.name}: ${c.codes[i]!.toString(16)} came back as ${back[i]!.toString(16)}`);
    }
    for (const dtype of ["F8_E4M3", "F8_E5M2"] as const) {
      const codes = new Uint8Array(n), wide = new Uint32Array(n), back = new Uint8Array(n);
      narrowF8(src, codes, n, dtype);
      widenF8(codes, wide, n, dtype);
      narrowF8(wide, back, n, dtype);
      for (let i = 0; i < n; i++) if (back[i] !== codes[i]) assert.fail(`${dtype}: ${codes[i]!.toString(16)} came back as ${back[i]!.toString(16)}`);
    }
  });

  it("powProductF32Array gives powProductF32's bits for every element (specials, subnormals, all exponent signs)", () => {
    const n = 1 << 19;
    const x1 = new Float32Array(n), x2 = new Float32Array(n), b1 = new Uint32Array(x1.buffer), b2 = new Uint32Array(x2.buffer);
    const next = lcg(5);
    for (let i = 0; i < n; i++) {
      b1[i] = i % 3 === 0 ? next() : next() & 0x7fffffff;
      b2[i] = i % 5 === 0 ? next() : next() & 0x7fffffff;
    }
    x1.set([0, -0, Infinity, -Infinity, NaN, 1, -1, 1e-45, 3.4028234663852886e38, 0.5, 2, 0], 0);
    x2.set([0.5, 2, 0, NaN, 1, 1e-45, Infinity, 0, 7, 1, 3.4028234663852886e38, 0], 0);
    x1.fill(0, 100, 200); // A = C runs (the zero shortcut), with B = C inside one of them
    x2.fill(0, 150, 400);
    const out = new Float32Array(n);
    const ys = [0, -0, 0.3, 0.7, 1, 2, -0.5, -3, 1e-3, NaN, Infinity, -Infinity].map(Math.fround);
    // (1 − α, α) for α in [0, 1] (no clamp, the zero shortcut), then mixed pairs of everything
    const pairs: [number, number][] = [[0.7, 0.3], [0.3, 0.7], [1, 0], [0, 1], [0.5, 0.5], [0.999, 0.001]].map(([a, b]) => [Math.fround(a!), Math.fround(b!)]);
    for (let k = 0; k < ys.length; k++) pairs.push([ys[k]!, ys[(k * 7 + 3) % ys.length]!]);
    for (const [y1, y2] of pairs) {
      powProductF32Array(x1, y1, x2, y2, out, n);
      for (let i = 0; i < n; i++) {
        const want = powProductF32(x1[i]!, y1, x2[i]!, y2);
        if (!Object.is(out[i], want) && !(Number.isNaN(want) && Number.isNaN(out[i]!))) assert.fail(`pow(${x1[i]}, ${y1})·pow(${x2[i]}, ${y2}): ${out[i]} ≠ ${want}`);
      }
      // one operand: powF32
      powProductF32Array(x1, y1, new Float32Array(n).fill(1), 1, out, n);
      for (let i = 0; i < 4096; i++) {
        const want = powF32(x1[i]!, y1);
        if (!Object.is(out[i], want) && !(Number.isNaN(want) && Number.isNaN(out[i]!))) assert.fail(`pow(${x1[i]}, ${y1}): ${out[i]} ≠ ${want}`);
      }
    }
  });

  it("counts non-finite fp16, bf16 and fp8 values as the per-element rule does (words skipped four or two codes at a time)", () => {
    // the rule, one element at a time: NaN above the infinity code, infinity at it (e4m3fn: only NaN at S.1111.111)
    const rule = (bytes: Uint8Array, n: number, dtype: string, src?: Float32Array): [number, number] => {
      let nan = 0, inf = 0;
      for (let i = 0; i < n; i++) {
        if (src && !Number.isFinite(src[i]!)) continue;
        const a = dtype.startsWith("F8") ? bytes[i]! & 0x7f : (bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) & 0x7fff;
        const infCode = dtype === "F16" ? 0x7c00 : dtype === "BF16" ? 0x7f80 : dtype === "F8_E5M2" ? 0x7c : 0x100;
        if (dtype === "F8_E4M3" ? a === 0x7f : a > infCode) nan++;
        else if (a === infCode) inf++;
      }
      return [nan, inf];
    };
    const next = lcg(11);
    for (const dtype of ["F16", "BF16", "F8_E5M2", "F8_E4M3"] as const) {
      for (const n of [0, 1, 2, 3, 4, 5, 7, 8, 1001, 65539]) {
        for (const withSource of [false, true]) {
          const size = dtype.startsWith("F8") ? 1 : 2;
          const bytes = new Uint8Array(new ArrayBuffer(n * size + 8));
          // many codes near the non-finite ones: every high byte gets 0x7c OR-ed in a third of the time
          for (let i = 0; i < n * size; i++) bytes[i] = (next() >>> 24) | (next() % 3 === 0 ? 0x7c : 0);
          const src = withSource ? Float32Array.from({ length: n }, () => [Infinity, NaN, 1, -2, 0][next() % 5]!) : undefined;
          const count = { nan: 0, inf: 0 };
          countNonFinite(bytes, n, dtype, count, src);
          assert.deepEqual([count.nan, count.inf], rule(bytes, n, dtype, src), `${dtype} n=${n} source=${withSource}`);
        }
      }
    }
  });
});
