/**
 * The native engine's fp8 pair tables (native/core/pair_table.h: a write of weighted sum or lerp
 * of two fp8 inputs becomes one lookup per element in a table of its 65,536 results):
 * - against the formula written out (helpers.ts refLoad / refKernel / refRound / refStore), over
 *   every pair of codes, for two weighted-sum multipliers and lerp, e4m3 / e5m2 / mixed inputs,
 *   fp8, fp16, bf16 and fp32 outputs, on every kernel set the CPU has (scalar included);
 * - against the same engine with the tables turned off (TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS):
 *   the same bytes, NaN payloads included, and the same non-finite counts;
 * - against the TS engine (its own pair tables for fp8 -> fp8, its generic path otherwise);
 * - at tensor sizes around the table threshold (the elements of the writes sharing one table).
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import { runJob } from "../../lib/engine";
import type { JobPiece, Operand } from "../../lib/native/job";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import { setEngineKnobs } from "../helpers/engines";
import { DT, KERNEL, SIZE, compareElement, isNaNAt, layout, makeJob, refKernel, refLoad, refRound, refStore, rng, tempDir, type RefBytes } from "./helpers";

const PAIRS = 65536;
/** Every pair of codes, then random ones: the random tail is not a multiple of any vector width. */
const N = PAIRS + 5_003;
/** Each case below is a table of its own: its elements alone must reach the threshold. */
const THRESHOLD = { TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: String(N) };

/** Codes of the two inputs: element i < 65536 is the pair (i >> 8, i & 255). */
function codes(which: 0 | 1, n: number, seed: number): Uint8Array {
  const next = rng(seed);
  return Uint8Array.from({ length: n }, (_, i) => (i < PAIRS ? (which === 0 ? i >>> 8 : i & 255) : Math.floor(next() * 256)));
}

interface PairCase {
  piece: JobPiece;
  /** Expected bytes per pair of codes (a << 8) | b. */
  byPair: RefBytes[];
  outDtype: number;
  a: Uint8Array;
  b: Uint8Array;
}

// weighted sum (1 − α)·A + α·B for α = 0.4 and 0.3 (the planner's fp32 parameters), lerp A + (B − A)·w
const OPS: [string, number, number[]][] = [
  ["ws0.4", KERNEL.weightedSum, [Math.fround(1 - 0.4), Math.fround(0.4)]],
  ["ws0.3", KERNEL.weightedSum, [Math.fround(1 - 0.3), Math.fround(0.3)]],
  ["lerp", KERNEL.lerp, [Math.fround(0.3 * 0.3 * (3 - 2 * 0.3))]],
];
const INPUTS: [number, number][] = [[DT.F8_E4M3, DT.F8_E4M3], [DT.F8_E5M2, DT.F8_E5M2], [DT.F8_E4M3, DT.F8_E5M2]];
/** [op rounding, write dtype]: rounded and stored in one dtype, stored only, rounded then converted. */
const STORES: [number, number][] = [[DT.F8_E4M3, DT.F8_E4M3], [DT.F8_E5M2, DT.F8_E5M2], [DT.F16, DT.F16], [DT.F32, DT.F8_E4M3], [DT.F8_E4M3, DT.BF16], [DT.F32, DT.F32]];

/** The pieces over inputs at aOffset / bOffset (n elements each), packed into one output. */
function buildCases(aOffset: number, bOffset: number, a: Uint8Array, b: Uint8Array, n: number, ops = OPS, inputs = INPUTS, stores = STORES): { cases: PairCase[]; size: number } {
  const cases: PairCase[] = [];
  let pos = 7;
  for (const [label, kernel, params] of ops) for (const [da, db] of inputs) for (const [round, outDtype] of stores) {
    const args: Operand[] = [{ kind: "input", file: 0, offset: aOffset, dtype: da }, { kind: "input", file: 0, offset: bOffset, dtype: db }];
    const byPair: RefBytes[] = [];
    for (let c = 0; c < PAIRS; c++) {
      const refs = [refLoad(Uint8Array.of(c >>> 8), 0, da), refLoad(Uint8Array.of(c & 255), 0, db)];
      byPair.push(refStore(refRound(refKernel(kernel, refs, params), round), outDtype));
    }
    cases.push({
      piece: { name: `${label}.${da}-${db}.r${round}.o${outDtype}.n${n}`, n, ops: [{ kernel, args, params, round }], writes: [{ output: 0, offset: pos, dtype: outDtype, source: { kind: "op", index: 0 } }] },
      byPair, outDtype, a, b,
    });
    pos += n * SIZE[outDtype]! + 3;
  }
  return { cases, size: pos + 1 };
}

const isInfAt = (buf: Uint8Array, at: number, dtype: number): boolean => {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  switch (dtype) {
    case DT.F8_E5M2: return (buf[at]! & 0x7f) === 0x7c;
    case DT.F16: return (v.getUint16(at, true) & 0x7fff) === 0x7c00;
    case DT.BF16: return (v.getUint16(at, true) & 0x7fff) === 0x7f80;
    case DT.F32: return (v.getUint32(at, true) & 0x7fffffff) === 0x7f800000;
    default: return false; // e4m3fn has no infinity
  }
};

/** Checks every element against the formula; returns the NaNs and infinities the formula gives. */
function check(out: Uint8Array, cases: PairCase[], label: string): { nan: number; inf: number } {
  const errors: string[] = [];
  let nan = 0, inf = 0;
  for (const c of cases) {
    const w = c.piece.writes[0]!;
    const size = SIZE[c.outDtype]!;
    for (let i = 0; i < c.piece.n; i++) {
      const want = c.byPair[(c.a[i]! << 8) | c.b[i]!]!;
      const err = compareElement(out, w.offset + i * size, c.outDtype, want);
      if (err && errors.length < 10) errors.push(`${label} ${c.piece.name}[${i}] codes (0x${c.a[i]!.toString(16)}, 0x${c.b[i]!.toString(16)}): ${err}`);
      const bytes = Uint8Array.from(want.bytes);
      if (want.looseNaN || isNaNAt(bytes, 0, c.outDtype)) nan++;
      else if (isInfAt(bytes, 0, c.outDtype)) inf++;
    }
  }
  assert.deepEqual(errors, []);
  return { nan, inf };
}

/** The same bytes but where both hold a NaN the formula makes from arithmetic (its payload is the engine's). */
function sameButLooseNaN(x: Uint8Array, y: Uint8Array, cases: PairCase[], label: string): void {
  assert.equal(x.length, y.length);
  for (const c of cases) {
    const w = c.piece.writes[0]!;
    const size = SIZE[c.outDtype]!;
    for (let i = 0; i < c.piece.n; i++) {
      const at = w.offset + i * size;
      if (c.byPair[(c.a[i]! << 8) | c.b[i]!]!.looseNaN && isNaNAt(x, at, c.outDtype) && isNaNAt(y, at, c.outDtype)) continue;
      if (!Buffer.from(x.subarray(at, at + size)).equals(y.subarray(at, at + size))) assert.fail(`${label} ${c.piece.name}[${i}] differs`);
    }
  }
}

describe("native fp8 pair tables", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-pair-");
  const inPath = dir.file("in.bin");
  const a = codes(0, N, 11), b = codes(1, N, 12);
  const { image, offsets } = layout([a, b]);
  let built: { cases: PairCase[]; size: number };
  before(() => {
    writeFileSync(inPath, image);
    built = buildCases(offsets[0]!, offsets[1]!, a, b, N);
  });
  after(() => dir.cleanup());

  const run = async (cases: PairCase[], size: number, out: string, isa: "scalar" | "avx2" | "avx512" | "auto", knobs: Record<string, string | undefined> = {}, engine: "native" | "js" = "native") => {
    const restore = setEngineKnobs({ TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: undefined, ...knobs });
    try {
      const job = makeJob({ inputs: [{ path: inPath, size: image.length }], outputs: [{ path: out, size, literals: [] }], pieces: cases.map((c) => c.piece), isa });
      const result = engine === "native" ? await runNativeJob(job) : await runJob(job, "js");
      return { result, bytes: readFileSync(out) };
    } finally {
      restore();
    }
  };

  const tabled = new Map<string, { bytes: Buffer; nonFinite: { nan: number; inf: number } }>();
  for (const isa of ["scalar", "avx2", "avx512"] as const) {
    it(`${isa}: every pair of codes gives the formula's bytes, and the same bytes and counts as the generic path`, async function () {
      if (!capabilities().isas.includes(isa)) this.skip();
      const withTables = await run(built.cases, built.size, dir.file(`t-${isa}.bin`), isa, THRESHOLD);
      assert.equal(withTables.result.isa, isa);
      assert.equal(withTables.result.stats!.pairTables, built.cases.length, "one table per (kernel, parameters, dtypes)");
      const counts = check(withTables.bytes, built.cases, isa);
      assert.ok(counts.nan > 0 && counts.inf > 0, "the cases make NaNs and infinities");
      assert.deepEqual(withTables.result.nonFinite, [counts]);
      const generic = await run(built.cases, built.size, dir.file(`g-${isa}.bin`), isa, { TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: String(2 ** 52) });
      assert.equal(generic.result.stats!.pairTables, 0);
      assert.ok(withTables.bytes.equals(generic.bytes), `${isa}: table and generic path bytes (NaN payloads included)`);
      assert.deepEqual(withTables.result.nonFinite, generic.result.nonFinite);
      tabled.set(isa, { bytes: withTables.bytes, nonFinite: withTables.result.nonFinite[0]! });
    });
  }

  it("the TS engine gives the same bytes and counts (but a NaN's payload)", async function () {
    const native = tabled.get("scalar");
    if (!native) this.skip();
    const js = await run(built.cases, built.size, dir.file("js.bin"), "auto", THRESHOLD, "js");
    sameButLooseNaN(native!.bytes, js.bytes, built.cases, "native vs TS");
    assert.deepEqual(js.result.nonFinite, [native!.nonFinite]);
    for (const [isa, t] of tabled) assert.ok(t.bytes.equals(native!.bytes), `${isa} vs scalar`);
  });

  it("builds a table where the writes sharing it cover the threshold, and only there (sizes around it, odd lengths)", async () => {
    const threshold = 1000;
    const knobs = { TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: String(threshold) };
    // one weighted sum, e4m3 -> e4m3: pieces of threshold − 1, threshold and threshold + 1 elements alone,
    // then two of threshold / 2 + 7 and threshold / 2 − 7 sharing one table
    const one: [string, number, number[]][] = [OPS[0]!];
    for (const sizes of [[threshold - 1], [threshold], [threshold + 1], [threshold / 2 + 7, threshold / 2 - 7], [threshold / 2 + 7, threshold / 2 - 8]]) {
      const cases: PairCase[] = [];
      let size = 1;
      sizes.forEach((n, k) => {
        // each piece starts at another element (a different mix of codes), its output after the previous one
        const start = 313 * k + 5;
        const c = buildCases(offsets[0]! + start, offsets[1]! + start, a.subarray(start), b.subarray(start), n, one, [INPUTS[0]!], [STORES[0]!]).cases[0]!;
        c.piece.writes[0]!.offset = size;
        size += n + 1;
        cases.push(c);
      });
      const want = sizes.reduce((s, n) => s + n, 0) >= threshold ? 1 : 0;
      for (const isa of capabilities().isas) {
        const got = await run(cases, size, dir.file(`th-${sizes.join("-")}-${isa}.bin`), isa as "scalar", knobs);
        assert.equal(got.result.stats!.pairTables, want, `sizes ${sizes}: tables built`);
        check(got.bytes, cases, `${isa} sizes ${sizes}`);
      }
    }
  });

  it("keeps the tables within 8 MiB: 127 fp8 tables for 130 multipliers, the rest on the generic path with the same bytes", async () => {
    const cases: PairCase[] = [];
    let size = 1;
    for (let k = 0; k < 130; k++) {
      const n = 1000 + k; // distinct sizes: the largest 127 groups get the tables
      const piece: JobPiece = {
        name: `ws${k}`, n,
        ops: [{ kernel: KERNEL.weightedSum, args: [{ kind: "input", file: 0, offset: offsets[0]! + k, dtype: DT.F8_E4M3 }, { kind: "input", file: 0, offset: offsets[1]! + k, dtype: DT.F8_E4M3 }], params: [Math.fround(1 - k / 200), Math.fround(k / 200)], round: DT.F8_E4M3 }],
        writes: [{ output: 0, offset: size, dtype: DT.F8_E4M3, source: { kind: "op", index: 0 } }],
      };
      size += n + 1;
      cases.push({ piece, byPair: [], outDtype: DT.F8_E4M3, a, b });
    }
    const tables = await run(cases, size, dir.file("cap-t.bin"), "auto", { TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: "1000" });
    assert.equal(tables.result.stats!.pairTables, 127);
    const generic = await run(cases, size, dir.file("cap-g.bin"), "auto", { TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: String(2 ** 52) });
    assert.ok(tables.bytes.equals(generic.bytes));
    assert.deepEqual(tables.result.nonFinite, generic.result.nonFinite);
  });
});
