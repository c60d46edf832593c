/**
 * The pipeline's two ends (engine_stream.cc window_end, buffer_pool.h): ramp windows (the job's first
 * and last windows small, doubling up to the window size: TENSORMERGE_RAMP_KIB) must not change
 * a byte, even with every element straddling a window boundary; output buffers faulted in before
 * the job (prepareOutputBuffers) are the ones the job takes, and the job leaves none behind.
 * The expected bytes are the inputs themselves (copies at odd output offsets), not the engine's.
 */
import { strict as assert } from "node:assert";
import { readFileSync, writeFileSync } from "node:fs";
import type { Job, JobPiece } from "../../lib/native/job";
import { loadNative, nativeAvailable, runNativeJob } from "../../lib/native/binding";
import { setOnlyTuningKnobs } from "../helpers/engines";
import { DT, KERNEL, makeJob, tempDir } from "./helpers";

describe("native engine: ramp windows and prefaulted output buffers", function () {
  this.timeout(60000);
  const dir = tempDir();
  const n0 = 300_007, n1 = 211_111; // fp32 elements: odd counts
  const inputs = [dir.file("in0.bin"), dir.file("in1.bin")];
  const head = new Uint8Array([0x50, 0x4b, 3]); // 3 bytes: every element after it straddles 4 KiB boundaries
  let expected: Buffer;
  let restore = () => {};
  before(function () {
    if (!nativeAvailable()) this.skip();
    const random = (n: number, seed: number) => {
      const b = Buffer.alloc(n * 4);
      let x = seed;
      for (let i = 0; i < n; i++) {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        b.writeUInt32LE(x, i * 4);
      }
      return b;
    };
    const in0 = random(n0, 1), in1 = random(n1, 2);
    writeFileSync(inputs[0]!, in0);
    writeFileSync(inputs[1]!, in1);
    expected = Buffer.concat([head, in0, in1, Buffer.from([0xaa])]);
  });
  afterEach(() => restore());
  after(() => dir.cleanup());

  const copy = (name: string, file: number, n: number, at: number): JobPiece => ({
    name, n,
    ops: [{ kernel: KERNEL.copy, args: [{ kind: "input", file, offset: 0, dtype: DT.F32 }], params: [], round: DT.F32 }],
    writes: [{ output: 0, offset: at, dtype: DT.F32, source: { kind: "op", index: 0 } }],
  });
  const job = (out: string, threads: number): Job => makeJob({
    inputs: [{ path: inputs[0]!, size: n0 * 4 }, { path: inputs[1]!, size: n1 * 4 }],
    outputs: [{ path: out, size: expected.length, literals: [{ offset: 0, data: head }, { offset: expected.length - 1, data: new Uint8Array([0xaa]) }] }],
    pieces: [copy("t0", 0, n0, head.length), copy("t1", 1, n1, head.length + n0 * 4)],
    threads,
  });

  for (const [ramp, threads] of [["0", 2], ["4", 2], ["12", 1], ["4", 1], ["2048", 2]] as const) {
    it(`TENSORMERGE_RAMP_KIB=${ramp}, ${threads} thread(s): the inputs' bytes at odd offsets, windows ramped`, async () => {
      restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_RAMP_KIB: ramp });
      const out = dir.file(`ramp-${ramp}-${threads}.bin`);
      const result = await runNativeJob(job(out, threads));
      assert.ok(readFileSync(out).equals(expected), "output bytes differ from the inputs'");
      const stats = result.stats!;
      const full = Math.ceil(expected.length / (1 << 20)); // windows without a ramp
      // A ramp of at least a window is no ramp.
      const ramped = Number(ramp) > 0 && Number(ramp) < 1024;
      assert.equal(stats.rampBytes, ramped ? Number(ramp) * 1024 : 0);
      if (ramped) assert.ok(stats.windows! > full + 8, `${stats.windows} windows: the ramp did not make small windows`);
      else assert.equal(stats.windows, full);
      assert.ok(stats.secondsFirstWrite! > 0 && stats.secondsFirstWrite! <= stats.seconds!, `secondsFirstWrite ${stats.secondsFirstWrite}`);
      assert.ok(stats.secondsDrain! >= 0 && stats.secondsWriterIdle! >= 0);
    });
  }

  it("prepareOutputBuffers: the job takes the prefaulted buffers and empties the pool; TENSORMERGE_PREFAULT_BUFFERS=0 pools none", async () => {
    const native = loadNative()!;
    for (const knob of [undefined, "0"]) {
      restore();
      restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1" });
      if (knob) process.env.TENSORMERGE_PREFAULT_BUFFERS = knob;
      else delete process.env.TENSORMERGE_PREFAULT_BUFFERS;
      try {
        const pooled = await native.prepareOutputBuffers!(expected.length);
        assert.equal(pooled, knob ? 0 : 2 * ((1 << 20) + 64), "pooled bytes (2 windows of 1 MiB + slack)");
        // Asked for twice before a job: still one job's worth.
        assert.equal(await native.prepareOutputBuffers!(expected.length), pooled);
        const out = dir.file(`prefault-${knob ?? "on"}.bin`);
        const result = await runNativeJob(job(out, 2));
        assert.ok(readFileSync(out).equals(expected));
        assert.equal(result.stats!.outputBuffersPrefaulted, knob ? 0 : 2);
        assert.equal(await native.prepareOutputBuffers!(0), 0, "the job left buffers in the pool");
      } finally {
        delete process.env.TENSORMERGE_PREFAULT_BUFFERS;
      }
    }
    // A pool of another size (the job's window was narrowed, or the estimate was wrong) is not taken, and still emptied.
    restore();
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "4" });
    assert.ok((await native.prepareOutputBuffers!(64 << 20)) > 0);
    restore();
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1" });
    const result = await runNativeJob(job(dir.file("prefault-other.bin"), 2));
    assert.equal(result.stats!.outputBuffersPrefaulted, 0);
    assert.equal(await native.prepareOutputBuffers!(0), 0);
    // discardOutputBuffers empties it without a job.
    assert.ok((await native.prepareOutputBuffers!(expected.length)) > 0);
    native.discardOutputBuffers!();
    assert.equal(await native.prepareOutputBuffers!(0), 0);
  });
});
