import * as engine from "../../lib/engine";
import type { Job, JobResult } from "../../lib/native/job";
/** The engines every end-to-end test runs on. Both are required: a missing addon fails the tests. */
export const ENGINES: ("native" | "js")[] = (process.env.TENSORMERGE_TEST_ENGINES?.split(",") as ("native" | "js")[] | undefined) ?? ["native", "js"];

/**
 * Sets the native engine's benchmark knobs (TENSORMERGE_WINDOW_MIB and friends) for the addon,
 * which reads them with getenv(): only property writes on Node's own `process.env` reach the C
 * environment (a replaced `process.env = {...}` object does not), so set and delete keys one by
 * one. Returns a function that puts every touched key back as it was.
 */
export function setEngineKnobs(knobs: Record<string, string | undefined>): () => void {
  const saved = Object.keys(knobs).map((k) => [k, process.env[k]] as const);
  const apply = (entries: readonly (readonly [string, string | undefined])[]) => {
    for (const [k, v] of entries) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(Object.entries(knobs));
  return () => apply(saved);
}

/**
 * Records the engine stats of each job the library runs (lib/engine's runJob, wrapped between
 * install and restore), so a test can tell which path a merge took.
 */
export function captureEngineStats(): { install(): void; restore(): void; reset(): void; last(): Record<string, number> | undefined } {
  const mod = engine as unknown as { runJob: (job: Job, e: "native" | "js") => Promise<JobResult> };
  let original: typeof mod.runJob | undefined;
  let last: Record<string, number> | undefined;
  return {
    install() {
      original = mod.runJob;
      const run = original;
      mod.runJob = async (job, e) => {
        const r = await run(job, e);
        last = r.stats;
        return r;
      };
    },
    restore() {
      if (original) mod.runJob = original;
      original = undefined;
    },
    reset() { last = undefined; },
    last: () => last,
  };
}

/** The engines' tuning knobs (native/binding.cc read_tuning; the TS engine reads some of them). */
export const TUNING_KNOB_NAMES = [
  "TENSORMERGE_WINDOW_MIB", "TENSORMERGE_RELEASE_INPUTS", "TENSORMERGE_PREFETCH", "TENSORMERGE_DIRECT_IO", "TENSORMERGE_INTERLEAVE",
  "TENSORMERGE_BUFFERED_READS", "TENSORMERGE_READ_BUFFER_MIB", "TENSORMERGE_READERS", "TENSORMERGE_DIRECT_READS", "TENSORMERGE_READ_PIECE_KIB",
  "TENSORMERGE_OUTPUT_BUFFERS", "TENSORMERGE_REDUCE_GROUP_KIB",
  "TENSORMERGE_SAMPLED_RESIDENCY", "TENSORMERGE_RAMP_KIB", "TENSORMERGE_PREFAULT_BUFFERS",
  "TENSORMERGE_STATISTICS_READ", "TENSORMERGE_STATISTICS_READERS", "TENSORMERGE_STATISTICS_AHEAD_MIB", "TENSORMERGE_STATISTICS_TOUCH", "TENSORMERGE_STATISTICS_TOUCH_THREAD", "TENSORMERGE_MAP_SEQUENTIAL",
  "TENSORMERGE_STATISTICS_HOLD_MIB",
  "TENSORMERGE_KTH_FUSED", "TENSORMERGE_TASK_MERGE_FUSED", "TENSORMERGE_SLERP_FUSED", "TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS", "TENSORMERGE_TS_WASM",
];

/** setEngineKnobs with every other tuning knob unset, so a knob from the environment cannot leak into a case. */
export function setOnlyTuningKnobs(knobs: Record<string, string | undefined>): () => void {
  return setEngineKnobs({ ...Object.fromEntries(TUNING_KNOB_NAMES.map((name) => [name, undefined])), ...knobs });
}
