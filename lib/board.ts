/**
 * Runs a planned board: checks targets and disk space, runs each pass on the chosen engine into
 * temporary files, patches zip records, and gives every output its final name only when all
 * passes succeeded. `merge()` is a board of one row.
 */
import { defaultThreads, newControl, runJob } from "./engine";
import { assertInputsUnchanged, stampInputs } from "./engine/input-stamps";
import { MergeError } from "./errors";
import type { MergeProgress } from "./merge";
import { checkFreeSpace, checkTargets, commitFile, patchFile, removeQuietly, removeStaleTemps, tempPathFor } from "./outputs";
import type { BoardPlan } from "./plan";

export interface RunOptions {
  engine: "native" | "js";
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  overwrite?: boolean;
  onProgress?: (progress: MergeProgress) => void;
  signal?: AbortSignal;
}

export interface RunResult {
  isa: string;
  threads: number;
  seconds: number;
  /** CRC-32s per output, in plan order (zip outputs only). */
  passes: number;
}

/**
 * Checks what can be checked before anything is written, after removing the temporary files
 * killed merges left beside the targets. Returns the paths of those removed.
 */
export async function preflight(plan: BoardPlan, overwrite: boolean): Promise<string[]> {
  const outputs = plan.passes.flatMap((p) => p.outputs);
  await checkTargets(outputs.map((o) => o.path), plan.inputs.map((m) => m.path), overwrite);
  const removed = await removeStaleTemps(outputs.map((o) => o.path));
  await checkFreeSpace(outputs.map((o) => ({ path: o.path, size: o.layout.size })));
  return removed;
}

export async function executePlan(plan: BoardPlan, options: RunOptions, started = Date.now()): Promise<RunResult> {
  const outputs = plan.passes.flatMap((p) => p.outputs);
  const temps = new Map(outputs.map((o) => [o, tempPathFor(o.path)]));
  const total = plan.bytesToWrite;
  let doneBefore = 0;
  let passNumber = 1;
  let control = newControl(total);
  const onAbort = () => { control[0] = 1; };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const report = () => {
    const bytesDone = Math.min(total, doneBefore + control[1]!);
    options.onProgress?.({ bytesDone, bytesTotal: total, fraction: total ? bytesDone / total : 1, elapsedSeconds: (Date.now() - started) / 1000, pass: passNumber, passes: plan.passes.length });
  };
  const timer = options.onProgress ? setInterval(report, 200) : undefined;
  timer?.unref();
  let isa = "";
  let threads = options.threads ?? defaultThreads();
  try {
    const stamps = await stampInputs(plan.inputs); // an input changed mid-merge fails it, before commit
    for (const [index, pass] of plan.passes.entries()) {
      passNumber = index + 1;
      control = newControl(total);
      if (options.signal?.aborted) onAbort(); // aborted before this pass: no event will come
      const result = await runJob(
        {
          inputs: plan.inputs.map((m) => ({ path: m.path, size: m.size })),
          outputs: pass.outputs.map((o) => ({ path: temps.get(o)!, size: o.layout.size, literals: o.layout.literals, ...(o.layout.crc32Ranges ? { crc32Ranges: o.layout.crc32Ranges } : {}) })),
          pieces: pass.pieces,
          threads,
          isa: options.isa ?? "auto",
          control,
        },
        options.engine,
      );
      isa = result.isa;
      threads = result.threads;
      for (let i = 0; i < pass.outputs.length; i++) {
        const finish = pass.outputs[i]!.layout.finish;
        if (finish) await patchFile(temps.get(pass.outputs[i]!)!, finish(result.crc32[i] ?? []));
      }
      doneBefore += pass.outputs.reduce((s, o) => s + o.layout.size, 0);
      await assertInputsUnchanged(stamps);
    }
    if (options.signal?.aborted) throw new MergeError("ABORTED", "the merge was cancelled");
    for (const o of outputs) await commitFile(temps.get(o)!, o.path, options.overwrite === true);
    control[1] = 0;
    doneBefore = total;
    report();
    return { isa, threads, seconds: (Date.now() - started) / 1000, passes: plan.passes.length };
  } catch (e) {
    if (options.signal?.aborted && !(e instanceof MergeError && e.code === "ABORTED")) {
      throw new MergeError("ABORTED", "the merge was cancelled", { cause: e });
    }
    throw e;
  } finally {
    if (timer) clearInterval(timer);
    options.signal?.removeEventListener("abort", onAbort);
    for (const t of temps.values()) await removeQuietly(t);
  }
}
