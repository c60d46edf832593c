/** `tensormerge list` and `tensormerge inspect`, run as a user runs them. */
import { strict as assert } from "node:assert";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../helpers/models";
import { loadLayout, writeShrunkModel } from "./fixtures";

const CLI = join(__dirname, "../../lib/cli/main.js");

function sha256sum(path: string): string {
  return execFileSync("sha256sum", [path], { encoding: "utf8" }).split(" ")[0]!;
}

interface ListEntry {
  path: string; name: string; title: string; format: string; architecture: string | null; sha256: string | null;
  autov2: string | null; legacyHash: string | null; tensorSha256: string | null; hashCached: boolean | null;
  components: { id: string }[]; error: { code: string; message: string } | null;
}

describe("CLI: list and inspect", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-cli-lib-");
  after(() => tmp.cleanup());
  const models = join(tmp.path, "models");
  const cacheDir = join(tmp.path, "cache");
  const recipe = JSON.stringify({ type: "webui", primary_model_hash: "abc", interp_method: "Weighted sum", multiplier: 0.3 });

  function run(args: string[], env: Record<string, string> = {}) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, TENSORMERGE_CACHE_DIR: cacheDir, TENSORMERGE_MODELS: models, ...env } });
    return { code: r.status, out: r.stdout, err: r.stderr };
  }

  before(async () => {
    mkdirSync(join(models, "xl"), { recursive: true });
    await writeShrunkModel(join(models, "mix15.safetensors"), loadLayout("sd15"), 64, 1, { sd_merge_recipe: recipe, format: "pt" });
    await writeShrunkModel(join(models, "xl", "base_xl.safetensors"), loadLayout("sdxl"), 64, 2);
    writeFileSync(join(models, "broken.safetensors"), Buffer.from("\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"));
    writeFileSync(join(models, "readme.txt"), "not a model");
    writeFileSync(join(models, ".hidden.safetensors"), "skipped");
  });

  it("list --no-hash --json: every model, identified, unhashed, the broken one with its error", () => {
    const r = run(["list", "--json", "--no-hash"]);
    assert.equal(r.code, 0, r.err);
    const entries = JSON.parse(r.out) as ListEntry[];
    assert.deepEqual(entries.map((e) => e.title), ["broken", "mix15", "xl/base_xl"]);
    const byName = new Map(entries.map((e) => [e.name, e]));
    assert.equal(byName.get("mix15")!.architecture, "sd1");
    assert.equal(byName.get("mix15")!.format, "safetensors");
    assert.equal(byName.get("base_xl")!.architecture, "sdxl");
    assert.deepEqual(byName.get("base_xl")!.components.map((c) => c.id), ["unet", "text_encoder", "text_encoder_2", "vae"]);
    assert.ok(entries.every((e) => e.sha256 === null));
    assert.equal(byName.get("broken")!.error!.code, "HEADER_NOT_JSON");
    assert.equal(byName.get("broken")!.architecture, null);
  });

  it("list --json hashes (sha256 = sha256sum), and a second run answers from the cache", () => {
    const first = JSON.parse(run(["list", models, "--json"]).out) as ListEntry[];
    for (const e of first) {
      assert.equal(e.sha256, sha256sum(e.path));
      assert.equal(e.autov2, e.sha256!.slice(0, 10));
      assert.equal(e.hashCached, false);
    }
    assert.equal(first.find((e) => e.name === "mix15")!.legacyHash!.length, 8);
    const second = JSON.parse(run(["list", "--json"]).out) as ListEntry[];
    assert.ok(second.every((e) => e.hashCached === true));
    const noHash = JSON.parse(run(["list", "--json", "--no-hash"]).out) as ListEntry[];
    assert.deepEqual(noHash.map((e) => e.sha256), first.map((e) => e.sha256));
  });

  it("list prints a table with names, formats, architectures, dtypes and short hashes", () => {
    const r = run(["list"]);
    assert.equal(r.code, 0);
    const lines = r.out.trim().split("\n");
    assert.match(lines[0]!, /^NAME\s+FORMAT\s+ARCH\s+DTYPES\s+SIZE\s+SHA256\s+HASH\s+COMPONENTS$/);
    assert.match(r.out, /mix15\s+safetensors\s+sd1\s+F32(\+I\d+)*\s/);
    assert.match(r.out, /xl\/base_xl\s+safetensors\s+sdxl\s+F16(\+I\d+)*\s/);
    assert.match(r.out, /broken .*error \[HEADER_NOT_JSON\]/);
  });

  it("list of a folder that does not exist is FILE_NOT_FOUND", () => {
    const r = run(["list", join(tmp.path, "nope")]);
    assert.equal(r.code, 1);
    assert.match(r.err, /FILE_NOT_FOUND/);
  });

  it("inspect by name: architecture, components, dtypes, the recipe pretty-printed", () => {
    const r = run(["inspect", "mix15"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /architecture\s+SD 1\.x \(sd1\)/);
    assert.match(r.out, /UNet/);
    assert.match(r.out, /text encoder \(CLIP ViT-L\/14\)/);
    assert.match(r.out, /F32/);
    assert.match(r.out, /sd_merge_recipe:\n\s+\{\n\s+"type": "webui",/);
  });

  it("inspect --json --hash gives the report with parsed metadata and hashes", () => {
    const path = join(models, "mix15.safetensors");
    const r = run(["inspect", path, "--json", "--hash"]);
    assert.equal(r.code, 0, r.err);
    const report = JSON.parse(r.out);
    assert.equal(report.identification.architecture, "sd1");
    assert.deepEqual(report.metadata.sd_merge_recipe, JSON.parse(recipe));
    assert.equal(report.hashes.sha256, sha256sum(path));
  });

  it("inspect of two models that cannot be merged says why and exits 1", () => {
    const r = run(["inspect", "mix15", "base_xl"]);
    assert.equal(r.code, 1);
    assert.match(r.out, /CANNOT be merged/);
    assert.match(r.out, /A \(mix15\.safetensors\) is SD 1\.x \(sd1\), B \(base_xl\.safetensors\) is SDXL \(sdxl\): models of different architectures cannot be merged/);
  });

  it("inspect of an unknown name is MODEL_NOT_FOUND with close names", () => {
    const r = run(["inspect", "mix1"]);
    assert.equal(r.code, 1);
    assert.match(r.err, /MODEL_NOT_FOUND.*mix15/);
  });
});
