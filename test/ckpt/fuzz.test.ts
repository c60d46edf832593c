/**
 * Bounded, deterministic mutation fuzzing of the pickle and zip parsers (part of `npm test`).
 * Every mutated input must either parse, with every tensor range inside the file, or be
 * refused with a MergeError; any other exception (TypeError, RangeError, a stack overflow)
 * or a hang is a bug. The targets, mutators and runner are shared with `npm run fuzz`
 * (test/fuzz/), which runs them for millions of executions; failures print the target, seed
 * and iteration to replay.
 *
 * TM_FUZZ_ITERATIONS=<n> multiplies the run for a longer local session.
 */
import { strict as assert } from "node:assert";
import { runFuzzTarget } from "../fuzz/runner";
import { TS_TARGETS } from "../fuzz/targets";

const SCALE = Math.max(1, Number(process.env.TM_FUZZ_ITERATIONS ?? "1"));

const RUNS: Record<string, { runs: number; seed: number }> = {
  pickle: { runs: 16000, seed: 1000 },
  zip: { runs: 6000, seed: 2000 },
  "ckpt-state-dict": { runs: 3000, seed: 3000 },
  legacy: { runs: 3000, seed: 4000 },
};

describe("ckpt fuzz (bounded, deterministic)", function () {
  this.timeout(120_000);

  for (const [name, { runs, seed }] of Object.entries(RUNS)) {
    it(`${name}: ${runs * SCALE} mutated inputs parse soundly or are refused with a MergeError`, async () => {
      const target = TS_TARGETS.find((t) => t.name === name)!;
      const r = await runFuzzTarget(target, { runs: runs * SCALE, seed });
      assert.equal(r.executions, runs * SCALE);
      const first = r.findings[0];
      assert.equal(r.findings.length, 0, first && `${name}: seed ${seed} iteration ${first.iteration}: ${first.message}`);
      assert.ok(r.outcomes.ok! > 0 && Object.keys(r.outcomes).length >= 2, `the mutations reach few checks: ${JSON.stringify(r.outcomes)}`);
    });
  }
});
