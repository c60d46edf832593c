/** `tensormerge ui` as a user starts it: the printed address works, Ctrl-C stops it cleanly. */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { tempDir } from "../helpers/models";
import { writeBlockModel } from "./helpers";

const CLI = resolve(__dirname, "..", "..", "lib", "cli", "main.js");

describe("tensormerge ui (CLI)", function () {
  this.timeout(30000);
  const tmp = tempDir("tm-ui-cli-");
  after(() => tmp.cleanup());

  it("prints the address with its token, serves the page there, and stops on Ctrl-C", async () => {
    const models = join(tmp.path, "models");
    mkdirSync(models);
    writeBlockModel(join(models, "a.safetensors"), 1);
    const child = spawn(process.execPath, [CLI, "ui", "--model-dir", models, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    const url = await new Promise<string>((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`no address printed: ${out} ${err}`)), 15000);
      child.stdout.on("data", () => {
        const m = /tensormerge ui: (http:\/\/127\.0\.0\.1:\d+\/\?token=\S+)\s+\(Ctrl-C stops it\)/.exec(out);
        if (m) { clearTimeout(timer); done(m[1]!); }
      });
    });
    const first = await fetch(url, { redirect: "manual" });
    assert.equal(first.status, 303);
    const cookie = first.headers.get("set-cookie")!.split(";")[0]!;
    const models_ = await fetch(new URL("/api/models", url), { headers: { cookie } });
    assert.deepEqual(((await models_.json()) as { models: { name: string }[] }).models.map((m) => m.name), ["a"]);
    child.kill("SIGINT");
    assert.equal(await exited, 0);
    assert.match(err, /tensormerge ui: stopped/);
  });

  it("takes --model-dir, not --models, and refuses a missing folder", () => {
    const old = spawnSync(process.execPath, [CLI, "ui", "--models", tmp.path, "--port", "0"], { encoding: "utf8" });
    assert.equal(old.status, 2);
    assert.match(old.stderr, /INVALID_ARGUMENT.*--models/);
    const missing = spawnSync(process.execPath, [CLI, "ui", "--model-dir", join(tmp.path, "nope"), "--port", "0"], { encoding: "utf8" });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /FILE_NOT_FOUND/);
  });
});
