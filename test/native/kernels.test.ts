/**
 * Every kernel on every kernel set the CPU has, against a reference computed here in JS
 * (Math.fround per operation, f16 from @petamoriken/float16, bf16 by its bit formula): lengths
 * around the vector widths, odd byte offsets in inputs and outputs, every input/output/rounding
 * dtype, and special values (NaN payloads, signalling NaNs, ±Inf, subnormals, -0, f16 overflow).
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import type { JobPiece, Operand } from "../../lib/native/job";
import { capabilities, runNativeJob } from "../../lib/native/binding";
import {
  DT, KERNEL, SIZE, compareElement, isNaNAt, layout, makeJob, randomElements, refKernel, refLoad, refRound, refStore,
  tempDir, type RefBytes,
} from "./helpers";

const LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 1000];
const FLOATS = [DT.F16, DT.BF16, DT.F32, DT.F64, DT.F8_E4M3, DT.F8_E5M2];
const ROUNDS = [DT.F32, DT.F16, DT.BF16, DT.F8_E4M3, DT.F8_E5M2];
const ARG_DTYPES: number[][] = [
  [DT.F16, DT.F16, DT.F16], [DT.BF16, DT.BF16, DT.BF16], [DT.F32, DT.F32, DT.F32], [DT.F64, DT.F64, DT.F64],
  [DT.F16, DT.F32, DT.BF16], [DT.F64, DT.F16, DT.F32],
  [DT.F8_E4M3, DT.F8_E4M3, DT.F8_E4M3], [DT.F8_E5M2, DT.F8_E5M2, DT.F8_E5M2], [DT.F8_E4M3, DT.F16, DT.F8_E5M2],
];
const KERNELS: [string, number, number, number[]][] = [
  ["copy", KERNEL.copy, 1, []],
  ["weighted-sum", KERNEL.weightedSum, 2, [0.7, 0.3]],
  ["add-difference", KERNEL.addDifference, 3, [0.6]],
  ["lerp", KERNEL.lerp, 2, [1 / 3]],
  // The method kernels (one scalar implementation for every ISA table; still checked on each).
  ["train-difference", KERNEL.trainDifference, 3, [0.7 * 1.8]],
  ["triple-sum", KERNEL.tripleSum, 3, [1 - 0.3 - 0.45, 0.3, 0.45]],
  ["sum-twice", KERNEL.sumTwice, 3, [1 - 0.3, 0.3, 1 - 0.45, 0.45]],
  ["similarity-add-difference", KERNEL.similarityAddDifference, 3, [0.8, 0.6, 1 - 0.4, 0.4]],
  ["clamp", KERNEL.clamp, 3, []],
];

interface Case {
  piece: JobPiece;
  expected: RefBytes[];
  outDtype: number;
}

/** One input file holding a region per (dtype, length, argument slot), all at odd offsets. */
function buildInput(path: string, seed: number) {
  const keys: string[] = [];
  const regions: Uint8Array[] = [];
  for (const d of FLOATS) for (const n of LENGTHS) for (let a = 0; a < 3; a++) {
    keys.push(`${d}/${n}/${a}`);
    regions.push(randomElements(d, n, seed + keys.length * 7919));
  }
  const { image, offsets } = layout(regions);
  writeFileSync(path, image);
  const at = new Map(keys.map((k, i) => [k, offsets[i]!]));
  return { image, size: image.length, offsetOf: (d: number, n: number, a: number) => at.get(`${d}/${n}/${a}`)! };
}

type Input = ReturnType<typeof buildInput>;

/** The pieces and expected bytes: one write per piece, packed at odd offsets with 1-byte gaps. */
function buildCases(input: Input, kernel: number, arity: number, params: number[]): { cases: Case[]; size: number } {
  const cases: Case[] = [];
  let pos = 5;
  for (const argDtypes of ARG_DTYPES) for (const round of ROUNDS) for (const outDtype of FLOATS) for (const n of LENGTHS) {
    const args: Operand[] = [];
    for (let a = 0; a < arity; a++) args.push({ kind: "input", file: 0, offset: input.offsetOf(argDtypes[a]!, n, a), dtype: argDtypes[a]! });
    const expected: RefBytes[] = [];
    for (let i = 0; i < n; i++) {
      const refs = args.map((op) => refLoad(input.image, (op as { offset: number }).offset + i * SIZE[(op as { dtype: number }).dtype]!, (op as { dtype: number }).dtype));
      expected.push(refStore(refRound(refKernel(kernel, refs, params), round), outDtype));
    }
    const name = `k${kernel}.${argDtypes.slice(0, arity).join("-")}.r${round}.o${outDtype}.n${n}`;
    cases.push({
      piece: { name, n, ops: [{ kernel, args, params, round }], writes: [{ output: 0, offset: pos, dtype: outDtype, source: { kind: "op", index: 0 } }] },
      expected,
      outDtype,
    });
    pos += n * SIZE[outDtype]! + 1; // one gap byte: must come out as 0
  }
  return { cases, size: pos + 2 };
}

/** Conversion-only writes: an input widened to fp32 and stored as another float dtype. */
function buildConversions(input: Input): { cases: Case[]; size: number } {
  const cases: Case[] = [];
  let pos = 1;
  for (const from of FLOATS) for (const to of FLOATS) for (const n of LENGTHS) {
    if (from === to) continue;
    const offset = input.offsetOf(from, n, 0);
    const expected: RefBytes[] = [];
    for (let i = 0; i < n; i++) expected.push(refStore(refLoad(input.image, offset + i * SIZE[from]!, from), to));
    cases.push({
      piece: { name: `conv.${from}.${to}.${n}`, n, ops: [], writes: [{ output: 0, offset: pos, dtype: to, source: { kind: "input", file: 0, offset, dtype: from } }] },
      expected,
      outDtype: to,
    });
    pos += n * SIZE[to]! + 3;
  }
  return { cases, size: pos };
}

function check(out: Uint8Array, cases: Case[], label: string): void {
  const errors: string[] = [];
  let covered = 0;
  const mask = new Uint8Array(out.length);
  for (const c of cases) {
    const w = c.piece.writes[0]!;
    const size = SIZE[c.outDtype]!;
    for (let i = 0; i < c.piece.n; i++) {
      const err = compareElement(out, w.offset + i * size, c.outDtype, c.expected[i]!);
      if (err && errors.length < 10) errors.push(`${label} ${c.piece.name}[${i}]: ${err}`);
    }
    mask.fill(1, w.offset, w.offset + c.piece.n * size);
    covered += c.piece.n;
  }
  for (let i = 0; i < out.length; i++) if (!mask[i] && out[i] !== 0 && errors.length < 10) errors.push(`${label}: gap byte ${i} is ${out[i]}, expected 0`);
  assert.ok(covered > 0);
  assert.deepEqual(errors, []);
}

/** Every SIMD set gives the same bytes as scalar, NaN payloads included unless both are NaN from arithmetic. */
function sameAcrossIsas(a: Buffer, b: Buffer, cases: Case[], label: string): void {
  assert.equal(a.length, b.length);
  for (const c of cases) {
    const w = c.piece.writes[0]!;
    const size = SIZE[c.outDtype]!;
    for (let i = 0; i < c.piece.n; i++) {
      const at = w.offset + i * size;
      if (c.expected[i]!.looseNaN && isNaNAt(a, at, c.outDtype) && isNaNAt(b, at, c.outDtype)) continue;
      if (!a.subarray(at, at + size).equals(b.subarray(at, at + size))) assert.fail(`${label} ${c.piece.name}[${i}] differs between kernel sets`);
    }
  }
}

describe("native kernels vs an independent JS reference", function () {
  this.timeout(300_000);
  const dir = tempDir();
  const inPath = dir.file("in.bin");
  let input: Input;
  const isas = ["scalar", "avx2", "avx512"] as const;
  before(() => {
    input = buildInput(inPath, 1234);
  });
  after(() => dir.cleanup());

  for (const [name, kernel, arity, params] of KERNELS) {
    describe(name, () => {
      let built: { cases: Case[]; size: number };
      const outputs = new Map<string, Buffer>();
      before(() => {
        built = buildCases(input, kernel, arity, params);
      });
      for (const isa of isas) {
        it(`${isa}: every dtype, rounding and length`, async function () {
          if (!capabilities().isas.includes(isa)) this.skip();
          const out = dir.file(`${name}.${isa}.bin`);
          const job = makeJob({
            inputs: [{ path: inPath, size: input.size }],
            outputs: [{ path: out, size: built.size, literals: [] }],
            pieces: built.cases.map((c) => c.piece),
            isa,
          });
          const result = await runNativeJob(job);
          assert.equal(result.isa, isa);
          assert.equal(result.bytesWritten, built.size);
          const bytes = readFileSync(out);
          check(bytes, built.cases, isa);
          outputs.set(isa, bytes);
        });
      }
      it("gives the same bytes on every kernel set", function () {
        const scalar = outputs.get("scalar");
        if (!scalar || outputs.size < 2) this.skip();
        for (const [isa, bytes] of outputs) sameAcrossIsas(scalar!, bytes, built.cases, isa);
      });
    });
  }

  describe("conversions (write from an input of another float dtype)", () => {
    for (const isa of isas) {
      it(`${isa}: every float dtype (f16, bf16, f32, f64, fp8) to each other`, async function () {
        if (!capabilities().isas.includes(isa)) this.skip();
        const built = buildConversions(input);
        const out = dir.file(`conv.${isa}.bin`);
        await runNativeJob(makeJob({ inputs: [{ path: inPath, size: input.size }], outputs: [{ path: out, size: built.size, literals: [] }], pieces: built.cases.map((c) => c.piece), isa }));
        check(readFileSync(out), built.cases, isa);
      });
    }
  });
});
