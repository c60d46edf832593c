import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError, isMergeError } from "../../lib/errors";
import { HashCache, getFileHashes } from "../../lib/library/hash-cache";
import { closeNames, resolveModel } from "../../lib/library/resolve";
import { tempDir, writeModel } from "../helpers/models";

function sha256sum(path: string): string {
  return execFileSync("sha256sum", [path], { encoding: "utf8" }).split(" ")[0]!;
}

function expectError(code: string, check?: (e: MergeError) => void) {
  return (e: unknown) => {
    assert.ok(isMergeError(e), String(e));
    assert.equal(e.code, code, e.message);
    check?.(e);
    return true;
  };
}

describe("library: model references", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-resolve-");
  after(() => tmp.cleanup());
  const models = join(tmp.path, "models");
  const other = join(tmp.path, "more");
  const path = (...p: string[]) => join(models, ...p);
  let cache: HashCache;

  before(async () => {
    for (const d of [models, path("sdxl"), path("sd15"), other]) mkdirSync(d, { recursive: true });
    const files = [path("dreamshaper_8.safetensors"), path("sdxl", "juggernaut.safetensors"), path("sd15", "base.safetensors"), join(other, "base.ckpt"), path("Anything-V3.safetensors")];
    // Over 1 MiB + 64 KiB each, so every file has its own legacy hash.
    for (const f of files) writeModel(f, { "w.weight": { dtype: "F32", shape: [300_000], raw: randomBytes(1_200_000) } });
    writeFileSync(path("notes.txt"), "not a model");
    cache = await HashCache.open(join(tmp.path, "cache", "hashes.json"));
  });

  const opts = () => ({ dirs: [models, other], cache });

  it("takes an existing path as it is (relative to cwd)", async () => {
    assert.equal(await resolveModel(path("dreamshaper_8.safetensors"), opts()), path("dreamshaper_8.safetensors"));
    assert.equal(await resolveModel("dreamshaper_8.safetensors", { ...opts(), cwd: models }), path("dreamshaper_8.safetensors"));
  });

  it("finds a model by name, name with extension, or folder-relative title", async () => {
    assert.equal(await resolveModel("dreamshaper_8", opts()), path("dreamshaper_8.safetensors"));
    assert.equal(await resolveModel("juggernaut", opts()), path("sdxl", "juggernaut.safetensors"));
    assert.equal(await resolveModel("juggernaut.safetensors", opts()), path("sdxl", "juggernaut.safetensors"));
    assert.equal(await resolveModel("sdxl/juggernaut", opts()), path("sdxl", "juggernaut.safetensors"));
    assert.equal(await resolveModel("sd15/base", opts()), path("sd15", "base.safetensors"));
  });

  it("falls back to a case-insensitive name", async () => {
    assert.equal(await resolveModel("anything-v3", opts()), path("Anything-V3.safetensors"));
  });

  it("a name two files share is MODEL_AMBIGUOUS, listing both", async () => {
    await assert.rejects(resolveModel("base", opts()), expectError("MODEL_AMBIGUOUS", (e) => {
      assert.ok(e.message.includes(path("sd15", "base.safetensors")));
      assert.ok(e.message.includes(join(other, "base.ckpt")));
    }));
  });

  it("an A1111 title with its bracketed hash picks among same-named files", async () => {
    const target = join(other, "base.ckpt");
    const short = sha256sum(target).slice(0, 10);
    assert.equal(await resolveModel(`base.ckpt [${short}]`, opts()), target);
    assert.equal(await resolveModel(`base [${short}]`, opts()), target);
  });

  it("finds a model by sha256 prefix (AutoV2, longer, full) and by the 8-hex legacy hash", async () => {
    const target = path("sdxl", "juggernaut.safetensors");
    const sha = sha256sum(target);
    assert.equal(await resolveModel(sha.slice(0, 10), opts()), target);
    assert.equal(await resolveModel(sha.slice(0, 8).toUpperCase(), opts()), target);
    assert.equal(await resolveModel(sha, opts()), target);
    const { legacy } = (await getFileHashes(target, { cache, cachedOnly: true }))!;
    assert.equal(await resolveModel(legacy, opts()), target);
  });

  it("a hash prefix two files share is MODEL_AMBIGUOUS", async () => {
    const dir = join(tmp.path, "small");
    mkdirSync(dir);
    // Files under 1 MiB all have the legacy hash e3b0c442.
    writeModel(join(dir, "x.safetensors"), { w: { dtype: "F32", shape: [4], values: [1, 2, 3, 4] } });
    writeModel(join(dir, "y.safetensors"), { w: { dtype: "F32", shape: [4], values: [5, 6, 7, 8] } });
    await assert.rejects(resolveModel("e3b0c442", { dirs: [dir], cache }), expectError("MODEL_AMBIGUOUS"));
  });

  it("an unknown name is MODEL_NOT_FOUND listing close names", async () => {
    await assert.rejects(resolveModel("dreamshaper", opts()), expectError("MODEL_NOT_FOUND", (e) => assert.ok(e.message.includes("dreamshaper_8"))));
    await assert.rejects(resolveModel("juggernot", opts()), expectError("MODEL_NOT_FOUND", (e) => assert.ok(e.message.includes("juggernaut"))));
    await assert.rejects(resolveModel("deadbeefdeadbeef", opts()), expectError("MODEL_NOT_FOUND"));
    await assert.rejects(resolveModel("notes", opts()), expectError("MODEL_NOT_FOUND"));
  });

  it("a reference meant as a path that does not exist is FILE_NOT_FOUND", async () => {
    await assert.rejects(resolveModel(join(tmp.path, "missing.safetensors"), opts()), expectError("FILE_NOT_FOUND", (e) => assert.equal(e.path, join(tmp.path, "missing.safetensors"))));
    await assert.rejects(resolveModel("sub/dreamshaper_8", opts()), expectError("FILE_NOT_FOUND", (e) => assert.ok(e.message.includes("dreamshaper_8"))));
  });

  it("with hash: false, only cached hashes answer hash references", async () => {
    const dir = join(tmp.path, "uncached");
    mkdirSync(dir);
    const f = join(dir, "z.safetensors");
    writeModel(f, { w: { dtype: "F32", shape: [2], values: [9, 9] } });
    const sha = sha256sum(f);
    await assert.rejects(resolveModel(sha.slice(0, 12), { dirs: [dir], cache, hash: false }), expectError("MODEL_NOT_FOUND"));
    assert.equal(await resolveModel(sha.slice(0, 12), { dirs: [dir], cache }), f);
    assert.equal(await resolveModel(sha.slice(0, 12), { dirs: [dir], cache, hash: false }), f);
  });

  it("closeNames ranks substrings and small edits", () => {
    assert.deepEqual(closeNames("dream", ["dreamshaper_8", "realvis", "dreamlike"]).sort(), ["dreamlike", "dreamshaper_8"]);
    assert.deepEqual(closeNames("realvs", ["dreamshaper_8", "realvis"]), ["realvis"]);
  });
});
