/**
 * Planning cost of a large sweep: peak memory and time of `planBoard` for a weighted sum of two
 * SD 1.5-layout models (every real key, shapes shrunk: the planner's work depends on the keys and
 * the outputs, not on the tensor sizes) with N multipliers, then of building each pass's job as
 * the engines receive it, one pass at a time. Peak RSS is the kernel's VmHWM of this process.
 *
 * usage: node dist/bench/plan-sweep.js [--values 10001] [--shrink 64] [--no-jobs]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { sampleMemory } from "../lib/bench/memory";
import { openModel } from "../lib/formats";
import { resolveMethod } from "../lib/methods/registry";
import { planBoard } from "../lib/plan";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../lib/synthetic";

const MiB = 1024 * 1024;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { values: { type: "string", default: "10001" }, shrink: { type: "string", default: "64" }, "no-jobs": { type: "boolean" } } });
  const count = Number(values.values);
  const dir = mkdtempSync(join(tmpdir(), "tm-plan-sweep-"));
  try {
    const layout = shrinkLayout(loadBuiltinLayout("sd15"), Number(values.shrink));
    const [a, b] = [join(dir, "a.safetensors"), join(dir, "b.safetensors")];
    await writeSyntheticModel(a, layout, { seed: 1 });
    await writeSyntheticModel(b, layout, { seed: 2 });
    const models = { a: { model: await openModel(a) }, b: { model: await openModel(b) } };
    const multipliers = Array.from({ length: count }, (_, i) => (count === 1 ? 0.5 : Math.round((i / (count - 1)) * 1e10) / 1e10));
    // Metadata of the size merge() writes (recipe, model hashes) and different per output.
    const metadata = (m: number) => ({ format: "pt", sd_merge_recipe: JSON.stringify({ type: "weighted-sum", multiplier: m, pad: "x".repeat(1500) }) });
    global.gc?.();
    const before = sampleMemory();
    const t0 = process.hrtime.bigint();
    const plan = planBoard({
      rows: [{
        name: "sweep", method: resolveMethod("weighted-sum"), inputs: models, multipliers,
        outputs: multipliers.map((m) => ({ path: join(dir, `out-${m}.safetensors`), format: "safetensors" as const, metadata: metadata(m) })),
      }],
    });
    const planSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const afterPlan = sampleMemory();
    let writes = 0;
    const t1 = process.hrtime.bigint();
    if (!values["no-jobs"]) {
      for (const pass of plan.passes) {
        const pieces = pass.pieces;
        for (const p of pieces) writes += p.writes.length;
        for (const o of pass.outputs) void o.layout.literals.length;
        // As executePlan awaits each pass's job: headers built for a pass (held by WeakRefs
        // until the current job ends) become collectable.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    const jobSeconds = Number(process.hrtime.bigint() - t1) / 1e9;
    const end = sampleMemory();
    const mib = (n?: number) => (n === undefined ? "?" : `${(n / MiB).toFixed(0)} MiB`);
    console.log(`${layout.length} tensors, ${count} outputs, ${plan.passes.length} pass(es), ${writes} writes in the jobs`);
    console.log(`planBoard: ${planSeconds.toFixed(2)} s, RSS after ${mib(afterPlan.rss)} (before ${mib(before.rss)})`);
    if (!values["no-jobs"]) console.log(`jobs built pass by pass: ${jobSeconds.toFixed(2)} s`);
    console.log(`peak RSS (VmHWM): ${mib(end.hwm)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
