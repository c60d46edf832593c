/**
 * An input truncated or rewritten while a merge reads it (issue 9, item 2). Before the fix the
 * native engine died of SIGBUS (exit 135, temp file left); now both engines reject with a
 * MergeError naming the file, leave no file behind, and the process can merge again.
 *
 * Codes: a shrink that the engine runs into (a mapped read past the new end, or a short read
 * in the TS engine) is FILE_TRUNCATED, the code the TS engine always gave, because the bytes
 * the job needs are gone; a change that reads without error (same-size rewrite, new mtime) is
 * INPUT_CHANGED, found by comparing each input's size and mtime at the end, before commit.
 *
 * Every scenario runs in a child process: on an engine that crashes, the test fails instead of
 * killing mocha. The child pauses the engine after each 1 MiB window (TENSORMERGE_WINDOW_PAUSE_MS)
 * so the change lands mid-merge at the first progress report, whatever the machine's speed.
 */
import { strict as assert } from "node:assert";
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, truncateSync, watch } from "node:fs";
import { join } from "node:path";
import { nativeAvailable } from "../../lib/engine";
import { tempDir } from "../helpers/models";
import { model, type Change } from "./input-change-child";

const CHILD = join(__dirname, "input-change-child.js");
const CLI = join(__dirname, "..", "..", "lib", "cli", "main.js");
const PAUSE_ENV = { TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_WINDOW_PAUSE_MS: "50" };

interface ChildReport {
  first: { ok: boolean; isMergeError?: boolean; code?: string; path?: string; message?: string };
  changedAt: { bytesDone: number; bytesTotal: number } | null;
  filesAfter: string[];
  second: string;
  /** The second merge's reader stats (native engine). */
  secondReads: { bytesBufferedRead: number; bytesDirectRead: number } | null;
}

/** The native engine reading its inputs into memory with read() (prefetch.h), not through the maps. */
const BUFFERED_ENV = { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_DIRECT_READS: "0" };
/** The same reads with O_DIRECT (prefetch.h, direct reads). */
const DIRECT_ENV = { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_DIRECT_READS: "2" };

function runChild(dir: string, engine: "native" | "js", change: Change, trigger: "progress" | "start" = "progress", env: Record<string, string> = {}, method = "weighted-sum"): ChildReport {
  const r = spawnSync(process.execPath, [CHILD, JSON.stringify({ dir, engine, change, trigger, method })], {
    encoding: "utf8",
    env: { ...process.env, ...PAUSE_ENV, ...env },
    timeout: 60_000,
  });
  assert.equal(r.signal, null, `the merging process died of ${r.signal} (exit ${r.status}); stderr: ${r.stderr}`);
  assert.equal(r.status, 0, `child exited ${r.status}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as ChildReport;
}

describe("an input changed during a merge", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-input-change-");
  after(() => tmp.cleanup());

  for (const engine of ["native", "js"] as const) {
    describe(`${engine} engine`, () => {
      before(function () {
        if (engine === "native" && !nativeAvailable()) this.skip();
      });

      it("input truncated mid-merge: FILE_TRUNCATED naming the file, no file left, the next merge works", () => {
        const dir = tmp.fresh(`truncate-${engine}`);
        const report = runChild(dir, engine, "truncate");
        assert.ok(report.changedAt, "the input was never truncated: the merge ended before its first progress report");
        assert.ok(report.changedAt.bytesDone < report.changedAt.bytesTotal, "the truncation did not happen mid-merge");
        assert.equal(report.first.ok, false, "the merge succeeded although its input was truncated");
        assert.equal(report.first.isMergeError, true);
        assert.equal(report.first.code, "FILE_TRUNCATED", report.first.message);
        assert.equal(report.first.path, join(dir, "a.safetensors"));
        assert.ok(report.first.message!.includes(join(dir, "a.safetensors")), report.first.message);
        assert.match(report.first.message!, /truncated during the merge \(it is now 1000000 bytes/);
        assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"], "no output and no temporary file may remain");
        assert.equal(report.second, "ok", "a second merge in the same process must work");
      });

      it("input truncated as soon as the job has started: the same error, the next merge works", () => {
        const dir = tmp.fresh(`start-${engine}`);
        const report = runChild(dir, engine, "truncate", "start");
        assert.ok(report.changedAt, "the input was never truncated");
        assert.equal(report.first.ok, false, "the merge succeeded although its input was truncated");
        assert.equal(report.first.code, "FILE_TRUNCATED", report.first.message);
        assert.equal(report.first.path, join(dir, "a.safetensors"));
        assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"]);
        assert.equal(report.second, "ok");
      });

      it("input rewritten in place mid-merge (same size, new mtime): INPUT_CHANGED, nothing committed", () => {
        const dir = tmp.fresh(`rewrite-${engine}`);
        const report = runChild(dir, engine, "rewrite");
        assert.ok(report.changedAt && report.changedAt.bytesDone < report.changedAt.bytesTotal, "the rewrite did not happen mid-merge");
        assert.equal(report.first.ok, false, "the merge succeeded although its input changed");
        assert.equal(report.first.code, "INPUT_CHANGED", report.first.message);
        assert.equal(report.first.path, join(dir, "a.safetensors"));
        assert.match(report.first.message!, /changed during the merge/);
        assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"], "no output and no temporary file may remain");
        assert.equal(report.second, "ok");
      });

      it("input replaced by another file (renamed over it) mid-merge: INPUT_CHANGED, nothing committed", () => {
        const dir = tmp.fresh(`replace-${engine}`);
        const report = runChild(dir, engine, "replace");
        assert.ok(report.changedAt && report.changedAt.bytesDone < report.changedAt.bytesTotal, "the replacement did not happen mid-merge");
        assert.equal(report.first.code, "INPUT_CHANGED", report.first.message);
        assert.equal(report.first.path, join(dir, "a.safetensors"));
        assert.match(report.first.message!, /replaced by another file/);
        assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"]);
        assert.equal(report.second, "ok");
      });
    });
  }

  // SLERP: a helper thread populates and touches the pieces' inputs ahead of the statistics
  // pass (TENSORMERGE_STATISTICS_TOUCH, prefetch.cc touch, under the SIGBUS guard): a
  // truncation that lands while it reads must fail the job, not kill the process.
  describe("native engine, SLERP (statistics read ahead and touched)", () => {
    before(function () {
      if (!nativeAvailable()) this.skip();
    });
    for (const trigger of ["progress", "start"] as const) {
      it(`input truncated (${trigger === "start" ? "as soon as the job has started" : "mid-merge"}): FILE_TRUNCATED, no file left, the next merge works`, () => {
        const dir = tmp.fresh(`slerp-${trigger}`);
        const report = runChild(dir, "native", "truncate", trigger, { TENSORMERGE_STATISTICS_TOUCH: "1" }, "slerp");
        assert.ok(report.changedAt, "the input was never truncated");
        assert.equal(report.first.ok, false, "the merge succeeded although its input was truncated");
        assert.equal(report.first.code, "FILE_TRUNCATED", report.first.message);
        assert.equal(report.first.path, join(dir, "a.safetensors"));
        assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"], "no output and no temporary file may remain");
        assert.equal(report.second, "ok", "a second merge in the same process must work");
      });
    }
  });

  // The reader's two ways in: buffered pread, and O_DIRECT (a direct short read ends inside a
  // block, at the new end of the file). The second merge's stats show which way the child read.
  for (const [label, env, tag] of [["buffered reads (TENSORMERGE_BUFFERED_READS=2)", BUFFERED_ENV, "buffered"], ["direct reads (TENSORMERGE_DIRECT_READS=2)", DIRECT_ENV, "direct"]] as const)
  describe(`native engine, ${label}`, () => {
    before(function () {
      if (!nativeAvailable()) this.skip();
    });

    it("input truncated mid-merge: a short read is FILE_TRUNCATED naming the file, no file left", () => {
      const dir = tmp.fresh(`truncate-${tag}`);
      const report = runChild(dir, "native", "truncate", "progress", env);
      assert.ok(report.changedAt && report.changedAt.bytesDone < report.changedAt.bytesTotal, "the truncation did not happen mid-merge");
      assert.equal(report.first.ok, false, "the merge succeeded although its input was truncated");
      assert.equal(report.first.isMergeError, true);
      assert.equal(report.first.code, "FILE_TRUNCATED", report.first.message);
      assert.equal(report.first.path, join(dir, "a.safetensors"));
      assert.match(report.first.message!, /truncated during the merge \(it is now 1000000 bytes/);
      assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"], "no output and no temporary file may remain");
      assert.equal(report.second, "ok", "a second merge in the same process must work");
      const reads = report.secondReads!;
      assert.ok(tag === "direct" ? reads.bytesDirectRead > 0 && reads.bytesBufferedRead === 0 : reads.bytesDirectRead === 0 && reads.bytesBufferedRead > 0, JSON.stringify(reads));
    });

    it("input truncated as soon as the job has started: FILE_TRUNCATED", () => {
      const dir = tmp.fresh(`start-${tag}`);
      const report = runChild(dir, "native", "truncate", "start", env);
      assert.ok(report.changedAt, "the input was never truncated");
      assert.equal(report.first.code, "FILE_TRUNCATED", report.first.message);
      assert.equal(report.first.path, join(dir, "a.safetensors"));
      assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"]);
      assert.equal(report.second, "ok");
    });

    it("input rewritten in place mid-merge: INPUT_CHANGED, nothing committed", () => {
      const dir = tmp.fresh(`rewrite-${tag}`);
      const report = runChild(dir, "native", "rewrite", "progress", env);
      assert.ok(report.changedAt && report.changedAt.bytesDone < report.changedAt.bytesTotal, "the rewrite did not happen mid-merge");
      assert.equal(report.first.code, "INPUT_CHANGED", report.first.message);
      assert.equal(report.first.path, join(dir, "a.safetensors"));
      assert.deepEqual(report.filesAfter, ["a.safetensors", "b.safetensors"]);
      assert.equal(report.second, "ok");
    });
  });

  it("native: a SIGBUS that is not the engine's still ends the process as before (the handler chains)", function () {
    if (!nativeAvailable()) this.skip();
    const dir = tmp.fresh("foreign");
    // After a merge has installed the handler, a SIGBUS sent to the process is not the
    // engine's: the default action must still apply (death by SIGBUS), not be swallowed.
    const script = `
      const { merge } = require(${JSON.stringify(join(__dirname, "..", "..", "lib"))});
      const { model } = require(${JSON.stringify(CHILD)});
      const dir = ${JSON.stringify(dir)};
      model(dir + "/a.safetensors", 1); model(dir + "/b.safetensors", 2);
      merge({ a: dir + "/a.safetensors", b: dir + "/b.safetensors", method: "weighted-sum", out: dir + "/o.safetensors", engine: "native" })
        .then(() => { process.stdout.write("merged\\n"); process.kill(process.pid, "SIGBUS"); setTimeout(() => process.stdout.write("survived\\n"), 500); });`;
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.stdout.trim(), "merged", r.stderr);
    assert.equal(r.signal, "SIGBUS", `exit ${r.status}, signal ${r.signal}`);
  });

  it("CLI on the native engine: an input truncated mid-merge exits 1 with one error line, not 135", async function () {
    if (!nativeAvailable()) this.skip();
    const dir = tmp.fresh("cli");
    const a = join(dir, "a.safetensors");
    model(a, 1);
    model(join(dir, "b.safetensors"), 2);
    const child = spawn(process.execPath, [CLI, "merge", "--a", a, "--b", join(dir, "b.safetensors"), "--out", join(dir, "out.safetensors"), "--engine", "native", "--threads", "2", "--quiet"], {
      env: { ...process.env, ...PAUSE_ENV },
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    // Truncate as soon as the engine has created its temporary output (the job has started).
    let truncated = false;
    const tryTruncate = () => {
      if (truncated || !readdirSync(dir).some((n) => n.includes(".tensormerge-"))) return;
      truncated = true;
      truncateSync(a, 1_000_000);
    };
    const watcher = watch(dir, tryTruncate);
    const poll = setInterval(tryTruncate, 5);
    const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on("exit", (c, s) => resolve([c, s])));
    watcher.close();
    clearInterval(poll);
    assert.ok(truncated, "the merge ended before the input could be truncated");
    assert.equal(signal, null, `the CLI died of ${signal}; stderr: ${stderr}`);
    assert.equal(status, 1, `exit ${status}; stderr: ${stderr}`);
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, `one error line expected, got: ${stderr}`);
    assert.match(lines[0]!, /^tensormerge: error \[FILE_TRUNCATED\]: /);
    assert.ok(lines[0]!.includes(a), lines[0]);
    assert.deepEqual(readdirSync(dir).sort(), ["a.safetensors", "b.safetensors"], "no output and no temporary file may remain");
  });
});
