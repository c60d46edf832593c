/**
 * The engine knobs the benchmarks turn (`npm run bench -- --env KEY=VALUE`) must never change
 * a merge's bytes: every input-release mode, drop-behind included, and small windows (so a run
 * spans several windows and window boundaries cut through tensors), against the TS engine.
 */
import { strict as assert } from "node:assert";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nativeAvailable } from "../../lib/engine";
import { merge } from "../../lib/merge";
import { runNativeJob } from "../../lib/native/binding";
import { setOnlyTuningKnobs } from "../helpers/engines";
import { DT, makeJob } from "../native/helpers";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";

const KNOBS: Record<string, string>[] = [
  { TENSORMERGE_RELEASE_INPUTS: "0" },
  { TENSORMERGE_RELEASE_INPUTS: "1" },
  { TENSORMERGE_RELEASE_INPUTS: "2" },
  { TENSORMERGE_RELEASE_INPUTS: "3" },
  { TENSORMERGE_RELEASE_INPUTS: "3", TENSORMERGE_PREFETCH: "0" },
  { TENSORMERGE_DIRECT_IO: "0", TENSORMERGE_RELEASE_INPUTS: "3" },
  { TENSORMERGE_INTERLEAVE: "0" },
  // Buffered reads (prefetch.h merge_input_reader), forced on although the test's inputs are
  // cached: every run read into the read slots, with drop-behind, with one reader thread, and
  // with 1 MiB slots, too small for a window's runs (3 inputs x 1 MiB), so some runs of each
  // window are read from the slot and the others through the map.
  { TENSORMERGE_BUFFERED_READS: "2" },
  { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_RELEASE_INPUTS: "3" },
  { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_READERS: "1" },
  { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_READ_BUFFER_MIB: "1" },
  { TENSORMERGE_BUFFERED_READS: "0" },
  // Drop-behind and read-ahead checking every page of each run (the path before sampling, residency.h).
  { TENSORMERGE_SAMPLED_RESIDENCY: "0" },
  { TENSORMERGE_SAMPLED_RESIDENCY: "0", TENSORMERGE_RELEASE_INPUTS: "3" },
  // Ramp windows (engine_stream.cc window_end): 4 KiB first and last windows, with the reader forced
  // (read_window queues the next, smaller window's runs) and with drop-behind.
  { TENSORMERGE_RAMP_KIB: "4" },
  { TENSORMERGE_RAMP_KIB: "12", TENSORMERGE_BUFFERED_READS: "2" },
  { TENSORMERGE_RAMP_KIB: "4", TENSORMERGE_RELEASE_INPUTS: "3" },
];

function buildModel(path: string, seed: number, half: boolean): void {
  const tensors: Record<string, TestTensor> = { "a.u8": { dtype: "U8", shape: [3], raw: new Uint8Array([1, 2, 3]) } };
  // Odd lengths and a 1-byte tensor in front: offsets are not aligned to anything.
  [300_001, 262_144, 77_777, 400_003].forEach((n, i) => {
    tensors[`t${i}.weight`] = { dtype: half && i % 2 ? "F16" : "F32", shape: [n], values: randomValues(n, seed * 10 + i) };
  });
  writeModel(path, tensors);
}

/** A small copy job whose stats show the knobs as the addon read them. */
async function assertKnobsReachEngine(folder: string, knobs: Record<string, string>): Promise<void> {
  const inPath = join(folder, "probe.in");
  const n = 1 << 20; // 4 MiB copied: 4 windows of 1 MiB
  writeFileSync(inPath, Buffer.alloc(n * 4));
  const out = join(folder, `probe-${Date.now()}-${Math.random()}.out`);
  const result = await runNativeJob(makeJob({
    inputs: [{ path: inPath, size: n * 4 }],
    outputs: [{ path: out, size: n * 4, literals: [] }],
    pieces: [{ name: "probe", n, ops: [], writes: [{ output: 0, offset: 0, dtype: DT.F32, source: { kind: "input", file: 0, offset: 0, dtype: DT.F32 } }] }],
  }));
  rmSync(out);
  const stats = result.stats!;
  assert.equal(stats.windowBytes, 1 << 20, "TENSORMERGE_WINDOW_MIB did not reach the addon");
  // One way only: a file system without O_DIRECT (tmpfs) writes buffered whatever the knob says.
  if (knobs.TENSORMERGE_DIRECT_IO === "0") assert.equal(stats.bytesDirectIo, 0, "TENSORMERGE_DIRECT_IO did not reach the addon");
  assert.equal(stats.interleave, knobs.TENSORMERGE_INTERLEAVE === "0" ? 0 : 1, "TENSORMERGE_INTERLEAVE did not reach the addon");
  assert.equal(stats.dropBehind, knobs.TENSORMERGE_RELEASE_INPUTS === "3" ? 1 : 0, "TENSORMERGE_RELEASE_INPUTS did not reach the addon");
  // The probe's input was just written (cached): only the forced mode reads it into the slots,
  // every byte of it unless the slots are too small for a window (then the map reads the rest).
  const forced = knobs.TENSORMERGE_BUFFERED_READS === "2";
  assert.equal(stats.bufferedReads, forced ? 1 : 0, "TENSORMERGE_BUFFERED_READS did not reach the addon");
  if (forced && !knobs.TENSORMERGE_READ_BUFFER_MIB) assert.equal(stats.bytesBufferedRead, n * 4, "forced buffered reads did not read every input byte");
  if (!forced) assert.equal(stats.bytesBufferedRead, 0);
  assert.equal(stats.sampledResidency, knobs.TENSORMERGE_SAMPLED_RESIDENCY === "0" ? 0 : 1, "TENSORMERGE_SAMPLED_RESIDENCY did not reach the addon");
  // The default ramp (2 MiB) is no smaller than these 1 MiB windows: off.
  assert.equal(stats.rampBytes, knobs.TENSORMERGE_RAMP_KIB ? Number(knobs.TENSORMERGE_RAMP_KIB) * 1024 : 0, "TENSORMERGE_RAMP_KIB did not reach the addon");
}

describe("engine tuning knobs keep outputs bit-identical", function () {
  this.timeout(120000);
  let restore = () => {};
  let dir: ReturnType<typeof tempDir>;
  before(function () {
    if (!nativeAvailable()) this.skip();
    dir = tempDir("tm-knobs-");
    buildModel(join(dir.path, "a.safetensors"), 1, false);
    buildModel(join(dir.path, "b.safetensors"), 2, true);
    buildModel(join(dir.path, "c.safetensors"), 3, false);
  });
  after(() => {
    restore();
    dir?.cleanup();
  });

  it("a sweep (interleaved outputs) with buffered reads forced: each output equals the TS engine's", async () => {
    // Three outputs move through the inputs in step, so the window after each one is another
    // output's (the reader must queue that one, engine_reads.cc read_window); 2 MiB slots hold only
    // part of a window's runs, so the rest goes through the map.
    const p = (n: string) => join(dir.path, n);
    const values = [0.1, 0.25, 0.7];
    const base = { recipeMetadata: false, a: p("a.safetensors"), b: p("b.safetensors"), c: p("c.safetensors"), method: "add-difference" as const, multiplier: values, dtype: "fp16" as const };
    mkdirSync(p("sweep-js"), { recursive: true });
    await merge({ ...base, out: join(p("sweep-js"), "s.safetensors"), engine: "js" });
    for (const knobs of [{ TENSORMERGE_BUFFERED_READS: "2" }, { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_READ_BUFFER_MIB: "2" }, { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_RAMP_KIB: "8" }]) {
      restore();
      restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...knobs });
      const sub = p(`sweep-native-${knobs.TENSORMERGE_READ_BUFFER_MIB ?? "32"}-${knobs.TENSORMERGE_RAMP_KIB ?? "default"}`);
      mkdirSync(sub, { recursive: true });
      await merge({ ...base, out: join(sub, "s.safetensors"), engine: "native", threads: 2 });
      for (const m of values)
        assert.ok(readFileSync(join(sub, `s-${m}.safetensors`)).equals(readFileSync(join(p("sweep-js"), `s-${m}.safetensors`))), `${JSON.stringify(knobs)}, M=${m}`);
    }
  });

  for (const [method, dtype] of [["weighted-sum", "fp16"], ["add-difference", "fp32"]] as const) {
    it(`${method} → ${dtype}`, async () => {
      const p = (n: string) => join(dir.path, n);
      const base = { a: p("a.safetensors"), b: p("b.safetensors"), ...(method === "add-difference" ? { c: p("c.safetensors") } : {}), method, multiplier: 0.3, dtype };
      // Same file name everywhere: the name is part of the recipe metadata in the header.
      const outIn = (sub: string) => {
        mkdirSync(p(sub), { recursive: true });
        return join(p(sub), `${method}.safetensors`);
      };
      await merge({ ...base, out: outIn("js"), engine: "js" });
      const expected = readFileSync(outIn("js"));
      for (const [k, knobs] of KNOBS.entries()) {
        restore();
        restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...knobs });
        await assertKnobsReachEngine(dir.path, knobs);
        for (const threads of [1, 2]) {
          const out = outIn(`native-${k}-${threads}`);
          await merge({ ...base, out, engine: "native", threads });
          assert.ok(readFileSync(out).equals(expected), `${JSON.stringify(knobs)}, ${threads} thread(s)`);
        }
      }
    });
  }
});
