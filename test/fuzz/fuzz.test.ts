/**
 * The bounded CI run of `npm run fuzz`: each libFuzzer target of native/fuzz (ASan + UBSan)
 * for a few thousand executions over the committed corpus, and the safetensors header
 * mutation fuzzer (the ckpt parsers' bounded runs are in test/ckpt/fuzz.test.ts). Under
 * CI=true a missing clang fails the test instead of skipping it. The long runs and their
 * figures: native/fuzz/README.md.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { MergeError } from "../../lib/errors";
import { tempDir } from "../helpers/models";
import { runFuzzTarget } from "./runner";
import { FuzzFinding, TS_TARGETS, type FuzzTarget } from "./targets";

const root = resolve(__dirname, "../../..");
const NATIVE_RUNS = 3000;

interface Report {
  results: { target: string; executions: number; findings: string[]; outcomes: Record<string, number> }[];
}

function clangAvailable(): boolean {
  return spawnSync("/bin/sh", ["-c", "command -v clang++"]).status === 0;
}

describe("fuzz (bounded)", function () {
  this.timeout(600_000); // the first run builds the instrumented core (about a minute on 2 cores)
  const tmp = tempDir("tm-fuzz-");
  after(() => tmp.cleanup());

  it(`libFuzzer targets: ${NATIVE_RUNS} executions each over the committed corpus, no findings`, function () {
    if (!clangAvailable()) {
      if (process.env.CI === "true") assert.fail("clang++ is missing: CI must install clang and libclang-rt-14-dev (see .ci/run)");
      this.skip();
    }
    const work = tmp.fresh("work");
    const json = join(work, "report.json");
    const r = spawnSync(process.execPath, [join(root, "scripts", "fuzz.js"), "--corpus-only", "--runs", String(NATIVE_RUNS), "--targets", "job_validate,engine_files", "--work", work, "--json", json], {
      cwd: root, encoding: "utf8", env: { ...process.env, TMPDIR: tmp.fresh("scratch") }, timeout: 580_000,
    });
    assert.equal(r.status, 0, `scripts/fuzz.js exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(readFileSync(json, "utf8")) as Report;
    assert.deepEqual(report.results.map((x) => x.target), ["job_validate", "engine_files"]);
    for (const t of report.results) {
      assert.ok(t.executions >= NATIVE_RUNS, `${t.target}: ${t.executions} executions`);
      assert.deepEqual(t.findings, [], `${t.target} found something`);
      // The corpus reaches accepted jobs and several refusals, not only the first check.
      assert.ok((t.outcomes.OK ?? 0) > 0 && Object.keys(t.outcomes).length >= 4, `${t.target} outcomes ${JSON.stringify(t.outcomes)}`);
    }
    assert.ok((report.results[1]!.outcomes.SIZE_MISMATCH ?? 0) > 0 && (report.results[1]!.outcomes.FILE_NOT_FOUND ?? 0) > 0, "engine_files reaches the file checks");
  });

  it("safetensors header: 20,000 mutated files parse as an independent JSON reading says, or are refused", async () => {
    const target = TS_TARGETS.find((t) => t.name === "safetensors-header")!;
    const r = await runFuzzTarget(target, { runs: 20_000, seed: 1 });
    const first = r.findings[0];
    assert.equal(r.findings.length, 0, first && `seed 1 iteration ${first.iteration}: ${first.message}`);
    assert.ok((r.outcomes.ok ?? 0) > 0 && Object.keys(r.outcomes).length >= 8, JSON.stringify(r.outcomes));
  });

  it("the TS runner reports a non-MergeError as a finding, with its iteration, and replays it", async () => {
    // A parser that throws a TypeError on inputs containing byte 0xff, a MergeError otherwise.
    const broken: FuzzTarget = {
      name: "broken",
      seeds: () => [Buffer.from("seed")],
      mutate: TS_TARGETS[1]!.mutate,
      check: async (d) => {
        if (d.length === 4 && Buffer.from(d).toString() === "seed") return "ok";
        try {
          if (d.includes(0xff)) throw new TypeError("boom");
          throw new MergeError("PICKLE_INVALID", "refused");
        } catch (e) {
          if (e instanceof MergeError) return `${e.code}|${e.message}`;
          throw new FuzzFinding(String(e));
        }
      },
    };
    const a = await runFuzzTarget(broken, { runs: 5000, seed: 7, maxFindings: 1 });
    const b = await runFuzzTarget(broken, { runs: 5000, seed: 7, maxFindings: 1 });
    assert.equal(a.findings.length, 1);
    assert.match(a.findings[0]!.message, /TypeError: boom/);
    assert.ok(a.findings[0]!.input.includes(0xff));
    assert.equal(b.findings[0]!.iteration, a.findings[0]!.iteration);
    assert.deepEqual(b.findings[0]!.input, a.findings[0]!.input);
  });
});
