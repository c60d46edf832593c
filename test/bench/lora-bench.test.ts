/**
 * The LoRA bench (bench/lora.ts) on small models (--shrink 16), without timing assertions: the
 * bake rows run on the kernel sets they name, beside a floor of the same run, and the extraction
 * row reports its modules; kohya's Python pattern is left out here (--no-kohya).
 */
import { strict as assert } from "node:assert";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loraMain } from "../../bench/lora";
import { defaultLayoutsDir } from "../../bench/models";

describe("bench: the LoRA scenarios on small models", function () {
  this.timeout(600_000);
  const dir = mkdtempSync(join(tmpdir(), "tm-lora-bench-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("bakes on auto and scalar kernels beside the floor, extracts, and writes the JSON", async function () {
    if (!existsSync(join(process.env.TENSORMERGE_LAYOUTS ?? defaultLayoutsDir(), "lora_sd15_kohya_r32.json"))) this.skip();
    const json = join(dir, "out.json");
    assert.equal(await loraMain(["--shrink", "16", "--no-kohya", "--no-js", "--cache", "warm", "--dir", dir, "--json", json]), 0);
    const r = JSON.parse(readFileSync(json, "utf8")) as { bake: { rows: { variant: string; isa: string; threads: number; ratio: number; floorSeconds: number }[] }; extract: { modules: number; ours: { seconds: number } } };
    assert.equal(r.bake.rows.length, 3);
    const scalar = r.bake.rows.find((x) => x.variant.includes("scalar"))!;
    assert.equal(scalar.isa, "scalar");
    assert.equal(r.bake.rows.find((x) => x.variant.includes("1 thread"))!.threads, 1);
    for (const row of r.bake.rows) assert.ok(row.ratio > 0 && row.floorSeconds > 0);
    assert.ok(r.extract.modules > 100 && r.extract.ours.seconds > 0);
    assert.ok(!existsSync(join(dir, "baked.safetensors")) && !existsSync(join(dir, "extracted.safetensors")), "outputs removed");
  });
});
