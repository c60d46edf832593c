/**
 * Drop-behind decides per input run whether its pages were cached before the merge asked for
 * them (native/core/residency.h): runs longer than 2 MiB on a sample of their pages (the
 * default), or page by page (TENSORMERGE_SAMPLED_RESIDENCY=0). Either way a run read from the
 * disk leaves the page cache after its window and a cached one stays: checked here with the
 * floor tool's mincore on inputs of 16 MiB (one window of fp16 output, so each input is one
 * 16 MiB run, sampled), one of them evicted before the merge. One window, because the kernel's
 * own read-ahead runs up to read_ahead_kb (8 MiB on the bench VM) past the pages being read: a
 * later small window could be mostly cached by the time it is checked, and then kept (as any
 * cached run is), which would make the test depend on the machine. The bytes stay the TS
 * engine's.
 */
import { strict as assert } from "node:assert";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { evictFiles, residency, warmFiles } from "../../bench/floor";
import { nativeAvailable } from "../../lib/engine";
import { merge } from "../../lib/merge";
import { captureEngineStats, setOnlyTuningKnobs } from "../helpers/engines";
import { tempDir, writeModel } from "../helpers/models";
import { haveCompiler } from "../helpers/compiler";

const N = 4 << 20; // F32 elements per input: 16 MiB

/** Element k of model `seed`: exact in fp32, so the TS engine's arithmetic matches bit for bit. */
function values(seed: number): Float32Array {
  const v = new Float32Array(N);
  for (let k = 0; k < N; k++) v[k] = ((k * (seed + 3)) % 1024) / 64 - 8;
  return v;
}

describe("drop-behind with sampled input residency", function () {
  this.timeout(120000);
  let dir: ReturnType<typeof tempDir>;
  let restore = () => {};
  const stats = captureEngineStats();
  const p = (name: string) => join(dir.path, name);

  before(function () {
    if (!nativeAvailable() || !haveCompiler()) this.skip();
    dir = tempDir("tm-residency-");
    for (const [name, seed] of [["a", 1], ["b", 2], ["c", 3]] as const)
      writeModel(p(`${name}.safetensors`), { "t.weight": { dtype: "F32", shape: [N], raw: new Uint8Array(values(seed).buffer) } });
  });
  afterEach(() => {
    restore();
    restore = () => {};
    stats.restore();
  });
  after(() => dir?.cleanup());

  const base = () => ({ recipeMetadata: false, a: p("a.safetensors"), b: p("b.safetensors"), c: p("c.safetensors"), method: "add-difference" as const, multiplier: 0.5, dtype: "fp16" as const });

  for (const sampled of ["1", "0"]) {
    it(`${sampled === "1" ? "sampled" : "page by page"}: the evicted input is dropped again, the cached ones stay cached, bytes equal the TS engine's`, async () => {
      mkdirSync(p(`js-${sampled}`));
      mkdirSync(p(`native-${sampled}`));
      await merge({ ...base(), out: join(p(`js-${sampled}`), "m.safetensors"), engine: "js" });
      const inputs = ["a", "b", "c"].map((n) => p(`${n}.safetensors`));
      warmFiles(inputs);
      evictFiles([inputs[1]!]);
      const before = residency(inputs);
      assert.ok(before[inputs[0]!]! > 0.99 && before[inputs[2]!]! > 0.99, `A and C cached before the merge: ${JSON.stringify(before)}`);
      assert.ok(before[inputs[1]!]! < 0.01, `B evicted before the merge: ${JSON.stringify(before)}`);
      // Drop-behind forced (the inputs are far below RAM / 2), the map path (no buffered
      // reader, which has its own residency snapshot), the default 32 MiB window and no ramp
      // windows (engine_stream.cc window_end: they would cut this 8 MiB output into four): one window.
      restore = setOnlyTuningKnobs({ TENSORMERGE_RELEASE_INPUTS: "3", TENSORMERGE_BUFFERED_READS: "0", TENSORMERGE_SAMPLED_RESIDENCY: sampled, TENSORMERGE_RAMP_KIB: "0" });
      stats.install();
      const out = join(p(`native-${sampled}`), "m.safetensors");
      await merge({ ...base(), out, engine: "native", threads: 2 });
      assert.equal(stats.last()?.dropBehind, 1);
      assert.equal(stats.last()?.bufferedReads, 0);
      assert.equal(stats.last()?.sampledResidency, Number(sampled));
      const after = residency(inputs);
      assert.equal(stats.last()?.windows, 1);
      // B's first page (the header's, read by the TS layer before the merge) stays cached.
      assert.ok(after[inputs[1]!]! < 0.01, `B's pages were read from the disk and dropped behind: ${JSON.stringify(after)}`);
      assert.ok(after[inputs[0]!]! > 0.99 && after[inputs[2]!]! > 0.99, `A and C stay cached: ${JSON.stringify(after)}`);
      assert.ok(readFileSync(out).equals(readFileSync(join(p(`js-${sampled}`), "m.safetensors"))), "bytes differ from the TS engine's");
    });
  }
});
