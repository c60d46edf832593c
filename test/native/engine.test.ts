/**
 * The engine around the kernels: op chains, several writes and outputs, raw copies, literals,
 * gaps, window and chunk boundaries (elements straddling them), thread counts, CRC-32 ranges,
 * progress and cancellation.
 */
import { strict as assert } from "node:assert";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import * as zlib from "node:zlib";
import type { Job, JobOp, JobPiece } from "../../lib/native/job";
import { MergeError } from "../../lib/errors";
import { runNativeJob } from "../../lib/native/binding";
import {
  DT, KERNEL, SIZE, compareElement, layout, makeJob, randomElements, refKernel, refLoad, refRound, refStore, rng, tempDir,
  type Ref, type RefBytes,
} from "./helpers";

/** zlib.crc32 exists from Node 20.15; otherwise a bitwise reference. */
function crc32(data: Uint8Array): number {
  const z = zlib as unknown as { crc32?: (d: Uint8Array) => number };
  if (typeof z.crc32 === "function") return z.crc32(data);
  let c = 0xffffffff;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

interface Expect {
  output: number;
  offset: number;
  dtype: number;
  values: RefBytes[];
}

/**
 * A job mixing everything: per piece a chain of ops (later ops read earlier ones, with rounding
 * through F16/BF16 in between), writes of several ops to two outputs, raw copies of integer
 * tensors, empty pieces, literals and gap bytes. Output offsets are odd.
 */
function buildMixedJob(dir: ReturnType<typeof tempDir>, tag: string, lengths: number[]) {
  const r = rng(42);
  const regions: Uint8Array[] = [];
  const floatDtypes = [DT.F16, DT.BF16, DT.F32, DT.F64];
  const pieces: JobPiece[] = [];
  const expects: Expect[] = [];
  const pos = [11, 5]; // next free offset per output
  const pending: { piece: JobPiece; dtypes: number[]; regionIndex: number[]; n: number }[] = [];
  for (const n of lengths) {
    for (let t = 0; t < 3; t++) {
      const dtypes = [0, 1, 2].map(() => floatDtypes[Math.floor(r() * 4)]!);
      const regionIndex = dtypes.map((d) => regions.push(randomElements(d, n, 1000 + regions.length)) - 1);
      pending.push({ piece: { name: `mixed.${n}.${t}`, n, ops: [], writes: [] }, dtypes, regionIndex, n });
    }
    // an integer tensor copied byte for byte
    const ri = regions.push(randomElements(DT.I64, n, 77 + n)) - 1;
    pending.push({ piece: { name: `int.${n}`, n, ops: [], writes: [] }, dtypes: [DT.I64], regionIndex: [ri], n });
  }
  const { image, offsets } = layout(regions, 1);
  const inPath = dir.file(`in-${tag}.bin`);
  writeFileSync(inPath, image);

  for (const p of pending) {
    const { piece, n } = p;
    const arg = (k: number) => ({ kind: "input" as const, file: 0, offset: offsets[p.regionIndex[k]!]!, dtype: p.dtypes[k]! });
    const load = (k: number, i: number): Ref => refLoad(image, offsets[p.regionIndex[k]!]! + i * SIZE[p.dtypes[k]!]!, p.dtypes[k]!);
    if (p.dtypes[0] === DT.I64) {
      piece.writes.push({ output: 1, offset: pos[1]!, dtype: DT.I64, source: arg(0) });
      const bytes = image.subarray(offsets[p.regionIndex[0]!]!, offsets[p.regionIndex[0]!]! + n * 8);
      expects.push({ output: 1, offset: pos[1]!, dtype: DT.I64, values: Array.from({ length: n }, (_, i) => ({ bytes: [...bytes.subarray(i * 8, i * 8 + 8)], looseNaN: false })) });
      pos[1]! += n * 8 + 3;
      pieces.push(piece);
      continue;
    }
    // op0 = add-difference(a, b, c) rounded through F16; op1 = lerp(op0, b) rounded through BF16;
    // op2 = weighted-sum(op1, a); op3 = copy(c)
    piece.ops.push({ kernel: KERNEL.addDifference, args: [arg(0), arg(1), arg(2)], params: [0.75], round: DT.F16 });
    piece.ops.push({ kernel: KERNEL.lerp, args: [{ kind: "op", index: 0 }, arg(1)], params: [0.25], round: DT.BF16 });
    piece.ops.push({ kernel: KERNEL.weightedSum, args: [{ kind: "op", index: 1 }, arg(0)], params: [0.4, 0.6], round: DT.F32 });
    piece.ops.push({ kernel: KERNEL.copy, args: [arg(2)], params: [], round: DT.F32 });
    const results: Ref[][] = [[], [], [], []];
    for (let i = 0; i < n; i++) {
      const a = load(0, i), b = load(1, i), c = load(2, i);
      const o0 = refRound(refKernel(KERNEL.addDifference, [a, b, c], [0.75]), DT.F16);
      const o1 = refRound(refKernel(KERNEL.lerp, [o0, b], [0.25]), DT.BF16);
      const o2 = refKernel(KERNEL.weightedSum, [o1, a], [0.4, 0.6]);
      results[0]!.push(o0), results[1]!.push(o1), results[2]!.push(o2), results[3]!.push(c);
    }
    // op2 to output 0 as F16 and to output 1 as F64; op0 to output 0 as F32; op3 to output 1 as BF16
    const writes: [number, number, number][] = [[2, 0, DT.F16], [2, 1, DT.F64], [0, 0, DT.F32], [3, 1, DT.BF16]];
    for (const [op, output, dtype] of writes) {
      piece.writes.push({ output, offset: pos[output]!, dtype, source: { kind: "op", index: op } });
      expects.push({ output, offset: pos[output]!, dtype, values: results[op]!.map((v) => refStore(v, dtype)) });
      pos[output]! += n * SIZE[dtype]! + (n % 2 === 0 ? 1 : 2);
    }
    pieces.push(piece);
  }
  const literal0 = new Uint8Array(11).map((_, i) => 200 + i);
  const literal1 = new Uint8Array([9, 8, 7, 6, 5]);
  const sizes = [pos[0]! + 7, pos[1]! + 5];
  const tail = new Uint8Array([1, 2, 3]);
  const outputs = [
    { path: dir.file(`out0-${tag}.bin`), size: sizes[0]!, literals: [{ offset: 0, data: literal0 }, { offset: sizes[0]! - 4, data: tail }] },
    { path: dir.file(`out1-${tag}.bin`), size: sizes[1]!, literals: [{ offset: 0, data: literal1 }] },
  ];
  expects.push({ output: 0, offset: 0, dtype: DT.I8, values: [...literal0].map((b) => ({ bytes: [b], looseNaN: false })) });
  expects.push({ output: 0, offset: sizes[0]! - 4, dtype: DT.I8, values: [...tail].map((b) => ({ bytes: [b], looseNaN: false })) });
  expects.push({ output: 1, offset: 0, dtype: DT.I8, values: [...literal1].map((b) => ({ bytes: [b], looseNaN: false })) });
  return { inPath, inSize: image.length, pieces, outputs, expects };
}

type Mixed = ReturnType<typeof buildMixedJob>;

function checkMixed(m: Mixed, files: Buffer[]): void {
  const covered = files.map((f) => new Uint8Array(f.length));
  const errors: string[] = [];
  for (const e of m.expects) {
    const size = SIZE[e.dtype]!;
    e.values.forEach((v, i) => {
      const err = compareElement(files[e.output]!, e.offset + i * size, e.dtype, v);
      if (err && errors.length < 10) errors.push(`output ${e.output} @${e.offset + i * size}: ${err}`);
    });
    covered[e.output]!.fill(1, e.offset, e.offset + e.values.length * size);
  }
  files.forEach((f, o) => {
    for (let i = 0; i < f.length; i++) if (!covered[o]![i] && f[i] !== 0 && errors.length < 10) errors.push(`output ${o}: gap byte ${i} = ${f[i]}`);
  });
  assert.deepEqual(errors, []);
}

/** The engine stats of the last runMixed. */
let lastStats: Record<string, number> = {};

async function runMixed(m: Mixed, suffix: string, threads: number, extra: Partial<Job> = {}): Promise<Buffer[]> {
  const outputs = m.outputs.map((o) => ({ ...o, path: `${o.path}.${suffix}` }));
  const job = { ...makeJob({ inputs: [{ path: m.inPath, size: m.inSize }], outputs, pieces: m.pieces, threads }), ...extra };
  const result = await runNativeJob(job);
  lastStats = result.stats ?? {};
  assert.equal(result.threads, threads);
  assert.equal(result.bytesWritten, outputs[0]!.size + outputs[1]!.size);
  assert.equal(job.control[1], result.bytesWritten, "progress ends at the total");
  return outputs.map((o) => readFileSync(o.path));
}

describe("native engine", function () {
  this.timeout(300_000);
  const dir = tempDir();
  after(() => dir.cleanup());

  describe("op chains, several outputs and writes, raw copies, literals, gaps", () => {
    let m: Mixed;
    let one: Buffer[];
    before(() => {
      m = buildMixedJob(dir, "mixed", [0, 1, 9, 33, 65, 1000, 4099, 70001]);
    });

    it("matches the reference with 1 thread", async () => {
      one = await runMixed(m, "t1", 1);
      checkMixed(m, one);
    });

    for (const threads of [2, 3, 8]) {
      it(`gives identical bytes with ${threads} threads`, async () => {
        const files = await runMixed(m, `t${threads}`, threads);
        files.forEach((f, o) => assert.ok(f.equals(one[o]!), `output ${o} differs`));
      });
    }

    for (const isa of ["scalar", "avx2", "avx512"] as const) {
      it(`gives identical bytes with isa=${isa}`, async function () {
        const { capabilities } = await import("../../lib/native/binding");
        if (!capabilities().isas.includes(isa)) this.skip();
        const files = await runMixed(m, `isa-${isa}`, 2, { isa });
        checkMixed(m, files);
      });
    }
  });

  describe("window and chunk boundaries", () => {
    // 1 MiB windows (the smallest the knob allows) and outputs of several MiB with elements of
    // 2 and 8 bytes at odd offsets: elements straddle window and chunk edges.
    let m: Mixed;
    before(() => {
      m = buildMixedJob(dir, "big", [1, 33, 300001, 4099, 9]);
    });
    afterEach(() => {
      delete process.env.TENSORMERGE_WINDOW_MIB;
      delete process.env.TENSORMERGE_DIRECT_IO;
      delete process.env.TENSORMERGE_INTERLEAVE;
    });

    it("is byte-identical with 1 MiB windows, default windows, outputs interleaved or one after another, and buffered writes instead of O_DIRECT, all matching the reference", async () => {
      assert.ok(m.outputs[0]!.size > 3 << 20, `output is only ${m.outputs[0]!.size} bytes`);
      const big = await runMixed(m, "w32", 2);
      checkMixed(m, big);
      process.env.TENSORMERGE_WINDOW_MIB = "1";
      const small = await runMixed(m, "w1", 2);
      small.forEach((f, o) => assert.ok(f.equals(big[o]!), `output ${o} differs with 1 MiB windows`));
      // Both outputs span several windows: interleaved, the engine alternates between them
      // (each output's straddling element carried across the other's windows); sequential, it
      // switches once.
      assert.ok(lastStats.windows! > 4 && lastStats.outputSwitches! >= 3, JSON.stringify(lastStats));
      process.env.TENSORMERGE_INTERLEAVE = "0";
      const sequential = await runMixed(m, "w1s", 2);
      sequential.forEach((f, o) => assert.ok(f.equals(big[o]!), `output ${o} differs with one output after another`));
      assert.equal(lastStats.outputSwitches, 1);
      delete process.env.TENSORMERGE_INTERLEAVE;
      process.env.TENSORMERGE_DIRECT_IO = "0";
      const buffered = await runMixed(m, "w1b", 1);
      buffered.forEach((f, o) => assert.ok(f.equals(big[o]!), `output ${o} differs with buffered writes`));
    });
  });

  describe("crc32 ranges", () => {
    afterEach(() => delete process.env.TENSORMERGE_WINDOW_MIB);

    it("match zlib.crc32 over the written bytes, across windows, overlapping and empty ranges", async () => {
      const n = 1_500_000;
      const data = randomElements(DT.F32, n, 5);
      const { image, offsets } = layout([data], 1);
      const inPath = dir.file("crc-in.bin");
      writeFileSync(inPath, image);
      const size = 3 + n * 2 + 100;
      const ranges = [
        { offset: 0, length: size },
        { offset: 3, length: n * 2 },
        { offset: 1000, length: 1 },
        { offset: 17, length: 0 },
        { offset: (1 << 20) - 5, length: 3 << 19 },
        { offset: size - 1, length: 1 },
      ];
      const piece: JobPiece = {
        name: "w",
        n,
        ops: [],
        writes: [{ output: 0, offset: 3, dtype: DT.F16, source: { kind: "input", file: 0, offset: offsets[0]!, dtype: DT.F32 } }],
      };
      for (const window of ["1", undefined]) {
        if (window) process.env.TENSORMERGE_WINDOW_MIB = window;
        else delete process.env.TENSORMERGE_WINDOW_MIB;
        const out = dir.file(`crc-out-${window}.bin`);
        const other = dir.file(`crc-other-${window}.bin`);
        const result = await runNativeJob(makeJob({
          inputs: [{ path: inPath, size: image.length }],
          outputs: [
            { path: out, size, literals: [{ offset: 0, data: new Uint8Array([0x50, 0x4b, 3]) }, { offset: size - 100, data: new Uint8Array(100).fill(0xaa) }], crc32Ranges: ranges },
            { path: other, size: 10, literals: [] },
          ],
          pieces: [piece],
        }));
        const bytes = readFileSync(out);
        assert.deepEqual(result.crc32, [ranges.map((r) => crc32(bytes.subarray(r.offset, r.offset + r.length))), []]);
        assert.ok(readFileSync(other).equals(Buffer.alloc(10)));
      }
    });
  });

  describe("edge shapes", () => {
    it("handles an empty output, a literal-only output, and a job with no pieces", async () => {
      const outs = ["e0", "e1", "e2"].map((n) => dir.file(n));
      const result = await runNativeJob(makeJob({
        inputs: [],
        outputs: [
          { path: outs[0]!, size: 0, literals: [], crc32Ranges: [{ offset: 0, length: 0 }] },
          { path: outs[1]!, size: 5000, literals: [{ offset: 4096, data: new Uint8Array([1, 2, 3]) }, { offset: 0, data: new Uint8Array(0) }] },
          { path: outs[2]!, size: 1, literals: [{ offset: 0, data: new Uint8Array([42]) }] },
        ],
        pieces: [],
      }));
      assert.equal(result.bytesWritten, 5001);
      assert.deepEqual(result.crc32, [[0], [], []]);
      assert.equal(readFileSync(outs[0]!).length, 0);
      const expected = Buffer.alloc(5000);
      expected.set([1, 2, 3], 4096);
      assert.ok(readFileSync(outs[1]!).equals(expected));
      assert.deepEqual([...readFileSync(outs[2]!)], [42]);
    });
  });

  describe("cancellation and progress", () => {
    let inPath: string;
    const n = 16 << 20; // 64 MiB of F32
    before(() => {
      inPath = dir.file("cancel-in.bin");
      const buf = Buffer.alloc(n * 4);
      for (let i = 0; i < buf.length; i += 4096) buf[i] = i & 0xff;
      writeFileSync(inPath, buf);
    });

    /** A slow job: a chain of 64 lerps per element on the scalar kernels. */
    function slowJob(out: string): Job {
      const arg = { kind: "input" as const, file: 0, offset: 0, dtype: DT.F32 };
      const ops: JobOp[] = [{ kernel: KERNEL.copy, args: [arg], params: [], round: DT.F32 }];
      for (let k = 1; k < 64; k++) ops.push({ kernel: KERNEL.lerp, args: [{ kind: "op", index: k - 1 }, arg], params: [0.5], round: DT.F16 });
      return makeJob({
        inputs: [{ path: inPath, size: n * 4 }],
        outputs: [{ path: out, size: n * 2, literals: [] }],
        pieces: [{ name: "slow", n, ops, writes: [{ output: 0, offset: 0, dtype: DT.F16, source: { kind: "op", index: 63 } }] }],
        threads: 2,
        isa: "scalar",
      });
    }

    it("ABORTED when the flag is set before the job starts, and no file is left", async () => {
      const out = dir.file("cancel-before.bin");
      const job = slowJob(out);
      job.control[0] = 1;
      await assert.rejects(runNativeJob(job), (e: unknown) => e instanceof MergeError && e.code === "ABORTED");
      assert.ok(!dir.list().includes("cancel-before.bin"));
    });

    it("ABORTED when the flag is set mid-job, quickly, and no file is left; progress moved before", async () => {
      process.env.TENSORMERGE_WINDOW_MIB = "4";
      try {
        const out = dir.file("cancel-mid.bin");
        const total = n * 2;
        let job = slowJob(out);
        let started = Date.now();
        let cancelledAt = 0;
        let progressSeen = 0;
        // The cancel comes from a JS timer and is only sent while less than half of the output is
        // done, so the engine has many chunk boundaries left at which it must see the flag. A
        // loaded machine may starve the timer until past half-way (or the end); such an attempt
        // cancels nothing and says nothing, and the test tries again (5 attempts at most).
        for (let attempt = 0; attempt < 5 && !cancelledAt; attempt++) {
          if (attempt > 0) {
            rmSync(out, { force: true });
            job = slowJob(out);
            started = Date.now();
          }
          const control = job.control;
          const timer = setInterval(() => {
            const done = control[1]!;
            if (done > 0 && done < total / 2 && !cancelledAt) {
              progressSeen = done;
              control[0] = 1;
              cancelledAt = Date.now();
            }
          }, 2);
          try {
            const outcome = await runNativeJob(job).then(() => "finished", (e: unknown) => e);
            if (cancelledAt || outcome !== "finished") assert.ok(outcome instanceof MergeError && outcome.code === "ABORTED", `${String(outcome)} (cancelled at ${progressSeen} of ${total} bytes)`);
          } finally {
            clearInterval(timer);
          }
        }
        assert.ok(cancelledAt > 0, `no attempt could cancel before half-way (${Date.now() - started} ms for the last)`);
        // Progress was reported before the cancel, and the cancel came with half the job left.
        assert.ok(progressSeen > 0 && progressSeen < total / 2);
        assert.ok(Date.now() - cancelledAt < 10_000, "cancellation took too long");
        assert.ok(!dir.list().includes("cancel-mid.bin"));
      } finally {
        delete process.env.TENSORMERGE_WINDOW_MIB;
      }
    });
  });
});
