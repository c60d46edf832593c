/**
 * The progress line: fitted to the terminal width (fields dropped in order of importance),
 * redrawn in place with clear-to-end-of-line, timed by the printer itself (so hashing gets a
 * rate and an ETA); and merge() reports its hashing phase to onProgress.
 */
import { strict as assert } from "node:assert";
import { statSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createMergeProgressPrinter, createProgressPrinter, displayWidth, formatProgressLine, type BarFields } from "../../lib/cli/progress";
import { merge, type MergeProgress } from "../../lib/merge";
import { randomValues, tempDir, writeModel } from "../helpers/models";

const MiB = 1024 * 1024, GiB = 1024 * MiB;
const fields: BarFields = { label: "merging", fraction: 0.42, bytesDone: 1.2 * GiB, bytesTotal: 2 * GiB, rate: 350 * MiB, etaSeconds: 3 };

/** A stream that records what is written, with a settable terminal width. */
function screen(columns: number): Writable & { text: string; columns: number } {
  const s = new Writable({ write(chunk, _enc, cb) { s.text += String(chunk); cb(); } }) as Writable & { text: string; columns: number };
  s.text = "";
  s.columns = columns;
  return s;
}

describe("progress line", () => {
  it("at 120 columns shows every field and a 30-cell bar", () => {
    assert.equal(formatProgressLine(fields, 120), `merging [${"#".repeat(13)}${"-".repeat(17)}]  42%  1.2 GiB/2.0 GiB  350.0 MiB/s  ETA 0:03`);
  });

  it("at 80 columns shrinks the bar so the line takes 79 columns", () => {
    const line = formatProgressLine(fields, 80);
    assert.equal(line, `merging [${"#".repeat(10)}${"-".repeat(14)}]  42%  1.2 GiB/2.0 GiB  350.0 MiB/s  ETA 0:03`);
    assert.equal(line.length, 79);
  });

  it("at 40 columns drops the byte counts and the rate, keeps a bar, the percentage and the ETA", () => {
    assert.equal(formatProgressLine(fields, 40), `merging [${"#".repeat(6)}${"-".repeat(8)}]  42%  ETA 0:03`);
  });

  it("never exceeds the width, whatever the label and the width", () => {
    const labels = ["merging", "hashing v1-5-pruned-emaonly-with-a-very-long-name-indeed.safetensors", "hashing 模型融合测试用的非常长的文件名.safetensors", "hashing \u001b[2Jevil\u0007.safetensors"];
    for (const label of labels) {
      for (let width = 1; width <= 130; width++) {
        const line = formatProgressLine({ ...fields, label, rate: null, etaSeconds: null }, width);
        assert.ok(displayWidth(line) <= Math.max(1, width - 1), `${width}: ${JSON.stringify(line)} (${displayWidth(line)} columns)`);
        assert.doesNotMatch(line, /[\u0000-\u001f\u007f]/, "control characters reach the terminal");
        if (width >= 10) assert.match(line, /42%/, `${width}: ${line}`);
      }
    }
    // A long file name is shortened in the middle to 40% of the line, keeping its extension.
    assert.equal(formatProgressLine({ ...fields, label: labels[1]! }, 80), `hashing v1-5-pr…eed.safetensors [${"#".repeat(7)}${"-".repeat(10)}]  42%  350.0 MiB/s  ETA 0:03`);
    assert.equal(displayWidth("模型"), 4);
  });

  it("on a terminal: each redraw is \\r, the line, clear to end of line; one newline when done", () => {
    const out = screen(80);
    let t = 0;
    const bar = createProgressPrinter(out, true, "hashing a.safetensors", { now: () => t });
    bar.update({ bytesDone: 0, bytesTotal: 400 * MiB, elapsedSeconds: 0 });
    t = 1;
    bar.update({ bytesDone: 100 * MiB, bytesTotal: 400 * MiB, elapsedSeconds: 0 });
    t = 1.05; // within a tenth of a second: not redrawn
    bar.update({ bytesDone: 105 * MiB, bytesTotal: 400 * MiB, elapsedSeconds: 0 });
    t = 2;
    bar.update({ bytesDone: 200 * MiB, bytesTotal: 400 * MiB, elapsedSeconds: 0 });
    bar.done();
    const draws = out.text.split("\r").slice(1);
    assert.equal(draws.length, 3);
    for (const d of draws.slice(0, -1)) assert.match(d, /\x1b\[K$/);
    assert.match(draws.at(-1)!, /\x1b\[K\n$/);
    // Rate and ETA from the printer's clock: 200 MiB in 2 s, 200 MiB left.
    assert.match(draws[1]!, /100\.0 MiB\/s {2}ETA 0:03/);
    assert.match(draws[2]!, / 50%.*100\.0 MiB\/s {2}ETA 0:02/);
    assert.equal(out.text.split("\n").length, 2);
  });

  it("merge bars: one per hashed input, then the merge", () => {
    const out = screen(80);
    const printer = createMergeProgressPrinter(out, true, { now: () => 0 });
    for (const path of ["/m/a.safetensors", "/m/b.safetensors"]) {
      printer.update({ phase: "hashing", path, bytesDone: 10, bytesTotal: 10, fraction: 1, elapsedSeconds: 0 });
    }
    printer.update({ phase: "merging", bytesDone: 5, bytesTotal: 10, fraction: 0.5, elapsedSeconds: 0 });
    printer.done();
    const lines = out.text.split("\n").map((l) => l.split("\r").at(-1)!.replace("\x1b[K", ""));
    assert.deepEqual(lines.map((l) => l.split(" [")[0]), ["hashing a.safetensors", "hashing b.safetensors", "merging", ""]);
  });
});

describe("merge() progress phases", () => {
  const dir = tempDir();
  after(() => dir.cleanup());

  it("reports hashing each input (bytes of that file), then merging", async () => {
    const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
    writeModel(a, { w: { dtype: "F32", shape: [4096], values: randomValues(4096, 1) } });
    writeModel(b, { w: { dtype: "F32", shape: [4096], values: randomValues(4096, 2) } });
    const events: MergeProgress[] = [];
    await merge({ a, b, method: "weighted-sum", out: join(dir.path, "o.safetensors"), onProgress: (p) => events.push(p) });
    const hashing = events.filter((e) => e.phase === "hashing");
    for (const path of [a, b]) {
      const mine = hashing.filter((e) => e.path === path);
      assert.ok(mine.length > 0, `no hashing event for ${path}`);
      assert.ok(mine.every((e) => e.bytesTotal === statSync(path).size));
      assert.equal(mine.at(-1)!.bytesDone, statSync(path).size);
    }
    const merging = events.filter((e) => e.phase === "merging");
    assert.ok(merging.length > 0);
    assert.equal(events.length, hashing.length + merging.length);
    // Hashing comes first, and the merge ends at 100%.
    const lastHashing = events.map((e) => e.phase).lastIndexOf("hashing");
    assert.ok(events.findIndex((e) => e.phase === "merging") > lastHashing);
    assert.equal(merging.at(-1)!.fraction, 1);
  });
});
