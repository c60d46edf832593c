/**
 * Bad input for base + models methods is refused before any output exists, naming the
 * parameter or the model: a missing base, too few models, duplicates (also one file under two
 * names), parameters out of range or not whole, another architecture, another shape; and the
 * native core re-checks the job's reductions and many-kernel layouts itself.
 */
import { strict as assert } from "node:assert";
import { existsSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { isMergeError, type ErrorCode } from "../../../lib/errors";
import { merge } from "../../../lib/merge";
import { runNativeJob } from "../../../lib/native/binding";
import { KERNEL_ID, REDUCTION_ID, type JobPiece } from "../../../lib/native/job";
import { tempDir, writeModel } from "../../helpers/models";
import { loadLayout, writeSparseModel } from "../../library/fixtures";
import { DT, makeJob } from "../../native/helpers";
import { W, writeFamily } from "./fixtures";

describe("many-model methods: bad input", function () {
  this.timeout(60000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  before(() => {
    dir = tempDir("tm-many-bad-");
    paths = writeFamily(dir.path, 3);
  });
  after(() => dir.cleanup());

  const refused = async (options: Record<string, unknown>, code: ErrorCode, message: RegExp) => {
    const out = join(dir.path, `bad-${Math.random()}.safetensors`);
    await assert.rejects(merge({ recipeMetadata: false, out, ...options } as never), (e: unknown) => {
      assert.ok(isMergeError(e, code), `expected ${code}, got ${String(e)}`);
      assert.match((e as Error).message, message);
      return true;
    });
    assert.equal(existsSync(out), false, "an output was written");
  };

  it("needs a base, and models within the method's count", async () => {
    await refused({ method: "ties", models: paths.slice(1) }, "INVALID_ARGUMENT", /base is required/);
    await refused({ method: "ties", base: paths[0] }, "INVALID_ARGUMENT", /models is required/);
    await refused({ method: "model-stock", base: paths[0], models: [paths[1]] }, "INVALID_ARGUMENT", /model-stock takes 2 to 15 models/);
    await refused({ method: "ties", base: paths[0], models: new Array(16).fill(paths[1]) }, "INVALID_ARGUMENT", /1 to 15 models/);
  });

  it("refuses A/B/C slots for a base + models method, and base/models for a classic one", async () => {
    await refused({ method: "ties", a: paths[0], base: paths[0], models: [paths[1]] }, "INVALID_ARGUMENT", /give base and models, not a/);
    await refused({ method: "weighted-sum", a: paths[0], b: paths[1], models: [paths[2]] }, "INVALID_ARGUMENT", /base, models, modelWeights and modelParams are for methods over a base/);
  });

  it("refuses duplicate models, by name and by file", async () => {
    await refused({ method: "ties", base: paths[0], models: [paths[1], paths[2], paths[1]] }, "INVALID_ARGUMENT", /models\[2\] .* is the same as models\[0\]/);
    await refused({ method: "dare", base: paths[0], models: [paths[1], paths[0]] }, "INVALID_ARGUMENT", /models\[1\] .* is the same as the base/);
    const link = join(dir.path, "alias.safetensors");
    symlinkSync(paths[1]!, link);
    await refused({ method: "ties", base: paths[0], models: [paths[1], link] }, "INVALID_ARGUMENT", /models\[1\] .* is the same file as models\[0\]/);
  });

  it("names the parameter out of range, row-wide or per model", async () => {
    await refused({ method: "ties", base: paths[0], models: paths.slice(1), params: { density: 1.5 } }, "INVALID_ARGUMENT", /density = 1.5 is outside ties's range/);
    await refused({ method: "ties", base: paths[0], models: paths.slice(1), modelParams: [{}, { density: -0.1 }, {}] }, "INVALID_ARGUMENT", /model 2 .*density = -0.1/);
    await refused({ method: "dare", base: paths[0], models: paths.slice(1), params: { "drop-rate": 1 } }, "INVALID_ARGUMENT", /drop-rate = 1 is outside/);
    await refused({ method: "dare", base: paths[0], models: paths.slice(1), params: { seed: 1.5 } }, "INVALID_ARGUMENT", /seed must be a whole number/);
    await refused({ method: "ties", base: paths[0], models: paths.slice(1), params: { "drop-rate": 0.5 } }, "INVALID_ARGUMENT", /ties has no parameter "drop-rate"/);
    await refused({ method: "ties", base: paths[0], models: paths.slice(1), modelParams: [{ "sign-by-count": 1 }, {}, {}] }, "INVALID_ARGUMENT", /no per-model parameter "sign-by-count"/);
    await refused({ method: "ties", base: paths[0], models: paths.slice(1), modelWeights: [1, 2] }, "INVALID_ARGUMENT", /modelWeights must be a list of 3 numbers/);
  });

  it("refuses a model of another architecture, naming it", async () => {
    const sd15 = join(dir.path, "sd15.safetensors"), sdxl = join(dir.path, "sdxl.safetensors");
    writeSparseModel(sd15, loadLayout("sd15"));
    writeSparseModel(sdxl, loadLayout("sdxl"));
    await refused({ method: "ties", base: sd15, models: [sdxl] }, "ARCHITECTURE_MISMATCH", /model 1 .* SDXL/);
  });

  it("refuses a model whose tensor has another shape, naming the tensor and the model", async () => {
    const odd = join(dir.path, "odd.safetensors");
    writeModel(odd, { [W]: { dtype: "F32", shape: [80, 64] } });
    const base = join(dir.path, "small-base.safetensors");
    writeModel(base, { [W]: { dtype: "F32", shape: [64, 80] } });
    await refused({ method: "ties", base, models: [odd] }, "SHAPE_MISMATCH", /model 1 does not fit the base: .*proj_in\.weight: the base \[64, 80\], model 1 \[80, 64\]/);
  });

  it("the native core re-checks reductions and many-kernel layouts", async () => {
    const n = 16;
    const inputPath = paths[0]!;
    const { statSync } = await import("node:fs");
    const size = statSync(inputPath).size;
    const x = { kind: "input" as const, file: 0, offset: 0, dtype: DT.F32 };
    const piece = (p: Partial<JobPiece>): JobPiece => ({ name: "t", n, ops: [], writes: [], ...p });
    const job = (p: JobPiece) => makeJob({ inputs: [{ path: inputPath, size }], outputs: [{ path: join(dir.path, `raw-${Math.random()}.out`), size: n * 4, literals: [] }], pieces: [{ ...p, writes: [{ output: 0, offset: 0, dtype: DT.F32, source: { kind: "op", index: p.ops.length - 1 } }] }] });
    const slerpOp = { kernel: KERNEL_ID.slerp, args: [x, x], params: [0.5], round: DT.F32, stats: [0, 1, 2], ints: [0] };
    const three = [{ kind: REDUCTION_ID.dot, args: [x, x] }, { kind: REDUCTION_ID["sum-squares"], args: [x] }, { kind: REDUCTION_ID["sum-squares"], args: [x] }];
    const bad: [string, JobPiece, RegExp][] = [
      ["a stat index past the reductions", piece({ ops: [{ ...slerpOp, stats: [0, 1, 5] }], reductions: three }), /reads reduction 5 of 3/],
      ["k above n", piece({ ops: [slerpOp], reductions: [...three.slice(0, 2), { kind: REDUCTION_ID["kth-magnitude"], args: [x], k: n + 1 }] }), /k = 17 is more than/],
      ["an unknown reduction kind", piece({ ops: [slerpOp], reductions: [...three.slice(0, 2), { kind: 9, args: [x] }] }), /unknown kind 9/],
      ["a reduction of an op that reads reductions", piece({ ops: [slerpOp, { kernel: KERNEL_ID.copy, args: [{ kind: "op", index: 0 }], params: [], round: DT.F32 }], reductions: [...three.slice(0, 2), { kind: REDUCTION_ID["sum-squares"], args: [{ kind: "op", index: 1 }] }] }), /reads reduction results but a reduction reads it/],
      ["task-merge without its ints", piece({ ops: [{ kernel: KERNEL_ID["task-merge"], args: [x, x], params: [1, 1, 1], round: DT.F32, ints: [0] }] }), /task-merge: takes ints/],
      ["stats on a classic kernel", piece({ ops: [{ kernel: KERNEL_ID.copy, args: [x], params: [], round: DT.F32, stats: [0] }], reductions: three }), /copy takes no stats or ints/],
    ];
    for (const [what, p, message] of bad) {
      await assert.rejects(runNativeJob(job(p)), (e: unknown) => {
        assert.ok(isMergeError(e, "INVALID_ARGUMENT"), `${what}: ${String(e)}`);
        assert.match((e as Error).message, message, what);
        return true;
      });
    }
  });
});
