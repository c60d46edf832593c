/**
 * Extraction in several worker threads at once (lib/lora/extract.ts runInWorkers): the modules are
 * split among the workers, each module's SVD seeded on its own, so the file is the same bytes for
 * 1, 2 and 3 threads; a failing worker stops the others and leaves no file.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { extractLora } from "../../lib/lora/extract";
import { tempDir } from "../helpers/models";
import { writeBase } from "./fixtures";

describe("lora: extract in several threads", function () {
  this.timeout(300_000);
  const tmp = tempDir("tm-lora-extract-threads-");
  const base = join(tmp.path, "base.safetensors"), tuned = join(tmp.path, "tuned.safetensors");
  before(async () => {
    await writeBase(base, "sd15", 32, 1);
    await writeBase(tuned, "sd15", 32, 2); // another seed: every module differs (flat spectra)
  });
  after(() => tmp.cleanup());

  it("the same bytes and kept energies for 1, 2 and 3 threads, and progress counts every module once", async () => {
    const runs = [];
    for (const threads of [1, 2, 3]) {
      const out = join(tmp.path, `lora-${threads}.safetensors`);
      const seen: number[] = [];
      const report = await extractLora({ tuned, base, rank: 6, convRank: 3, out, recipeMetadata: false, threads, onProgress: (p) => seen.push(p.done) });
      assert.ok(seen.every((d, i) => i === 0 || d >= seen[i - 1]!), `progress goes forward (${threads} threads)`);
      assert.ok(Math.max(...seen) <= report.modules.length);
      runs.push({ bytes: readFileSync(out), energies: report.modules.map((m) => m.keptEnergy) });
    }
    assert.ok(runs[0]!.energies.length > 100, "the SD 1.5 targets");
    for (const r of runs.slice(1)) {
      assert.deepEqual(r.energies, runs[0]!.energies);
      assert.ok(r.bytes.equals(runs[0]!.bytes), "same file bytes");
    }
  });

  it("the CLI's --threads: 1 and 2 write the API's bytes; a count that is not a whole number is refused naming the flag", () => {
    const cli = (...args: string[]) => spawnSync(process.execPath, [join(__dirname, "../../lib/cli/main.js"), "extract-lora", "--tuned", tuned, "--base", base, "--rank", "6", "--conv-rank", "3", "--no-metadata", "--quiet", ...args], { encoding: "utf8" });
    const api = readFileSync(join(tmp.path, "lora-1.safetensors"));
    for (const threads of ["1", "2"]) {
      const out = join(tmp.path, `cli-${threads}.safetensors`);
      const r = cli("--threads", threads, "--out", out);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(readFileSync(out).equals(api), `--threads ${threads}: the same bytes as extractLora()`);
    }
    const bad = cli("--threads", "two", "--out", join(tmp.path, "cli-bad.safetensors"));
    assert.equal(bad.status, 2, "a usage error");
    assert.match(bad.stderr, /--threads "two": expected a whole number/);
    assert.ok(!existsSync(join(tmp.path, "cli-bad.safetensors")));
  });

  it("a worker that fails (the base truncated under it) stops the extraction and leaves no file", async () => {
    const { copyFileSync, truncateSync, statSync } = await import("node:fs");
    const cut = join(tmp.path, "cut.safetensors");
    copyFileSync(base, cut);
    const out = join(tmp.path, "never.safetensors");
    // Truncating after the header is read: the workers' reads run past the end.
    const p = extractLora({ tuned, base: cut, rank: 6, out, recipeMetadata: false, threads: 2, onProgress: () => { if (statSync(cut).size > 1000) truncateSync(cut, 1000); } });
    await assert.rejects(p, (e: { code?: string }) => e.code === "FILE_TRUNCATED" || e.code === "FILE_CHANGED" || e.code === "ABORTED");
    assert.ok(!existsSync(out));
    assert.deepEqual(readdirSync(tmp.path).filter((n) => n.includes("never")), []);
  });
});
