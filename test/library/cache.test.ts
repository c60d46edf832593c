import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { computeFileHashes, hashCounters, type FileHashes, type HashOptions } from "../../lib/library/hash";
import { HashCache, defaultHashCachePath, getFileHashes } from "../../lib/library/hash-cache";
import { listModels } from "../../lib/library/scan";
import { tempDir, writeModel } from "../helpers/models";

function countingCompute(): { compute: (path: string, o: HashOptions) => Promise<FileHashes>; calls: string[] } {
  const calls: string[] = [];
  return { calls, compute: (path, o) => { calls.push(path); return computeFileHashes(path, o); } };
}

function writeSmall(path: string, seed: number): void {
  writeModel(path, { "w.weight": { dtype: "F32", shape: [64], raw: randomBytes(256) }, "s": { dtype: "I64", shape: [1], values: [seed] } });
}

describe("library: hash cache", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-cache-");
  after(() => tmp.cleanup());

  it("lives in $TENSORMERGE_CACHE_DIR, else $XDG_CACHE_HOME/tensormerge, else ~/.cache/tensormerge", () => {
    assert.equal(defaultHashCachePath({ TENSORMERGE_CACHE_DIR: "/x/y" }), "/x/y/hashes.json");
    assert.equal(defaultHashCachePath({ XDG_CACHE_HOME: "/c" }), "/c/tensormerge/hashes.json");
    assert.equal(defaultHashCachePath({}), join(homedir(), ".cache", "tensormerge", "hashes.json"));
  });

  it("hashes once, then answers from the cache, also in a new process (reloaded from disk)", async () => {
    const model = join(tmp.path, "a.safetensors");
    writeSmall(model, 1);
    const cachePath = join(tmp.path, "c1", "hashes.json");
    const counter = countingCompute();
    const cache = await HashCache.open(cachePath);
    const first = await getFileHashes(model, { cache, compute: counter.compute });
    assert.equal(first.cached, false);
    const second = await getFileHashes(model, { cache, compute: counter.compute });
    assert.equal(second.cached, true);
    assert.equal(second.sha256, first.sha256);
    const reloaded = await HashCache.open(cachePath);
    const third = await getFileHashes(model, { cache: reloaded, compute: counter.compute });
    assert.equal(third.cached, true);
    assert.deepEqual({ ...third, cached: false }, first);
    assert.equal(counter.calls.length, 1);
  });

  it("is invalidated by a new mtime (same size) and by a new size", async () => {
    const model = join(tmp.path, "b.safetensors");
    writeSmall(model, 2);
    const counter = countingCompute();
    const cache = await HashCache.open(join(tmp.path, "c2", "hashes.json"));
    const h1 = await getFileHashes(model, { cache, compute: counter.compute });
    // New content of the same size, with a new mtime.
    writeSmall(model, 3);
    const t = statSync(model).mtime;
    utimesSync(model, t, new Date(t.getTime() + 5000));
    const h2 = await getFileHashes(model, { cache, compute: counter.compute });
    assert.equal(h2.cached, false);
    assert.notEqual(h2.sha256, h1.sha256);
    const before = statSync(model).mtime;
    writeModel(model, { "w.weight": { dtype: "F32", shape: [65], raw: randomBytes(260) } });
    utimesSync(model, before, before); // same mtime, new size
    const h3 = await getFileHashes(model, { cache, compute: counter.compute });
    assert.equal(h3.cached, false);
    assert.equal(counter.calls.length, 3);
    assert.equal((await getFileHashes(model, { cache, compute: counter.compute })).cached, true);
  });

  it("writes atomically (no temporary files left) and merges with entries written meanwhile", async () => {
    const dir = join(tmp.path, "c3");
    const cachePath = join(dir, "hashes.json");
    const m1 = join(tmp.path, "m1.safetensors");
    const m2 = join(tmp.path, "m2.safetensors");
    writeSmall(m1, 4);
    writeSmall(m2, 5);
    const one = await HashCache.open(cachePath);
    const two = await HashCache.open(cachePath); // a second process, opened before the first wrote
    await getFileHashes(m1, { cache: one });
    await getFileHashes(m2, { cache: two });
    const fresh = await HashCache.open(cachePath);
    assert.equal((await getFileHashes(m1, { cache: fresh, cachedOnly: true }))?.cached, true);
    assert.equal((await getFileHashes(m2, { cache: fresh, cachedOnly: true }))?.cached, true);
    assert.deepEqual(readdirSync(dir), ["hashes.json"]);
    assert.equal(JSON.parse(readFileSync(cachePath, "utf8")).version, 1);
  });

  it("treats a corrupt cache file as empty", async () => {
    const dir = join(tmp.path, "c4");
    mkdirSync(dir);
    writeFileSync(join(dir, "hashes.json"), "{not json");
    const model = join(tmp.path, "d.safetensors");
    writeSmall(model, 6);
    const cache = await HashCache.open(join(dir, "hashes.json"));
    assert.equal((await getFileHashes(model, { cache })).cached, false);
    assert.equal((await getFileHashes(model, { cache: await HashCache.open(join(dir, "hashes.json")) })).cached, true);
  });

  it("keys are data: entries keyed __proto__ or constructor survive load and save, and pollute nothing", async () => {
    const dir = join(tmp.path, "c-proto");
    mkdirSync(dir);
    const cachePath = join(dir, "hashes.json");
    const entry = (k: number) => ({ size: k, mtimeMs: k, sha256: String(k).repeat(64).slice(0, 64), legacy: "0000000" + k, tensorSha256: null });
    const keys = ["__proto__", "constructor", "toString", "/models/a.safetensors"];
    // Written as text: a JSON object built with `x["__proto__"] = …` would not hold that key.
    writeFileSync(cachePath, `{"version":1,"entries":{${keys.map((k, i) => `${JSON.stringify(k)}:${JSON.stringify(entry(i + 1))}`).join(",")}}}`);
    const cache = await HashCache.open(cachePath);
    assert.deepEqual([...cache.all()].map(([k]) => k), keys);
    keys.forEach((k, i) => assert.equal(cache.get(k, i + 1, i + 1)?.sha256, entry(i + 1).sha256, k));
    assert.equal(cache.get("hasOwnProperty", 0, 0), undefined);
    assert.equal(cache.get("/models/b.safetensors", 1, 1), undefined, "the __proto__ entry is not every path's entry");
    // A save (after a change) rewrites the file with every key still there.
    const model = join(dir, "m.safetensors");
    writeSmall(model, 9);
    await getFileHashes(model, { cache });
    const saved = JSON.parse(readFileSync(cachePath, "utf8")) as { entries: Record<string, { sha256: string }> };
    assert.deepEqual(Object.keys(saved.entries), [...keys, model]);
    assert.equal(saved.entries["__proto__"]!.sha256, entry(1).sha256);
  });

  it("a second listing of a folder reads no tensor data (hash read counter unchanged)", async () => {
    const dir = join(tmp.path, "lib");
    mkdirSync(dir);
    for (let i = 0; i < 3; i++) writeModel(join(dir, `m${i}.safetensors`), { "w.weight": { dtype: "F32", shape: [300_000], raw: randomBytes(1_200_000) } });
    const cachePath = join(tmp.path, "c5", "hashes.json");
    const first = await listModels([dir], { cache: await HashCache.open(cachePath) });
    assert.ok(first.every((e) => e.sha256 !== null && e.hashCached === false));
    const files = hashCounters.files;
    const bytes = hashCounters.bytes;
    const second = await listModels([dir], { cache: await HashCache.open(cachePath) });
    assert.equal(hashCounters.files, files);
    assert.equal(hashCounters.bytes, bytes);
    assert.ok(second.every((e) => e.hashCached === true));
    assert.deepEqual(second.map((e) => e.sha256), first.map((e) => e.sha256));
  });
});
