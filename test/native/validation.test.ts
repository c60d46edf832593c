/**
 * The C++ core trusts nothing from the planner: every malformed job is refused with the right
 * code (and the tensor or file it is about), without crashing and without leaving an output.
 */
import { strict as assert } from "node:assert";
import { writeFileSync } from "node:fs";
import { KERNELS, KERNEL_ID, type Job, type JobPiece } from "../../lib/native/job";
import { MergeError } from "../../lib/errors";
import { capabilities, loadNative, runNativeJob } from "../../lib/native/binding";
import { DT, KERNEL, makeJob, tempDir } from "./helpers";

describe("native job validation", function () {
  this.timeout(30_000);
  const dir = tempDir();
  const input = dir.file("in.bin");
  const INPUT_SIZE = 1001; // odd on purpose
  before(() => writeFileSync(input, Buffer.alloc(INPUT_SIZE, 7)));
  after(() => dir.cleanup());

  let counter = 0;
  /** A valid job: one F32 copy of 100 elements from offset 1 into an F16 output after an 8-byte literal. */
  function baseJob(): Job & { outPath: string } {
    const outPath = dir.file(`out-${counter++}.bin`);
    const piece: JobPiece = {
      name: "model.weight",
      n: 100,
      ops: [{ kernel: KERNEL.copy, args: [{ kind: "input", file: 0, offset: 1, dtype: DT.F32 }], params: [], round: DT.F32 }],
      writes: [{ output: 0, offset: 8, dtype: DT.F16, source: { kind: "op", index: 0 } }],
    };
    const job = makeJob({
      inputs: [{ path: input, size: INPUT_SIZE }],
      outputs: [{ path: outPath, size: 208, literals: [{ offset: 0, data: new Uint8Array(8).fill(1) }] }],
      pieces: [piece],
    });
    return Object.assign(job, { outPath });
  }

  async function expectCode(job: Job & { outPath: string }, code: string, fields: { tensor?: string; path?: string } = {}): Promise<void> {
    const before = dir.list().length;
    await assert.rejects(runNativeJob(job), (err: unknown) => {
      assert.ok(err instanceof MergeError, `not a MergeError: ${String(err)}`);
      assert.equal(err.code, code, err.message);
      if (fields.tensor !== undefined) assert.equal(err.tensor, fields.tensor);
      if (fields.path !== undefined) assert.equal(err.path, fields.path);
      return true;
    });
    assert.equal(dir.list().length, before, "an output file was left behind");
  }

  it("accepts the base job", async () => {
    const job = baseJob();
    const r = await runNativeJob(job);
    assert.equal(r.bytesWritten, 208);
  });

  it("INVALID_OFFSET: input range beyond the end of the file", async () => {
    const job = baseJob();
    (job.pieces[0]!.ops[0]!.args[0] as { offset: number }).offset = INPUT_SIZE - 399; // 100 × 4 bytes ends 1 past the end
    await expectCode(job, "INVALID_OFFSET", { tensor: "model.weight", path: input });
  });

  it("INVALID_OFFSET: offset itself beyond the file", async () => {
    const job = baseJob();
    (job.pieces[0]!.ops[0]!.args[0] as { offset: number }).offset = 2 ** 40;
    await expectCode(job, "INVALID_OFFSET", { tensor: "model.weight" });
  });

  it("INVALID_OFFSET: n × size overflows 64 bits", async () => {
    const job = baseJob();
    job.pieces[0]!.n = Number.MAX_SAFE_INTEGER;
    job.pieces[0]!.ops[0]!.args[0] = { kind: "input", file: 0, offset: 0, dtype: DT.F64 };
    await expectCode(job, "INVALID_OFFSET", { tensor: "model.weight" });
  });

  it("INVALID_OFFSET: offset + n × size overflows 64 bits", async () => {
    const job = baseJob();
    job.pieces[0]!.n = 2 ** 50;
    (job.pieces[0]!.ops[0]!.args[0] as { offset: number }).offset = Number.MAX_SAFE_INTEGER;
    await expectCode(job, "INVALID_OFFSET");
  });

  it("INVALID_OFFSET: write beyond the output size", async () => {
    const job = baseJob();
    job.pieces[0]!.writes[0]!.offset = 9;
    await expectCode(job, "INVALID_OFFSET", { tensor: "model.weight" });
  });

  it("INVALID_OFFSET: literal beyond the output size", async () => {
    const job = baseJob();
    job.outputs[0]!.literals.push({ offset: 207, data: new Uint8Array(2) });
    await expectCode(job, "INVALID_OFFSET");
  });

  it("INVALID_OFFSET: crc32 range beyond the output size", async () => {
    const job = baseJob();
    job.outputs[0]!.crc32Ranges = [{ offset: 100, length: 109 }];
    await expectCode(job, "INVALID_OFFSET");
  });

  it("INVALID_OFFSET: overlapping writes, or a literal over a write", async () => {
    const job = baseJob();
    job.outputs[0]!.size = 1000;
    job.pieces.push({ ...job.pieces[0]!, name: "other.weight", writes: [{ ...job.pieces[0]!.writes[0]!, offset: 207 }] });
    await expectCode(job, "INVALID_OFFSET");
    const job2 = baseJob();
    job2.outputs[0]!.literals.push({ offset: 100, data: new Uint8Array(1) });
    await expectCode(job2, "INVALID_OFFSET", { tensor: "model.weight" });
  });

  it("DTYPE_UNSUPPORTED: unknown dtype ids", async () => {
    const job = baseJob();
    (job.pieces[0]!.ops[0]!.args[0] as { dtype: number }).dtype = 99;
    await expectCode(job, "DTYPE_UNSUPPORTED", { tensor: "model.weight" });
    const job2 = baseJob();
    job2.pieces[0]!.writes[0]!.dtype = 15;
    await expectCode(job2, "DTYPE_UNSUPPORTED");
    const job3 = baseJob();
    job3.pieces[0]!.ops[0]!.round = 2 ** 40;
    await expectCode(job3, "DTYPE_UNSUPPORTED");
  });

  it("DTYPE_UNSUPPORTED: math on an integer input, or rounding through one", async () => {
    const job = baseJob();
    (job.pieces[0]!.ops[0]!.args[0] as { dtype: number }).dtype = DT.I32;
    await expectCode(job, "DTYPE_UNSUPPORTED", { tensor: "model.weight" });
    const job2 = baseJob();
    job2.pieces[0]!.ops[0]!.round = DT.I16;
    await expectCode(job2, "DTYPE_UNSUPPORTED");
  });

  it("DTYPE_UNSUPPORTED: a computed value stored as an integer, or a conversion between different non-float dtypes", async () => {
    const job = baseJob();
    job.pieces[0]!.writes[0]!.dtype = DT.I16;
    await expectCode(job, "DTYPE_UNSUPPORTED");
    const job2 = baseJob();
    job2.pieces[0]!.writes[0] = { output: 0, offset: 8, dtype: DT.I16, source: { kind: "input", file: 0, offset: 0, dtype: DT.U8 } };
    await expectCode(job2, "DTYPE_UNSUPPORTED");
    const job3 = baseJob();
    job3.pieces[0]!.writes[0] = { output: 0, offset: 8, dtype: DT.F16, source: { kind: "input", file: 0, offset: 0, dtype: DT.I8 } };
    await expectCode(job3, "DTYPE_UNSUPPORTED");
  });

  it("INVALID_ARGUMENT: op operand that is not an earlier op", async () => {
    const job = baseJob();
    job.pieces[0]!.ops[0]!.args[0] = { kind: "op", index: 0 };
    await expectCode(job, "INVALID_ARGUMENT", { tensor: "model.weight" });
    const job2 = baseJob();
    job2.pieces[0]!.ops.push({ kernel: KERNEL.copy, args: [{ kind: "op", index: 5 }], params: [], round: DT.F32 });
    await expectCode(job2, "INVALID_ARGUMENT");
  });

  it("INVALID_ARGUMENT: write source op out of range", async () => {
    const job = baseJob();
    job.pieces[0]!.writes[0]!.source = { kind: "op", index: 1 };
    await expectCode(job, "INVALID_ARGUMENT", { tensor: "model.weight" });
  });

  it("INVALID_ARGUMENT: wrong arity, unknown kernel, missing or extra params", async () => {
    const job = baseJob();
    job.pieces[0]!.ops[0]!.kernel = KERNEL.lerp;
    job.pieces[0]!.ops[0]!.params = [0.5];
    await expectCode(job, "INVALID_ARGUMENT");
    const job2 = baseJob();
    job2.pieces[0]!.ops[0]!.kernel = KERNELS.length; // the first id past the last kernel
    await expectCode(job2, "INVALID_ARGUMENT");
    const job3 = baseJob();
    const arg = job3.pieces[0]!.ops[0]!.args[0]!;
    job3.pieces[0]!.ops[0] = { kernel: KERNEL.weightedSum, args: [arg, arg], params: [0.5], round: DT.F32 };
    await expectCode(job3, "INVALID_ARGUMENT");
    const job4 = baseJob();
    job4.pieces[0]!.ops[0]!.params = [1, 2, 3, 4, 5];
    await expectCode(job4, "INVALID_ARGUMENT");
  });

  it("INVALID_ARGUMENT: a parameter that is not finite, or a count other than the kernel's", async () => {
    const arg = baseJob().pieces[0]!.ops[0]!.args[0]!;
    const withParam = (p: number) => {
      const job = baseJob();
      job.pieces[0]!.ops[0] = { kernel: KERNEL_ID["train-difference"], args: [arg, arg, arg], params: [p], round: DT.F32 };
      return job;
    };
    await runNativeJob(withParam(0.5)); // the same job with a finite parameter runs
    for (const bad of [NaN, Infinity, -Infinity, 1e39 /* finite in JS, Inf as fp32 */]) await expectCode(withParam(bad), "INVALID_ARGUMENT");
    for (const [kernel, params] of [[KERNEL_ID["train-difference"], []], [KERNEL_ID["sum-twice"], [0.5, 0.5, 0.5]], [KERNEL_ID["add-difference"], [0.5, 0.5]]] as const) {
      const job = baseJob();
      job.pieces[0]!.ops[0] = { kernel, args: [arg, arg, arg], params: [...params], round: DT.F32 };
      await expectCode(job, "INVALID_ARGUMENT");
    }
  });

  it("INVALID_ARGUMENT: input or output index out of range", async () => {
    const job = baseJob();
    (job.pieces[0]!.ops[0]!.args[0] as { file: number }).file = 1;
    await expectCode(job, "INVALID_ARGUMENT");
    const job2 = baseJob();
    job2.pieces[0]!.writes[0]!.output = 1;
    await expectCode(job2, "INVALID_ARGUMENT");
  });

  it("INVALID_ARGUMENT: numbers that are negative, fractional, unsafe or not numbers", async () => {
    for (const bad of [-1, 1.5, 2 ** 53, NaN, "8" as unknown as number]) {
      const job = baseJob();
      job.pieces[0]!.writes[0]!.offset = bad;
      await expectCode(job, "INVALID_ARGUMENT", { tensor: "model.weight" });
    }
    const job = baseJob();
    job.inputs[0]!.size = -5;
    await expectCode(job, "INVALID_ARGUMENT");
  });

  it("INVALID_ARGUMENT: threads, isa, control, operand kind", async () => {
    const job = baseJob();
    job.threads = 0;
    await expectCode(job, "INVALID_ARGUMENT");
    const job2 = baseJob();
    job2.isa = "neon" as Job["isa"];
    await expectCode(job2, "INVALID_ARGUMENT");
    const job3 = baseJob();
    (job3 as { control: unknown }).control = [0, 0, 0];
    await expectCode(job3, "INVALID_ARGUMENT");
    const job4 = baseJob();
    (job4.pieces[0]!.ops[0]!.args[0] as { kind: string }).kind = "file";
    await expectCode(job4, "INVALID_ARGUMENT");
    const job5 = baseJob();
    (job5.outputs[0]!.literals[0] as { data: unknown }).data = [1, 2, 3];
    await expectCode(job5, "INVALID_ARGUMENT");
  });

  it("INVALID_ARGUMENT: a kernel set the CPU lacks", async function () {
    const missing = (["avx2", "avx512"] as const).find((i) => !capabilities().isas.includes(i));
    if (!missing) this.skip();
    const job = baseJob();
    job.isa = missing!;
    await expectCode(job, "INVALID_ARGUMENT");
  });

  it("SIZE_MISMATCH: the input changed size since it was planned", async () => {
    const job = baseJob();
    job.inputs[0]!.size = INPUT_SIZE + 1;
    await expectCode(job, "SIZE_MISMATCH", { path: input });
  });

  it("FILE_NOT_FOUND: a missing input", async () => {
    const job = baseJob();
    job.inputs[0]!.path = dir.file("missing.bin");
    await expectCode(job, "FILE_NOT_FOUND", { path: dir.file("missing.bin") });
  });

  it("OUTPUT_EXISTS: never overwrites, and leaves the existing file alone", async () => {
    const job = baseJob();
    writeFileSync(job.outPath, "keep me");
    await assert.rejects(runNativeJob(job), (e: unknown) => e instanceof MergeError && e.code === "OUTPUT_EXISTS" && e.path === job.outPath);
    assert.equal(require("node:fs").readFileSync(job.outPath, "utf8"), "keep me");
  });

  it("a failure on the second output removes the first one too", async () => {
    const job = baseJob();
    job.outputs.push({ path: dir.file("no-such-dir/out.bin"), size: 10, literals: [] });
    await expectCode(job, "FILE_NOT_FOUND");
  });

  it("the raw binding rejects (or throws) Errors with a string code too", async () => {
    const native = loadNative()!;
    const job = baseJob();
    job.pieces[0]!.n = 1e6;
    await assert.rejects(native.runJob(job), (e: unknown) => (e as { code?: string }).code === "INVALID_OFFSET");
    assert.throws(() => native.runJob(null as unknown as Job), (e: unknown) => (e as { code?: string }).code === "INVALID_ARGUMENT");
  });
});
