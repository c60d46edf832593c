/** Nothing lost: cancel, failure and kill leave no output under the final name; no overwrite unless asked; inputs untouched. */
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { merge } from "../../lib/merge";
import { checkFreeSpace } from "../../lib/outputs";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel } from "../helpers/models";

const isCode = (code: string) => (e: unknown) => e instanceof MergeError && e.code === code;
const leftovers = (dir: string) => readdirSync(dir).filter((n) => n.includes(".tensormerge-"));
const digest = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

describe("safety: nothing lost", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  const bigA = join(dir.path, "bigA.safetensors"), bigB = join(dir.path, "bigB.safetensors");
  before(() => {
    writeModel(a, { w: { dtype: "F32", shape: [64], values: randomValues(64, 1) } });
    writeModel(b, { w: { dtype: "F32", shape: [64], values: randomValues(64, 2) } });
    const n = 24_000_000; // ~96 MB per model: the TS engine needs seconds
    const big = (seed: number) => {
      const values = new Float32Array(n);
      for (let i = 0; i < n; i++) values[i] = ((i * seed) % 1000) / 1e4;
      return { "x.weight": { dtype: "F32" as const, shape: [n], raw: new Uint8Array(values.buffer) } };
    };
    writeModel(bigA, big(3));
    writeModel(bigB, big(4));
  });

  for (const engine of ENGINES) {
    it(`cancel before the engine starts: ABORTED, no output, no temp file (${engine})`, async () => {
      const out = join(dir.path, `cancel-${engine}.safetensors`);
      const controller = new AbortController();
      const pending = merge({ a: bigA, b: bigB, method: "weighted-sum", out, engine, signal: controller.signal });
      controller.abort();
      await assert.rejects(pending, isCode("ABORTED"));
      assert.equal(existsSync(out), false);
      assert.deepEqual(leftovers(dir.path), []);
    });
  }

  it("cancel in the middle of a merge (TS engine): ABORTED, no output, no temp file", async () => {
    const out = join(dir.path, "cancel-mid.safetensors");
    const controller = new AbortController();
    let sawProgress = false;
    const pending = merge({
      a: bigA, b: bigB, method: "weighted-sum", dtype: "bf16", out, engine: "js", signal: controller.signal,
      onProgress: (p) => { if (p.bytesDone > 0 && p.bytesDone < p.bytesTotal) { sawProgress = true; controller.abort(); } },
    });
    await assert.rejects(pending, isCode("ABORTED"));
    assert.ok(sawProgress);
    assert.equal(existsSync(out), false);
    assert.deepEqual(leftovers(dir.path), []);
  });

  it("a target that is a folder is refused, naming it, with no temp file and the folder untouched", async () => {
    const out = join(dir.path, "a-folder.safetensors");
    mkdirSync(out);
    writeFileSync(join(out, "keep"), "x");
    await assert.rejects(merge({ a, b, method: "weighted-sum", out, overwrite: true }), (e: unknown) => e instanceof MergeError && e.path === out);
    assert.deepEqual(leftovers(dir.path), []);
    assert.equal(readFileSync(join(out, "keep"), "utf8"), "x");
  });

  it("a killed CLI leaves no file under the final name; the next merge removes its temporary file", async () => {
    const out = join(dir.path, "killed.safetensors");
    const child = spawn(process.execPath, [join(__dirname, "../../lib/cli/main.js"), "merge", "--a", bigA, "--b", bigB, "--out", out, "--engine", "js", "--quiet"], { stdio: "ignore" });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    // Kill once the temporary output exists, i.e. in the middle of writing.
    for (let i = 0; i < 200 && leftovers(dir.path).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(leftovers(dir.path).length, 1, "the merge never started writing");
    child.kill("SIGKILL");
    assert.equal(await exited, null);
    assert.equal(existsSync(out), false);
    // A kill cannot clean up; the next merge into the same target does, once the file is a few
    // seconds old (backdated here) and its process is gone. Other temporary files stay: a
    // fresh one, one whose process runs (this one), one for another target.
    const [killed] = leftovers(dir.path);
    const old = new Date(Date.now() - 60_000);
    utimesSync(join(dir.path, killed!), old, old);
    const deadPid = child.pid!;
    const keep = [
      `.killed.safetensors.tensormerge-${deadPid}-0f4e5400.tmp`,
      `.killed.safetensors.tensormerge-${process.pid}-0a11fe00.tmp`,
      `.other.safetensors.tensormerge-${deadPid}-0beef000.tmp`,
    ];
    for (const k of keep) {
      writeFileSync(join(dir.path, k), "x");
      if (!k.includes("0f4e5400")) utimesSync(join(dir.path, k), old, old);
    }
    const report = await merge({ a, b, method: "weighted-sum", out });
    assert.deepEqual(report.removedTemps, [join(dir.path, killed!)]);
    assert.deepEqual(leftovers(dir.path).sort(), [...keep].sort());
    for (const k of keep) unlinkSync(join(dir.path, k));
  });

  it("refuses to overwrite an existing output unless asked, and leaves it untouched", async () => {
    const out = join(dir.path, "exists.safetensors");
    writeFileSync(out, "precious");
    await assert.rejects(merge({ a, b, method: "weighted-sum", out }), isCode("OUTPUT_EXISTS"));
    assert.equal(readFileSync(out, "utf8"), "precious");
    await merge({ a, b, method: "weighted-sum", out, overwrite: true });
    assert.notEqual(readFileSync(out, "utf8"), "precious");
  });

  for (const engine of ENGINES) {
    it(`a target that appears while merging is left as it is, and the result is kept where the error says (${engine})`, async () => {
      const sub = dir.fresh(`race-${engine}`);
      const out = join(sub, "race.safetensors");
      // Another writer takes the name at the last moment: the last progress event comes just
      // before the output is given its name.
      const onProgress = (p: { fraction: number }) => { if (p.fraction === 1 && !existsSync(out)) writeFileSync(out, "the other merge's file"); };
      let error: unknown;
      await merge({ a, b, method: "weighted-sum", multiplier: 0.25, out, engine, onProgress }).catch((e: unknown) => { error = e; });
      assert.ok(isCode("OUTPUT_EXISTS")(error), `expected OUTPUT_EXISTS, got ${String(error)}`);
      assert.equal(readFileSync(out, "utf8"), "the other merge's file");
      // The one other file is this merge's result, complete, and the message names it.
      const others = readdirSync(sub).filter((n) => n !== "race.safetensors");
      assert.equal(others.length, 1, `files: ${others.join(", ")}`);
      const kept = join(sub, others[0]!);
      assert.ok((error as Error).message.includes(kept), (error as Error).message);
      const expected = randomValues(64, 1).map((x, i) => Math.fround(Math.fround(Math.fround(x) * Math.fround(0.75)) + Math.fround(Math.fround(randomValues(64, 2)[i]!) * Math.fround(0.25))));
      assert.deepEqual(readModel(kept).tensors.get("w")!.values, expected);
    });
  }

  it("never writes to an input: refuses an input as the output, even with overwrite; inputs keep bytes and mtime", async () => {
    const before = [digest(a), digest(b), statSync(a).mtimeMs];
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: a, overwrite: true }), isCode("INPUT_IS_TARGET"));
    for (const engine of ENGINES) await merge({ a, b, method: "add-difference", c: b, out: join(dir.path, `ok-${engine}.safetensors`), engine });
    assert.deepEqual([digest(a), digest(b), statSync(a).mtimeMs], before);
  });

  it("checks free disk space before starting", async () => {
    await assert.rejects(checkFreeSpace([{ path: join(dir.path, "huge.safetensors"), size: 2 ** 60 }]), isCode("DISK_FULL"));
  });

  it("rejects bad options with INVALID_ARGUMENT naming the option", async () => {
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: "x", multiplier: 5 }), (e: unknown) => e instanceof MergeError && e.code === "INVALID_ARGUMENT" && /multiplier/.test(e.message));
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: "x", dtype: "fp8" as never }), (e: unknown) => e instanceof MergeError && /dtype/.test(e.message));
    await assert.rejects(merge({ a, b, method: "weighted-sum", out: "x", treads: 2 } as never), (e: unknown) => e instanceof MergeError && /treads/.test(e.message));
    await assert.rejects(merge({ a, method: "add-difference", b, out: "x" }), (e: unknown) => e instanceof MergeError && /model C/.test(e.message));
  });
});
