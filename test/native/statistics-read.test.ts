/**
 * The statistics read (native/core/engine_statistics_reads.cc queue_statistics_reads, TENSORMERGE_STATISTICS_READ):
 * the inputs of pieces with statistics brought in ahead of their statistics pass by a helper
 * thread (1 MADV_POPULATE_READ, 2 MADV_WILLNEED, 3 read() thrown away; 0 off), and the reader
 * leaving those pieces to the map. Only where the bytes come from changes, so every mode, with
 * the reader forced on or off, drop-behind forced, windows that split the big tensors, and 1 or 2
 * threads must give the TS engine's bytes (an independent implementation of the methods), as must
 * every read-ahead budget (TENSORMERGE_STATISTICS_AHEAD_MIB: none, tiny, the whole model), with the
 * helper touching what it populated once per page, once per line or not (TENSORMERGE_STATISTICS_TOUCH), on the
 * populating thread or on a thread of its own (TENSORMERGE_STATISTICS_TOUCH_THREAD). One
 * input is evicted from the page cache before each run so the cold paths (drop-behind of the
 * pieces read ahead) run too.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { evictFiles } from "../../bench/floor";
import { merge } from "../../lib/merge";
import { ENGINES, setOnlyTuningKnobs } from "../helpers/engines";
import { writeStatisticsModelSet, statisticsSuite } from "./helpers";

/** Small tensors, and big ones that span several 1 MiB windows (fp32: 4 MB and 2.4 MB; fp16: 2 MB). */
const LENGTHS = [7, 4097, 1_000_003, 65, 600_001, 1_048_577];

function writeModelSet(dir: string, m: number): string {
  return writeStatisticsModelSet(dir, m, LENGTHS, 17, 5);
}

describe("native engine: the statistics read (inputs of pieces with statistics read ahead)", function () {
  this.timeout(600000);
  const suite = statisticsSuite("tm-stats-read-", writeModelSet);
  const capture = suite.capture;

  const cases = [
    { method: "slerp", multiplier: 0.35, inputs: () => ({ a: suite.paths[0], b: suite.paths[1] }) },
    { method: "ties", params: { density: 0.3 }, modelWeights: [1, -0.6], inputs: () => ({ base: suite.paths[0], models: suite.paths.slice(1) }) },
  ];
  for (const c of cases) {
    it(`${c.method}: modes 0-3, reader on/off, drop-behind, 1 MiB windows, threads 1/2: the TS engine's bytes`, async function () {
      if (!ENGINES.includes("native")) this.skip();
      const { inputs, ...rest } = c;
      const options = { recipeMetadata: false, dtype: "fp16", ...inputs(), ...rest };
      const ref = join(suite.dir, `${c.method}-js.safetensors`);
      await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
      const expected = readFileSync(ref);
      const readerBytes: Record<string, number> = {};
      for (const mode of ["0", "1", "2", "3"]) {
        // "1" (the default: on when drop-behind applies and inputs are cold) after "2", whose bytes it is checked against.
        for (const reader of ["0", "2", "1"]) {
          for (const threads of [1, 2]) {
            const knobs = {
              TENSORMERGE_STATISTICS_READ: mode, TENSORMERGE_BUFFERED_READS: reader, TENSORMERGE_RELEASE_INPUTS: "3", TENSORMERGE_WINDOW_MIB: "1",
              TENSORMERGE_DIRECT_READS: "0",
            };
            const restore = setOnlyTuningKnobs(knobs);
            try {
              evictFiles([suite.paths[1]!]);
              const out = join(suite.dir, `${c.method}-${mode}-${reader}-${threads}.safetensors`);
              capture.reset();
              await merge({ ...options, engine: "native", threads, out } as never);
              const stats = capture.last()!;
              assert.ok(readFileSync(out).equals(expected), `${c.method}: ${JSON.stringify(knobs)}, threads ${threads}`);
              assert.equal(stats.statisticsRead, Number(mode), "TENSORMERGE_STATISTICS_READ did not reach the engine (or POPULATE_READ was refused)");
              if (reader !== "1") assert.equal(stats.bufferedReads, reader === "2" ? 1 : 0, "reader forced");
              // By default the reader starts only where it has something to read: with the statistics read on, the
              // pieces without statistics (here none: every tensor is merged with them) are all it would read.
              else assert.equal(stats.bufferedReads, mode === "0" || readerBytes[mode]! > 0 ? 1 : 0, `reader started with nothing to read (mode ${mode})`);
              if (mode === "1") assert.ok(stats.bytesStatisticsAhead! > 4e6, `mode 1 populates every piece with statistics: ${stats.bytesStatisticsAhead}`);
              if (mode === "0") assert.equal(stats.bytesStatisticsAhead, 0);
              if (reader === "2" && threads === 1) readerBytes[mode] = stats.bytesBufferedRead! + stats.bytesDirectRead!;
            } finally {
              restore();
            }
          }
        }
      }
      // With the statistics read on, the reader leaves the pieces with statistics to the map.
      for (const mode of ["1", "2", "3"]) assert.ok(readerBytes[mode]! < readerBytes["0"]! / 4, `reader bytes, mode ${mode}: ${readerBytes[mode]} vs ${readerBytes["0"]} with it off`);
    });

    it(`${c.method}: read-ahead budgets 0, 1 MiB, the whole model (TENSORMERGE_STATISTICS_AHEAD_MIB), touch on/off, reader on/off, threads 1/2: the TS engine's bytes`, async function () {
      if (!ENGINES.includes("native")) this.skip();
      const { inputs, ...rest } = c;
      const options = { recipeMetadata: false, dtype: "fp16", ...inputs(), ...rest };
      const ref = join(suite.dir, `${c.method}-ahead-js.safetensors`);
      await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
      const expected = readFileSync(ref);
      const peaks: Record<string, number> = {};
      for (const [mode, touch] of [["1", "1"], ["1", "0"], ["1", "2"], ["2", "1"]] as const) {
        for (const mib of ["0", "1", "4096"]) {
          for (const reader of ["0", "2"]) {
            for (const threads of [1, 2]) {
              if (mode === "2" && (reader === "0" || threads === 1)) continue; // WILLNEED: one case per budget
              if (touch === "2" && mib !== "4096") continue; // the line-by-line touch: one budget
              const knobs = {
                TENSORMERGE_STATISTICS_READ: mode, TENSORMERGE_STATISTICS_AHEAD_MIB: mib, TENSORMERGE_STATISTICS_TOUCH: touch, TENSORMERGE_BUFFERED_READS: reader,
                TENSORMERGE_RELEASE_INPUTS: "3", TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_DIRECT_READS: "0",
              };
              const restore = setOnlyTuningKnobs(knobs);
              try {
                evictFiles([suite.paths[1]!]);
                const out = join(suite.dir, `${c.method}-ahead-${mode}-${touch}-${mib}-${reader}-${threads}.safetensors`);
                capture.reset();
                await merge({ ...options, engine: "native", threads, out } as never);
                const stats = capture.last()!;
                assert.ok(readFileSync(out).equals(expected), `${c.method}: ${JSON.stringify(knobs)}, threads ${threads}`);
                // The budget is capped at a quarter of MemAvailable, which may be under 4 GiB.
                assert.ok(stats.statisticsAheadBudget! <= Number(mib) * 2 ** 20, `budget ${stats.statisticsAheadBudget} > ${mib} MiB`);
                if (mib !== "4096") assert.equal(stats.statisticsAheadBudget, Number(mib) * 2 ** 20, "TENSORMERGE_STATISTICS_AHEAD_MIB did not reach the engine");
                if (mode === "1") assert.ok(stats.bytesStatisticsAhead! > 4e6, `mode 1 populates every piece with statistics: ${stats.bytesStatisticsAhead}`);
                // The touch applies to populated steps only (mode 1).
                assert.equal(stats.statisticsTouch, mode === "1" && touch !== "0" ? 1 : 0, "TENSORMERGE_STATISTICS_TOUCH did not reach the engine");
                // One load per 4 KiB page by default (what a fresh page costs is paid per page), per 64-byte line with 2.
                assert.equal(stats.statisticsTouchStride, mode !== "1" ? 0 : touch === "1" ? 4096 : touch === "2" ? 64 : 0, "touch stride");
                // Only steps not wholly cached are touched: here the evicted input's, not the others' (just written, cached).
                if (mode === "1" && touch !== "0") {
                  assert.ok(stats.bytesStatisticsTouched! > 0, `the evicted input's steps are touched: ${stats.bytesStatisticsTouched}`);
                  assert.ok(stats.bytesStatisticsTouched! < stats.bytesStatisticsAhead!, `cached steps are not touched: ${stats.bytesStatisticsTouched} of ${stats.bytesStatisticsAhead}`);
                } else assert.equal(stats.bytesStatisticsTouched, 0);
                if (mode === "1" && touch === "1" && reader === "2" && threads === 2) peaks[mib] = stats.statisticsAheadPeak!;
              } finally {
                restore();
              }
            }
          }
        }
      }
      // The whole model's statistics inputs are counted ahead at the first window (> 5 MB: the
      // first model's big tensors alone); 1 MiB adds at most a piece beyond the next window.
      assert.ok(peaks["4096"]! > 5e6 && peaks["4096"]! > peaks["1"]!, `peaks ahead: ${JSON.stringify(peaks)}`);
      assert.ok(peaks["1"]! >= peaks["0"]!, `peaks ahead: ${JSON.stringify(peaks)}`);
    });

    it(`${c.method}: the touch on its own thread or not (TENSORMERGE_STATISTICS_TOUCH_THREAD), 1/2 helpers, reader on/off, threads 1/2: the TS engine's bytes`, async function () {
      if (!ENGINES.includes("native")) this.skip();
      const { inputs, ...rest } = c;
      const options = { recipeMetadata: false, dtype: "fp16", ...inputs(), ...rest };
      const ref = join(suite.dir, `${c.method}-touch-thread-js.safetensors`);
      await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
      const expected = readFileSync(ref);
      for (const touchThread of ["0", "1"]) {
        for (const readers of ["1", "2"]) {
          for (const reader of ["0", "2"]) {
            for (const threads of [1, 2]) {
              const knobs = {
                TENSORMERGE_STATISTICS_READ: "1", TENSORMERGE_STATISTICS_TOUCH_THREAD: touchThread, TENSORMERGE_STATISTICS_READERS: readers, TENSORMERGE_BUFFERED_READS: reader,
                TENSORMERGE_RELEASE_INPUTS: "3", TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_DIRECT_READS: "0",
              };
              const restore = setOnlyTuningKnobs(knobs);
              try {
                evictFiles([suite.paths[1]!]);
                const out = join(suite.dir, `${c.method}-touch-thread-${touchThread}-${readers}-${reader}-${threads}.safetensors`);
                capture.reset();
                await merge({ ...options, engine: "native", threads, out } as never);
                const stats = capture.last()!;
                assert.ok(readFileSync(out).equals(expected), `${c.method}: ${JSON.stringify(knobs)}, threads ${threads}`);
                assert.equal(stats.statisticsTouchThread, Number(touchThread), "TENSORMERGE_STATISTICS_TOUCH_THREAD did not reach the engine");
                // The evicted input's steps are populated cold and handed to the touch: touched, or skipped if dropped meanwhile.
                assert.ok(stats.bytesStatisticsTouched! + stats.bytesStatisticsTouchSkipped! > 0, `cold steps reach the touch: ${stats.bytesStatisticsTouched}`);
                assert.ok(stats.bytesStatisticsTouched! + stats.bytesStatisticsTouchSkipped! < stats.bytesStatisticsAhead!, "cached steps are not touched");
                if (touchThread === "0") assert.equal(stats.bytesStatisticsTouchSkipped, 0, "only the touch thread skips steps");
              } finally {
                restore();
              }
            }
          }
        }
      }
    });
  }
});
