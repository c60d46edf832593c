import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { randomBytes, createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isMergeError } from "../../lib/errors";
import { computeFileHashes, legacyModelHash, safetensorsDataOffset, sha256File } from "../../lib/library/hash";
import { tempDir, writeModel } from "../helpers/models";

/** sha256sum, the coreutils tool: an independent implementation. */
function sha256sum(path: string): string {
  return execFileSync("sha256sum", [path], { encoding: "utf8" }).split(" ")[0]!;
}

/** `tail -c +K | sha256sum`: hash from byte offset `from` to the end, by shell tools. */
function sha256sumFrom(path: string, from: number): string {
  return execFileSync("sh", ["-c", `tail -c +${from + 1} "$1" | sha256sum`, "sh", path], { encoding: "utf8" }).split(" ")[0]!;
}

/** The A1111 formula, re-done independently: whole file in memory, bytes [1 MiB, 1 MiB + 64 KiB). */
function legacyIndependent(path: string): string {
  const bytes = readFileSync(path);
  return createHash("sha256").update(bytes.subarray(0x100000, 0x110000)).digest("hex").slice(0, 8);
}

/** A safetensors file with random F32 data of about `bytes` bytes and an odd-sized header. */
function writeRandomSafetensors(path: string, bytes: number, metadata?: Record<string, string>): void {
  const n = Math.max(1, Math.floor(bytes / 4));
  writeModel(path, { "w.weight": { dtype: "F32", shape: [n], raw: randomBytes(n * 4) }, "b.bias": { dtype: "F16", shape: [3], raw: randomBytes(6) } }, metadata);
}

describe("library: hashes", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-hash-");
  after(() => tmp.cleanup());

  const cases: [string, number][] = [
    ["tiny (< 1 MiB)", 2_000],
    ["inside the legacy window (1 MiB … 1 MiB + 64 KiB)", 0x100000 + 1_000],
    ["several ring slots (21 MiB)", 21 * 1024 * 1024 + 12_345],
  ];
  for (const [label, size] of cases) {
    it(`safetensors ${label}: sha256 = sha256sum, tensor data and legacy hashes = independent computations`, async () => {
      const path = join(tmp.path, `${size}.safetensors`);
      writeRandomSafetensors(path, size, { note: "x".repeat(size % 97) });
      const h = await computeFileHashes(path);
      const expected = sha256sum(path);
      assert.equal(h.sha256, expected);
      assert.equal(h.autov2, expected.slice(0, 10));
      const headerLength = Number(readFileSync(path).readBigUInt64LE(0));
      assert.equal(await safetensorsDataOffset(path), 8 + headerLength);
      assert.equal(h.tensorSha256, sha256sumFrom(path, 8 + headerLength));
      assert.equal(h.legacy, legacyIndependent(path));
      assert.equal(h.legacy, execFileSync("sh", ["-c", `tail -c +1048577 "$1" | head -c 65536 | sha256sum`, "sh", path], { encoding: "utf8" }).slice(0, 8));
    });
  }

  it("files under 1 MiB all have the legacy hash of nothing (e3b0c442), as A1111 computes it", async () => {
    const path = join(tmp.path, "small.bin.ckpt");
    writeFileSync(path, randomBytes(1000));
    assert.equal(await legacyModelHash(path), "e3b0c442");
  });

  it("a non-safetensors file has no tensor-data hash", async () => {
    const path = join(tmp.path, "model.ckpt");
    writeFileSync(path, Buffer.concat([Buffer.from("PK\x03\x04"), randomBytes(3 * 1024 * 1024)]));
    const h = await computeFileHashes(path);
    assert.equal(h.tensorSha256, null);
    assert.equal(h.sha256, sha256sum(path));
    assert.equal(h.legacy, legacyIndependent(path));
  });

  it("an empty file hashes to the SHA-256 of nothing", async () => {
    const path = join(tmp.path, "empty.safetensors");
    writeFileSync(path, "");
    const h = await computeFileHashes(path);
    assert.equal(h.sha256, sha256sum(path));
    assert.equal(h.tensorSha256, null);
  });

  it("concurrent requests queue and each gets its own file's hashes", async () => {
    const paths = [0, 1, 2, 3].map((i) => join(tmp.path, `c${i}.safetensors`));
    paths.forEach((p, i) => writeRandomSafetensors(p, 5 * 1024 * 1024 + i * 1000));
    const results = await Promise.all(paths.map((p) => computeFileHashes(p)));
    results.forEach((h, i) => assert.equal(h.sha256, sha256sum(paths[i]!)));
  });

  it("reports progress up to the file size", async () => {
    const path = join(tmp.path, "progress.safetensors");
    writeRandomSafetensors(path, 9 * 1024 * 1024);
    const seen: number[] = [];
    let total = 0;
    await sha256File(path, null, { onProgress: (done, size) => { seen.push(done); total = size; } });
    assert.ok(seen.length >= 3);
    assert.equal(seen[seen.length - 1], total);
    assert.deepEqual([...seen].sort((x, y) => x - y), seen);
  });

  it("cancels with ABORTED, and the next job still works", async () => {
    const path = join(tmp.path, "abort.safetensors");
    writeRandomSafetensors(path, 20 * 1024 * 1024);
    const controller = new AbortController();
    const job = sha256File(path, null, { signal: controller.signal, onProgress: () => controller.abort() });
    await assert.rejects(job, (e: unknown) => isMergeError(e, "ABORTED"));
    assert.equal((await sha256File(path)).sha256, sha256sum(path));
  });

  it("a missing file is FILE_NOT_FOUND", async () => {
    await assert.rejects(computeFileHashes(join(tmp.path, "nope.safetensors")), (e: unknown) => isMergeError(e, "FILE_NOT_FOUND"));
  });
});
