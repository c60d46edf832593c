/** `tensormerge list` and `inspect` on a `.ckpt` beside a `.safetensors` of the same model. */
import { strict as assert } from "node:assert";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { tempDir } from "../helpers/models";
import { loadLayout, writeShrunkModel } from "./fixtures";

const CLI = join(__dirname, "../../lib/cli/main.js");

describe("CLI: list and inspect a .ckpt", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-cli-ckpt-");
  after(() => tmp.cleanup());
  const models = join(tmp.path, "models");
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, TENSORMERGE_CACHE_DIR: join(tmp.path, "cache"), TENSORMERGE_MODELS: models } });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  before(async () => {
    mkdirSync(models, { recursive: true });
    const st = join(models, "v15.safetensors");
    await writeShrunkModel(st, loadLayout("sd15"), 64, 1);
    // The same tensors as a PyTorch zip checkpoint (our writer, loaded by real PyTorch in test/ckpt).
    await merge({ a: st, method: "no-interpolation", out: join(models, "v15-copy.ckpt"), recipeMetadata: false });
  });

  it("list --json: format ckpt, identified as SD 1.x from its pickled keys, sha256 = sha256sum, no tensor-data hash", () => {
    const r = run(["list", "--json"]);
    assert.equal(r.code, 0, r.err);
    const entries = JSON.parse(r.out) as { name: string; path: string; format: string; architecture: string; sha256: string; tensorSha256: string | null; dtypes: string[] }[];
    const ckpt = entries.find((e) => e.name === "v15-copy")!;
    const st = entries.find((e) => e.name === "v15")!;
    assert.equal(ckpt.format, "ckpt");
    assert.equal(ckpt.architecture, "sd1");
    assert.deepEqual(ckpt.dtypes, st.dtypes);
    assert.equal(ckpt.sha256, execFileSync("sha256sum", [ckpt.path], { encoding: "utf8" }).split(" ")[0]);
    assert.equal(ckpt.tensorSha256, null);
    const table = run(["list"]).out;
    assert.match(table, /v15-copy\s+ckpt\s+sd1\s/);
  });

  it("inspect by name: format, architecture and components of the .ckpt", () => {
    const r = run(["inspect", "v15-copy"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /ckpt/);
    assert.match(r.out, /architecture\s+SD 1\.x \(sd1\)/);
    assert.match(r.out, /UNet/);
  });
});
