/**
 * Drop-behind (engine_reads.cc wants_drop_behind) needs every input byte to be read by one write
 * only: the engine's `inputsReadOnce` stat. Shards of one model read disjoint bytes; a sweep's
 * two outputs, or one layer copied twice (a frankenmerge), read some bytes twice.
 */
import { strict as assert } from "node:assert";
import { writeFileSync } from "node:fs";
import type { JobOutput, JobPiece } from "../../lib/native/job";
import { runNativeJob } from "../../lib/native/binding";
import { DT, KERNEL, makeJob, tempDir } from "./helpers";

describe("native engine: inputs read once (drop-behind rule)", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const n = 4096; // fp32 elements per tensor
  const inPath = dir.file("in.bin");
  before(() => writeFileSync(inPath, Buffer.alloc(2 * n * 4, 7)));

  /** A copy of the input tensor at byte `from` into output `output` at byte `at`. */
  const copy = (name: string, from: number, output: number, at: number): JobPiece => ({
    name, n,
    ops: [{ kernel: KERNEL.copy, args: [{ kind: "input", file: 0, offset: from, dtype: DT.F32 }], params: [], round: DT.F32 }],
    writes: [{ output, offset: at, dtype: DT.F32, source: { kind: "op", index: 0 } }],
  });

  async function readOnce(tag: string, pieces: JobPiece[], outputs: number): Promise<number | undefined> {
    const outs: JobOutput[] = Array.from({ length: outputs }, (_, o) => ({ path: dir.file(`${tag}-${o}.bin`), size: pieces.filter((p) => p.writes[0]!.output === o).length * n * 4, literals: [] }));
    const result = await runNativeJob(makeJob({ inputs: [{ path: inPath, size: 2 * n * 4 }], outputs: outs, pieces }));
    return result.stats?.inputsReadOnce;
  }

  it("one output reading each tensor once: yes", async () => {
    assert.equal(await readOnce("one", [copy("t0", 0, 0, 0), copy("t1", n * 4, 0, n * 4)], 1), 1);
  });
  it("two shards reading disjoint tensors: yes", async () => {
    assert.equal(await readOnce("shards", [copy("t0", 0, 0, 0), copy("t1", n * 4, 1, 0)], 2), 1);
  });
  it("two outputs reading the same tensor (a sweep): no", async () => {
    assert.equal(await readOnce("sweep", [copy("t0", 0, 0, 0), copy("t0b", 0, 1, 0)], 2), 0);
  });
  it("one output reading one tensor into two (a frankenmerge): no", async () => {
    assert.equal(await readOnce("franken", [copy("t0", 0, 0, 0), copy("t0b", 0, 0, n * 4)], 1), 0);
  });
  it("tensors that overlap by one element: no", async () => {
    assert.equal(await readOnce("overlap", [copy("t0", 0, 0, 0), copy("t1", n * 4 - 4, 1, 0)], 2), 0);
  });
});
