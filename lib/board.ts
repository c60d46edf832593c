/**
 * Runs a planned board: checks targets and disk space, runs each pass on the chosen engine into
 * temporary files, patches zip records, and gives every output its final name only when all
 * passes succeeded. `merge()` is a board of one row.
 */
import { GuardedCallback } from "./callback";
import { defaultThreads, newControl, runJob } from "./engine";
import { assertInputsUnchanged, stampInputs } from "./engine/input-stamps";
import { MergeError } from "./errors";
import type { MergeProgress } from "./merge";
import { checkFreeSpace, checkTargets, commitFile, patchFile, removeQuietly, removeStaleTemps, tempPathFor } from "./outputs";
import { materialiseSideFile } from "./formats/ckpt/strided";
import type { InputCache } from "./native/job";
import type { BoardPlan } from "./plan";

export interface RunOptions {
  engine: "native" | "js";
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  /** Page cache policy for uncached inputs (Job.inputCache); default "auto". */
  inputCache?: InputCache;
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
  /** Per output, in plan order: NaNs and infinities the merge computed (JobResult.nonFinite). */
  nonFinite: { path: string; nan: number; inf: number }[];
}

/**
 * One warning line per output holding NaNs or infinities the merge computed (none for clean
 * outputs). `rename` maps a temporary path to the name the user knows.
 */
export function nonFiniteWarnings(counts: RunResult["nonFinite"], rename: (path: string) => string = (p) => p): string[] {
  return counts.filter((c) => c.nan + c.inf > 0).map((c) => {
    const parts = [c.nan ? `${c.nan} NaN` : "", c.inf ? `${c.inf} infinite` : ""].filter(Boolean).join(" and ");
    return `${rename(c.path)}: the merge computed ${parts} value${c.nan + c.inf === 1 ? "" : "s"} (the formula overflowed the output dtype or met NaN/Inf); a model with them usually makes black or noise images`;
  });
}

/**
 * Checks what can be checked before anything is written, after removing the temporary files
 * killed merges left beside the targets. Returns the paths of those removed. `extraFiles`: other
 * files the run writes while it lasts (a bake's Tucker factors), counted by the free-space check.
 */
export async function preflight(plan: BoardPlan, overwrite: boolean, extraFiles: { path: string; size: number }[] = []): Promise<string[]> {
  const outputs = plan.passes.flatMap((p) => p.outputs);
  await checkTargets(outputs.map((o) => o.path), plan.inputs.map((m) => m.path), overwrite);
  const removed = await removeStaleTemps(outputs.map((o) => o.path));
  const sides = [...sideFileNeeds(plan).map((s) => ({ path: s.path, size: s.bytes })), ...extraFiles];
  await checkFreeSpace([...outputs.map((o) => ({ path: o.path, size: o.layout.size })), ...sides]);
  return removed;
}

/**
 * The disk space the contiguous copies of non-contiguous .ckpt tensors take while the merge
 * runs: they go beside the first output (executePlan). Counted by the free-space check and by
 * the dry runs' estimate alike.
 */
export function sideFileNeeds(plan: BoardPlan): { path: string; bytes: number }[] {
  const first = plan.passes[0]?.outputs[0];
  return first ? plan.sideInputs.map((s) => ({ path: first.path, bytes: s.size })) : [];
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
  // A throwing onProgress cancels the job and becomes its error (never an uncaught exception).
  const progress = options.onProgress ? new GuardedCallback(options.onProgress, onAbort) : undefined;
  const report = () => {
    const bytesDone = Math.min(total, doneBefore + control[1]!);
    progress?.call({ bytesDone, bytesTotal: total, fraction: total ? bytesDone / total : 1, elapsedSeconds: (Date.now() - started) / 1000, pass: passNumber, passes: plan.passes.length });
  };
  const timer = options.onProgress ? setInterval(report, 200) : undefined;
  timer?.unref();
  let isa = "";
  let threads = options.threads ?? defaultThreads();
  const nonFinite: RunResult["nonFinite"] = [];
  const sidePaths = new Map(plan.sideInputs.map((s) => [s, tempPathFor(outputs[0]!.path)]));
  try {
    const stamps = await stampInputs(plan.inputs); // an input changed mid-merge fails it, before commit
    for (const [side, path] of sidePaths) await materialiseSideFile(side, path, options.signal);
    for (const [index, pass] of plan.passes.entries()) {
      passNumber = index + 1;
      control = newControl(total);
      if (options.signal?.aborted || progress?.failed) onAbort(); // aborted before this pass: no event will come
      const result = await runJob(
        {
          inputs: [...plan.inputs, ...plan.sideInputs].map((m) => ({ path: sidePaths.get(m) ?? m.path, size: m.size })),
          outputs: pass.outputs.map((o) => ({ path: temps.get(o)!, size: o.layout.size, literals: o.layout.literals, ...(o.layout.crc32Ranges ? { crc32Ranges: o.layout.crc32Ranges } : {}) })),
          pieces: pass.pieces,
          threads,
          isa: options.isa ?? "auto",
          ...(options.inputCache ? { inputCache: options.inputCache } : {}),
          control,
        },
        options.engine,
      );
      isa = result.isa;
      threads = result.threads;
      for (let i = 0; i < pass.outputs.length; i++) {
        const count = result.nonFinite[i]!;
        nonFinite.push({ path: pass.outputs[i]!.path, nan: count.nan, inf: count.inf });
        const finish = pass.outputs[i]!.layout.finish;
        if (finish) await patchFile(temps.get(pass.outputs[i]!)!, finish(result.crc32[i] ?? []));
      }
      doneBefore += pass.outputs.reduce((s, o) => s + o.layout.size, 0);
      await assertInputsUnchanged(stamps);
    }
    // The last event comes before the outputs get their names: a callback that throws there still
    // leaves nothing behind.
    control[1] = 0;
    doneBefore = total;
    report();
    progress?.check();
    if (options.signal?.aborted) throw new MergeError("ABORTED", "the merge was cancelled");
    for (const o of outputs) await commitFile(temps.get(o)!, o.path, options.overwrite === true);
    return { isa, threads, seconds: (Date.now() - started) / 1000, passes: plan.passes.length, nonFinite };
  } catch (e) {
    progress?.check();
    if (options.signal?.aborted && !(e instanceof MergeError && e.code === "ABORTED")) {
      throw new MergeError("ABORTED", "the merge was cancelled", { cause: e });
    }
    throw e;
  } finally {
    if (timer) clearInterval(timer);
    options.signal?.removeEventListener("abort", onAbort);
    for (const t of [...temps.values(), ...sidePaths.values()]) await removeQuietly(t);
  }
}
