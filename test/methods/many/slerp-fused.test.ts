/**
 * The fused SLERP store of the output pass (native/core/slerp_fused.h): at AVX-512 and AVX2, a write
 * that stores one SLERP op of F32 or F16 inputs as fp16 combines, canonicalises, narrows and stores
 * in registers (non-temporal 64-byte lines where the destination is 2-byte aligned), and takes the
 * NaN / infinity test from the narrowed lanes, where the slots' path writes an fp32 slot, narrows it
 * with store_f16 and reads the window back to count. The output must be the TS engine's bytes (an
 * independent implementation) and NaN / infinity counts, at every ISA, threads, 1 MiB windows,
 * buffered reads and with the fused path off (TENSORMERGE_SLERP_FUSED=0), for both SLERP variants,
 * t inside and outside [0, 1], tensors whose length mod 32 is 0, 1, 7, 15, 16, 17, 31 (the line
 * loop, the 16- or 8-lane loop, the scalar tail), tensors starting at odd, even unaligned and
 * 64-byte aligned output addresses (the head, and no line stores at all), and fp32 inputs with
 * ±qNaN, ±sNaN, ±inf, fp32 subnormals, ±0, values that overflow fp16 or round to its subnormals,
 * and fp16 inputs with fp16's specials. The engine's counter says which writes took the fused
 * store: every SLERP element → fp16 at AVX2 / AVX-512, none at the scalar ISA, with the knob off,
 * or for an fp32 or bf16 output.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, captureEngineStats, setOnlyTuningKnobs } from "../../helpers/engines";
import { encodeValues, readModel, tempDir, writeModel, type TestTensor } from "../../helpers/models";
import { F16_SPECIALS, writeHalfFamily } from "./fixtures";

const key = (block: number, name: string) => `model.diffusion_model.input_blocks.${block}.1.${name}.weight`;
// Element counts mod 32: 0, 7, 1, 15, 31, 16, 17, 1 (key order is the file order; the U8 tensors of 3
// and 1 bytes between them move the tensors after the first to odd, after the second to even but
// unaligned output addresses).
const F32_SIZES: [string, number][] = [
  [key(1, "proj_in"), 4096 * 12],
  [key(1, "proj_out"), 1031],
  [key(2, "proj_in"), 32 * 100 + 1],
  [key(2, "proj_out"), 32 * 50 + 15],
  [key(4, "proj_in"), 32 * 70 + 31],
  [key(4, "proj_out"), 16],
  [key(5, "proj_in"), 17],
  [key(5, "proj_out"), 1],
];
const ODD = "model.diffusion_model.input_blocks.3.0.odd_u8", ODD2 = "model.diffusion_model.input_blocks.3.0.odd2_u8";
const SPECIALS_KEY = key(2, "proj_in"); // the tensor holding the specials (others keep SLERP's real angle)
const F32_TOTAL = F32_SIZES.reduce((s, [, n]) => s + n, 0);

/** fp32 bit patterns written over elements of SPECIALS_KEY: ±qNaN, ±sNaN, ±inf, subnormals, ±0. */
const F32_SPECIAL_BITS = [0x7fc00000, 0xffc00000, 0x7f800001, 0xffa00001, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff, 0x00000000, 0x80000000];
/** fp32 values at the edges of fp16: its max, the last value rounding to it, the tie and beyond (inf), subnormals, the tie at half the least subnormal. */
const F32_EDGE_VALUES = [65504, 65519.996, 65520, -70000, 1e-5, 6.1e-5, 5.9604645e-8, 2.9802322e-8, -2.9802326e-8, 3e-8];

function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
}

/** Model m's fp32 bytes for a tensor: values of mixed magnitudes (1e-9 .. 1e4), B a perturbed A; the specials tensor gets the patterns above. */
function f32Bytes(n: number, seed: number, m: number, specials: boolean): Uint8Array {
  const base = uniform(seed), own = uniform(seed * 31 + m + 1);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = (base() - 0.5) * Math.pow(10, Math.floor(base() * 14) - 9);
    values[i] = m === 0 ? v : v * (0.6 + own()) + (own() - 0.5) * 1e-3;
  }
  const bytes = encodeValues("F32", values);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (specials) {
    const next = uniform(seed + 17 * m);
    for (let i = 0; i < n; i++) {
      const r = next();
      if (r < 0.01) view.setUint32(4 * i, F32_SPECIAL_BITS[Math.floor(next() * F32_SPECIAL_BITS.length)]!, true);
      else if (r < 0.03) view.setFloat32(4 * i, F32_EDGE_VALUES[Math.floor(next() * F32_EDGE_VALUES.length)]!, true);
    }
  }
  return bytes;
}

function writeF32Pair(dir: string): string[] {
  return [0, 1].map((m) => {
    const tensors: Record<string, TestTensor> = {};
    F32_SIZES.forEach(([k, n], t) => {
      tensors[k] = { dtype: "F32", shape: [n], raw: f32Bytes(n, 100 + t, m, k === SPECIALS_KEY) };
      if (t === 1) tensors[ODD] = { dtype: "U8", shape: [3], values: [1, 2, 3] };
      if (t === 3) tensors[ODD2] = { dtype: "U8", shape: [1], values: [4] };
    });
    const p = join(dir, `f32-${m}.safetensors`);
    writeModel(p, tensors);
    return p;
  });
}

/** Output byte address mod 64 of each tensor's first byte (the window buffers are aligned to the file's offsets). */
function startsMod64(path: string): Map<string, number> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
  return new Map(Object.entries(header).filter(([k]) => k !== "__metadata__").map(([k, e]) => [k, (8 + n + e.data_offsets[0]) % 64]));
}

const F16_SIZES: Record<string, number> = { [key(1, "proj_in")]: 4096 * 9, [key(2, "proj_in")]: 32 * 40 + 17, [key(4, "proj_in")]: 1031 };
const F16_TOTAL = Object.values(F16_SIZES).reduce((a, b) => a + b, 0);

describe("many-model methods: the fused SLERP store of the output pass (AVX-512 / AVX2, F32 / F16 → F16)", function () {
  this.timeout(600000);
  let dir: ReturnType<typeof tempDir>;
  let f32: string[] = [];
  let f16: string[] = [];
  const capture = captureEngineStats();
  before(() => {
    dir = tempDir("tm-slerp-fused-");
    capture.install();
    f32 = writeF32Pair(dir.path);
    f16 = writeHalfFamily(dir.path, F16_SIZES, 1);
  });
  after(() => {
    capture.restore();
    dir.cleanup();
  });

  const isas = () => ["scalar", "avx2", "avx512"].filter((isa) => capabilities().isas.includes(isa as never));

  /** Native runs of `options` against the TS engine's bytes and counts; `fusedElements`: what the fused store writes where it may run. */
  async function check(name: string, options: Record<string, unknown>, keys: string[], fusedElements: number) {
    const js = join(dir.path, `${name}-js.safetensors`);
    const jsReport = (await merge({ ...options, recipeMetadata: false, engine: "js", threads: 1, out: js } as never)) as { nonFinite: { nan: number; inf: number }[] };
    const expected = readModel(js).tensors;
    const runs: { isa: string; threads: number; knobs: Record<string, string> }[] = isas().map((isa) => ({ isa, threads: 2, knobs: {} }));
    for (const top of isas().filter((isa) => isa !== "scalar"))
      runs.push(
        { isa: top, threads: 1, knobs: { TENSORMERGE_WINDOW_MIB: "1" } },
        { isa: top, threads: 2, knobs: { TENSORMERGE_SLERP_FUSED: "0" } },
        { isa: top, threads: 2, knobs: { TENSORMERGE_BUFFERED_READS: "1", TENSORMERGE_WINDOW_MIB: "1" } },
      );
    for (const r of runs) {
      const restore = setOnlyTuningKnobs(r.knobs);
      try {
        const out = join(dir.path, `${name}-${r.isa}-${r.threads}-${Object.keys(r.knobs).join("-")}.safetensors`);
        capture.reset();
        const report = (await merge({ ...options, recipeMetadata: false, engine: "native", isa: r.isa, threads: r.threads, out } as never)) as { nonFinite: { nan: number; inf: number }[] };
        const label = `${name}: isa ${r.isa}, threads ${r.threads}, knobs ${JSON.stringify(r.knobs)}`;
        const got = readModel(out).tensors;
        for (const k of keys) assert.ok(Buffer.from(got.get(k)!.bytes).equals(Buffer.from(expected.get(k)!.bytes)), `${k} (${label}): not the TS engine's bytes`);
        const counts = (x: { nonFinite: { nan: number; inf: number }[] }) => x.nonFinite.map(({ nan, inf }) => ({ nan, inf }));
        assert.deepEqual(counts(report), counts(jsReport), `${label}: NaN / infinity counts`);
        const want = r.isa !== "scalar" && r.knobs.TENSORMERGE_SLERP_FUSED !== "0" ? fusedElements : 0;
        assert.equal(capture.last()?.slerpFusedElements, want, `${label}: elements written by the fused SLERP store`);
      } finally {
        restore();
      }
    }
    return jsReport;
  }

  const f32Keys = F32_SIZES.map(([k]) => k);

  it("SLERP of fp32 models → fp16, both variants, t 0.4 and 1.3: the TS engine's bytes and counts at every ISA, threads, windows, reads, knob off", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    for (const method of ["slerp", "slerp-mecha"])
      for (const t of [0.4, 1.3]) {
        const report = await check(`${method}-${t}`, { method, multiplier: t, a: f32[0], b: f32[1], dtype: "fp16" }, f32Keys, F32_TOTAL);
        assert.ok(report.nonFinite[0]!.nan > 0 && report.nonFinite[0]!.inf > 0, `${method} t=${t}: the specials give NaNs and infinities (the count's path)`);
      }
    // The layout covers the three store paths: odd starts (no line stores), even unaligned (a head), aligned.
    const starts = [...startsMod64(join(dir.path, "slerp-0.4-js.safetensors")).entries()].filter(([k]) => f32Keys.includes(k)).map(([, s]) => s);
    assert.ok(starts.some((s) => s % 2 === 1), `an odd output start (${starts})`);
    assert.ok(starts.some((s) => s % 2 === 0 && s !== 0), `an even unaligned output start (${starts})`);
  });

  it("SLERP of fp16 models (fp16 NaNs, infinities, subnormals in every input) → fp16", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    assert.ok(F16_SPECIALS.length > 0);
    for (const method of ["slerp", "slerp-mecha"]) await check(`f16-${method}`, { method, multiplier: 0.7, a: f16[0], b: f16[1], dtype: "fp16" }, Object.keys(F16_SIZES), F16_TOTAL);
  });

  it("not fused: SLERP to fp32 and to bf16 (the slots' path, the same bytes as the TS engine)", async function () {
    if (!ENGINES.includes("native") || !ENGINES.includes("js")) this.skip();
    await check("f32-out", { method: "slerp", multiplier: 0.4, a: f32[0], b: f32[1], dtype: "fp32" }, f32Keys, 0);
    await check("bf16-out", { method: "slerp-mecha", multiplier: 0.4, a: f32[0], b: f32[1], dtype: "bf16" }, f32Keys, 0);
  });
});
