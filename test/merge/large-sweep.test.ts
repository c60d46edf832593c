/**
 * Large sweeps: a 10,001-value sweep is refused (or planned) with memory proportional to the keys
 * plus the outputs, not their product; passes are split to bound the job; headers are built per
 * pass and match a layout built directly.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { closeSync, ftruncateSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { executePlan, preflight } from "../../lib/board";
import { openModel } from "../../lib/formats";
import { layoutOutput, type OutputFormat } from "../../lib/formats/output";
import { layoutSafetensors } from "../../lib/formats/safetensors";
import { merge } from "../../lib/merge";
import { resolveMethod } from "../../lib/methods/registry";
import { MAX_WRITES_PER_PASS, planBoard } from "../../lib/plan";
import { layoutRowOutputs } from "../../lib/plan-layouts";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../../lib/synthetic";
import { ENGINES } from "../helpers/engines";
import { randomValues, tempDir, writeModel } from "../helpers/models";

const CLI = join(__dirname, "../../lib/cli/main.js");

/** A full-size SD 1.5 safetensors file whose data is a hole: 4 GiB on paper, a few KiB on disk. */
function sparseSd15(path: string): number {
  const entries = loadBuiltinLayout("sd15").map(([name, shape, dtype]) => ({ name, shape, dtype }));
  const { header, size } = layoutSafetensors(entries, {});
  const fd = openSync(path, "wx");
  try {
    writeSync(fd, header, 0, header.length, 0);
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
  return size;
}

describe("large sweeps", function () {
  this.timeout(180_000);
  const dir = tempDir();
  after(() => dir.cleanup());

  it("refuses a 10,001-value sweep that cannot fit on the disk with DISK_FULL, in a 512 MiB heap, writing nothing", () => {
    const folder = dir.fresh("disk-full");
    const a = join(folder, "a.safetensors"), b = join(folder, "b.safetensors");
    const size = sparseSd15(a);
    sparseSd15(b);
    // 10,001 outputs of ~4 GiB each: ~40 TiB, more than any test machine has free.
    assert.ok(size * 10_001 > 1e13);
    const r = spawnSync(process.execPath, ["--max-old-space-size=512", CLI, "merge", "--a", a, "--b", b, "--multiplier", "0:1:0.0001", "--out", join(folder, "sweep.safetensors"), "--no-metadata", "--quiet"], { encoding: "utf8" });
    assert.equal(r.status, 1, `exit ${r.status} (signal ${r.signal}): ${r.stderr.slice(0, 500)}`);
    assert.match(r.stderr, /\[DISK_FULL\].*needed.*free/);
    assert.deepEqual(readdirSync(folder).sort(), ["a.safetensors", "b.safetensors"]);
  });

  it("plans a 1,001-value sweep of an SD 1.5-layout model in passes that each hold at most MAX_WRITES_PER_PASS writes", async () => {
    const folder = dir.fresh("passes");
    const layout = shrinkLayout(loadBuiltinLayout("sd15"), 256);
    const [a, b] = [join(folder, "a.safetensors"), join(folder, "b.safetensors")];
    await writeSyntheticModel(a, layout, { seed: 1 });
    await writeSyntheticModel(b, layout, { seed: 2 });
    const multipliers = Array.from({ length: 1001 }, (_, i) => i / 1000);
    const plan = planBoard({
      rows: [{
        name: "sweep", method: resolveMethod("weighted-sum"), inputs: { a: { model: await openModel(a) }, b: { model: await openModel(b) } }, multipliers,
        outputs: multipliers.map((m) => ({ path: join(folder, `o-${m}.safetensors`), format: "safetensors" as const, metadata: { format: "pt", m: String(m) } })),
      }],
    });
    const outputs = plan.passes.flatMap((p) => p.outputs);
    assert.equal(outputs.length, 1001);
    // Every output's size is known without building its header (the disk check needs it).
    assert.equal(plan.bytesToWrite, outputs.reduce((s, o) => s + o.layout.size, 0));
    // Each key of this layout is one piece: writes = outputs × keys, split across passes.
    const perPass = Math.floor(MAX_WRITES_PER_PASS / layout.length);
    assert.equal(plan.passes.length, Math.ceil(1001 / perPass));
    for (const pass of [plan.passes[0]!, plan.passes.at(-1)!]) {
      const writes = pass.pieces.reduce((n, p) => n + p.writes.length, 0);
      assert.equal(writes, pass.outputs.length * layout.length);
      assert.ok(writes <= MAX_WRITES_PER_PASS, `${writes} writes in one pass`);
    }
  });

  for (const engine of ENGINES) {
    it(`a sweep split into several passes equals single merges, byte for byte (${engine})`, async () => {
      const folder = dir.fresh(`split-${engine}`);
      const [a, b] = [join(folder, "a.safetensors"), join(folder, "b.safetensors")];
      for (const [p, seed] of [[a, 1], [b, 2]] as const) {
        writeModel(p, { "x.weight": { dtype: "F16", shape: [33, 3], values: randomValues(99, seed) }, "y.bias": { dtype: "F32", shape: [5], values: randomValues(5, seed + 7) }, ids: { dtype: "I64", shape: [3], values: [0, 1, 2] } });
      }
      const values = [0.1, 0.25, 0.5, 0.75, 1];
      const plan = planBoard({
        // Three keys, one piece each: 6 writes allow two outputs per pass.
        maxWritesPerPass: 6,
        rows: [{
          name: "sweep", method: resolveMethod("weighted-sum"), inputs: { a: { model: await openModel(a) }, b: { model: await openModel(b) } }, multipliers: values, dtype: "bf16",
          outputs: values.map((m) => ({ path: join(folder, `sweep-${m}.safetensors`), format: "safetensors" as const, metadata: { format: "pt" } })),
        }],
      });
      assert.deepEqual(plan.passes.map((p) => p.outputs.length), [2, 2, 1]);
      await preflight(plan, false);
      await executePlan(plan, { engine });
      for (const m of values) {
        const single = join(folder, `single-${m}.safetensors`);
        await merge({ recipeMetadata: false, a, b, method: "weighted-sum", multiplier: m, dtype: "bf16", out: single, engine });
        assert.ok(readFileSync(single).equals(readFileSync(join(folder, `sweep-${m}.safetensors`))), `M=${m}`);
      }
    });
  }

  it("lays out outputs sharing a layout class exactly as laying each out on its own", () => {
    const entries = shrinkLayout(loadBuiltinLayout("sd15"), 128).slice(0, 40).map(([name, shape, dtype]) => ({ name, shape, dtype }));
    // Same lengths in characters but not in UTF-8 or JSON bytes; a dropped value; no metadata.
    const metadata: Record<string, string>[] = [{ format: "pt", m: "0.12" }, { format: "pt", m: "0.13" }, { format: "pt", m: "0.é3" }, { format: "pt", m: '0."3' }, { format: "pt", m: "0.1\n" }, { format: "xx", m: "0.12" }, {}, { m: "a".repeat(300) }, { m: "b".repeat(300) }];
    for (const format of ["safetensors", "ckpt"] as OutputFormat[]) {
      const planned = layoutRowOutputs(entries, metadata.map((m) => ({ format, metadata: m })));
      metadata.forEach((m, i) => {
        const direct = layoutOutput(format, entries, m);
        const p = planned[i]!;
        assert.equal(p.size, direct.size, `${format} ${JSON.stringify(m)}`);
        assert.deepEqual(p.offsets, direct.offsets);
        assert.deepEqual(p.literals.map((l) => [l.offset, Buffer.from(l.data).toString("hex")]), direct.literals.map((l) => [l.offset, Buffer.from(l.data).toString("hex")]));
        assert.deepEqual(p.crc32Ranges, direct.crc32Ranges);
        const crcs = (direct.crc32Ranges ?? []).map((_, k) => k * 7919);
        if (direct.finish) assert.deepEqual(p.finish!(crcs), direct.finish(crcs));
      });
    }
  });
});
