/**
 * The statistics hold's room within a window (native/core/engine_statistics_hold.cc): each held
 * piece gives its arena room back once its output pass has written it (after its group, not at
 * the end of the window), the pieces after it wait for that room in output order, and a piece
 * bigger than the arena is held in part (the first part of each input run; the rest through the
 * statistics read). With an arena that holds one big piece at a time and windows that span
 * several, every piece that fits alone must be held, and the output must still be the TS
 * engine's bytes (a piece whose room was reused before its output pass read it would not be).
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { evictFiles } from "../../bench/floor";
import { merge } from "../../lib/merge";
import { statisticsSuite } from "./helpers";
import { ENGINES, setOnlyTuningKnobs } from "../helpers/engines";
import { randomValues, writeModel, type TestTensor } from "../helpers/models";

const MIB = 2 ** 20;
const ARENA_MIB = 4;
/** fp32 lengths: 300_001 elements are 1.2 MB per input (3.6 MB for TIES's three inputs, 2.4 MB for SLERP's two: one at a time in 4 MiB); 1_500_001 is bigger than the arena. */
const LENGTHS = [65, 300_001, 4097, 300_001, 300_001, 7, 300_001, 1_500_001, 300_001, 33_333, 300_001];

function writeModelSet(dir: string, m: number): string {
  const tensors: Record<string, TestTensor> = {};
  LENGTHS.forEach((n, i) => {
    tensors[`model.diffusion_model.input_blocks.${i}.0.proj.weight`] = { dtype: "F32", shape: [n], values: randomValues(n, 41 * m + i, false) };
  });
  const path = join(dir, `w${m}.safetensors`);
  writeModel(path, tensors);
  return path;
}

/** What the arena takes for a piece of n fp32 elements per input (statistics_hold.h bytes_for: each run from its page, rounded up), written out here. */
function arenaBytes(n: number, files: number): number {
  return files * (Math.ceil((4096 + n * 4) / 4096) * 4096);
}

describe("native engine: the statistics hold gives each piece's room back after its output pass", function () {
  this.timeout(600000);
  const suite = statisticsSuite("tm-stats-hold-window-", writeModelSet);
  const capture = suite.capture;

  const cases = [
    { method: "ties", params: { density: 0.25 }, modelWeights: [1, 0.7], inputs: () => ({ base: suite.paths[0], models: suite.paths.slice(1) }), files: 3 },
    { method: "slerp", multiplier: 0.3, inputs: () => ({ a: suite.paths[1], b: suite.paths[2] }), files: 2 },
  ];
  for (const c of cases) {
    it(`${c.method}: a ${ARENA_MIB} MiB arena, 1 MiB windows, threads 1/2: every piece that fits alone held, the big one in part, the TS engine's bytes`, async function () {
      if (!ENGINES.includes("native")) this.skip();
      const { inputs, files, ...rest } = c;
      const options = { recipeMetadata: false, dtype: "fp16", inputCache: "bypass", ...inputs(), ...rest };
      const used = [...new Set(Object.values(inputs()).flat() as string[])];
      const ref = join(suite.dir, `${c.method}-js.safetensors`);
      await merge({ ...options, engine: "js", threads: 1, out: ref } as never);
      const expected = readFileSync(ref);
      // Each piece's input bytes; those that fit the arena alone must all be held.
      const fitting = LENGTHS.filter((n) => arenaBytes(n, files) <= ARENA_MIB * MIB).reduce((s, n) => s + n * 4 * files, 0);
      const big = LENGTHS.filter((n) => arenaBytes(n, files) > ARENA_MIB * MIB).reduce((s, n) => s + n * 4 * files, 0);
      assert.ok(big > ARENA_MIB * MIB && fitting > 3 * ARENA_MIB * MIB, "the layout needs pieces that fit only one at a time, and one that never fits");
      for (const threads of [1, 2]) {
        const restore = setOnlyTuningKnobs({ TENSORMERGE_STATISTICS_HOLD_MIB: String(ARENA_MIB), TENSORMERGE_WINDOW_MIB: "1" });
        try {
          evictFiles(used);
          const out = join(suite.dir, `${c.method}-${threads}.safetensors`);
          capture.reset();
          await merge({ ...options, engine: "native", threads, out } as never);
          const s = capture.last()!;
          assert.ok(readFileSync(out).equals(expected), `${c.method}, threads ${threads}: not the TS engine's bytes`);
          assert.equal(s.statisticsHoldBudget, ARENA_MIB * MIB);
          assert.ok(s.statisticsHoldPeak! <= s.statisticsHoldBudget!, `arena peak ${s.statisticsHoldPeak} over the budget`);
          const detail = JSON.stringify({ held: s.statisticsHeldBytes, ahead: s.bytesStatisticsAhead, room: s.statisticsHoldMissRoomBytes, rest: s.statisticsHoldRestBytes, fitting, big });
          assert.equal(s.statisticsHoldMissRoomBytes, 0, `a piece found no room at its statistics pass: ${detail}`);
          // Every fitting piece whole, and a part (at least a quarter of the arena) of the big one.
          assert.ok(s.statisticsHeldBytes! >= fitting + ARENA_MIB * MIB / 4, `held bytes: ${detail}`);
          assert.ok(s.statisticsHoldRestBytes! > 0 && s.statisticsHoldRestBytes! < big, `the big piece's part left to the map: ${detail}`);
          assert.ok(s.statisticsHeldBytes! + s.bytesStatisticsAhead! <= 1.01 * (fitting + big) + files * 4096, `bytes read twice: ${detail}`);
        } finally {
          restore();
        }
      }
    });
  }
});
