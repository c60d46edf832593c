/**
 * Install without a compiler: the packed tarball carries a prebuilt addon, installs into an
 * empty project with nothing but `node` and `npm` on the PATH (no cc, g++, make, cmake,
 * python), from no registry (an empty npm cache and --offline: node-gyp-build is bundled), and
 * then merges on the native engine from `require("tensormerge")` and from the installed CLI.
 *
 * The test runs the `prepack` step itself (scripts/prebuild.js) and packs with --ignore-scripts:
 * `npm pack` would otherwise also run `prepare` (tsc), rewriting the dist/ this mocha runs from.
 */
import { strict as assert } from "node:assert";
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, realpathSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { delimiter, join, resolve } from "node:path";
import { decodeValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";

const root = resolve(__dirname, "../../..");
const PREBUILD = join("prebuilds", `${process.platform}-${process.arch}`, "node.napi.glibc.node");

/** The real npm CLI script (npm_execpath when run by npm, else `npm` on the PATH). */
function npmCli(): string {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && /npm-cli\.js$/.test(fromNpm)) return fromNpm;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const candidate = join(dir, "npm");
    if (dir && existsSync(candidate)) return realpathSync(candidate);
  }
  throw new Error("npm not found on the PATH");
}

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env, encoding: "utf8", timeout: 240_000 });
  if (r.error) throw r.error;
  return r;
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} exited ${r.status} (signal ${r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

// Quarters and small integers: every product and sum below is exact in fp32, so the expected
// values need no model of the kernel's rounding.
const A: Record<string, TestTensor> = {
  "model.diffusion_model.input_blocks.0.0.weight": { dtype: "F32", shape: [4, 3], values: [1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4] },
  "model.diffusion_model.input_blocks.0.0.bias": { dtype: "F16", shape: [4], values: [0.5, 1, 1.5, 2] },
};
const B: Record<string, TestTensor> = {
  "model.diffusion_model.input_blocks.0.0.weight": { dtype: "F32", shape: [4, 3], values: [5, 6, 7, 8, 9, 10, 11, 12, 3, 2, 1, 0] },
  "model.diffusion_model.input_blocks.0.0.bias": { dtype: "F16", shape: [4], values: [4.5, 5, 5.5, 6] },
};

function assertWeightedSum(file: string, m: number): void {
  const out = readModel(file);
  for (const [name, t] of Object.entries(A)) {
    const got = out.tensors.get(name);
    assert.ok(got, `${name} missing from ${file}`);
    assert.equal(got.dtype, t.dtype);
    const b = B[name]!.values!;
    const want = Array.from(t.values!, (a, i) => (1 - m) * a + m * b[i]!);
    assert.deepEqual(decodeValues(got.dtype as "F32" | "F16", got.bytes), want, `${name} in ${file}`);
  }
}

describe("install: the packed tarball, without a compiler", function () {
  this.timeout(600_000); // the prebuild compiles once in a fresh checkout; later runs are incremental
  const tmp = tempDir("tm-install-");
  after(() => tmp.cleanup());

  let project = "";
  let env: NodeJS.ProcessEnv = {};
  let installLog = "";

  before(() => {
    // The prepack step: builds prebuilds/<platform>-<arch>/ offline with cmake-js.
    ok(run(process.execPath, [join(root, "scripts", "prebuild.js")], { cwd: root, env: process.env }), "scripts/prebuild.js");
    assert.ok(existsSync(join(root, PREBUILD)), `${PREBUILD} was not staged`);

    // A PATH with only node and npm; HOME, cache and prefix all inside the temp folder.
    const bin = tmp.fresh("bin");
    symlinkSync(process.execPath, join(bin, "node"));
    symlinkSync(npmCli(), join(bin, "npm"));
    const home = tmp.fresh("home");
    for (const tool of ["cc", "c++", "g++", "gcc", "make", "cmake", "python3", "python"]) {
      const found = spawnSync("/bin/sh", ["-c", `command -v ${tool}`], { env: { PATH: bin }, encoding: "utf8" });
      assert.notEqual(found.status, 0, `${tool} is reachable from the test PATH`);
    }
    env = {
      PATH: bin,
      HOME: home,
      npm_config_cache: join(home, "npm-cache"), // empty: nothing can come from a cached registry
      npm_config_offline: "true",
      npm_config_update_notifier: "false",
      npm_config_audit: "false",
      npm_config_fund: "false",
      // npm spawns lifecycle scripts with `sh` from the PATH; give it the absolute shell
      // instead of putting one on the PATH (a shell is no compiler, but the PATH stays minimal).
      npm_config_script_shell: "/bin/sh",
      TENSORMERGE_CACHE_DIR: process.env.TENSORMERGE_CACHE_DIR,
    };

    const packDir = tmp.fresh("pack");
    const packed = ok(run(process.execPath, [npmCli(), "pack", "--ignore-scripts", "--pack-destination", packDir], { cwd: root, env: { ...env, PATH: process.env.PATH } }), "npm pack");
    const tarball = join(packDir, packed.trim().split("\n").at(-1)!);
    assert.ok(existsSync(tarball), `npm pack wrote no ${tarball}`);

    project = tmp.fresh("project");
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "tm-install-check", version: "1.0.0", private: true }));
    const started = process.hrtime.bigint();
    const installed = run("npm", ["install", "--foreground-scripts", tarball], { cwd: project, env });
    installLog = ok(installed, "npm install of the tarball") + installed.stderr;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    console.log(`      tarball ${(statSync(tarball).size / 1024).toFixed(0)} KiB, installed without a compiler in ${seconds.toFixed(1)} s`);

    const models = join(project, "models");
    mkdirSync(models);
    writeModel(join(models, "a.safetensors"), A);
    writeModel(join(models, "b.safetensors"), B);
  });

  it("installs the prebuild and compiles nothing, with only node_modules/tensormerge", () => {
    const pkg = join(project, "node_modules", "tensormerge");
    assert.ok(existsSync(join(pkg, PREBUILD)), `${PREBUILD} missing from the installed package`);
    assert.ok(!existsSync(join(pkg, "build")), "the install built the addon instead of using the prebuild");
    assert.ok(!/tensormerge: /.test(installLog), `the install script warned:\n${installLog}`);
    // Nothing else came from a registry: no cmake-js, node-addon-api or node-api-headers.
    assert.deepEqual(readdirSync(join(project, "node_modules")).filter((n) => !n.startsWith(".")), ["tensormerge"]);
  });

  it("merges on the native engine from require(\"tensormerge\"), loading the prebuild", () => {
    const script = `
      const { merge } = require("tensormerge");
      merge({ a: "models/a.safetensors", b: "models/b.safetensors", method: "weighted-sum", multiplier: 0.25,
              out: "lib.safetensors", engine: "native" }).then((report) => {
        const maps = require("fs").readFileSync("/proc/self/maps", "utf8");
        console.log(JSON.stringify({ engine: report.engine, isa: report.isa, mapped: maps.includes(${JSON.stringify(PREBUILD)}) }));
      }, (e) => { console.error(e.code, e.message); process.exit(1); });`;
    const out = JSON.parse(ok(run("node", ["-e", script], { cwd: project, env }), "require(\"tensormerge\")").trim()) as { engine: string; isa: string; mapped: boolean };
    assert.equal(out.engine, "native");
    assert.ok(["scalar", "avx2", "avx512"].includes(out.isa), `isa ${out.isa}`);
    assert.ok(out.mapped, "the process did not load the installed prebuild");
    assertWeightedSum(join(project, "lib.safetensors"), 0.25);
  });

  it("serves the ui page (lib/ui/static) from the installed package", () => {
    const script = `
      const { startUiServer } = require("tensormerge/dist/lib/ui/server");
      startUiServer({ modelDirs: ["models"], port: 0 }).then(async (ui) => {
        const get = (path) => fetch("http://127.0.0.1:" + ui.port + path, { headers: { authorization: "Bearer " + ui.token } });
        const page = await get("/"), app = await get("/app.js");
        console.log(JSON.stringify({ page: page.status, title: /<title>tensormerge<\\/title>/.test(await page.text()), app: app.status, type: app.headers.get("content-type") }));
        await ui.close();
      }, (e) => { console.error(e.code, e.message); process.exit(1); });`;
    const out = JSON.parse(ok(run("node", ["-e", script], { cwd: project, env }), "tensormerge ui from the package").trim()) as { page: number; title: boolean; app: number; type: string };
    assert.deepEqual(out, { page: 200, title: true, app: 200, type: "text/javascript; charset=utf-8" });
  });

  it("merges on the native engine from the installed CLI", () => {
    const cli = join(project, "node_modules", ".bin", "tensormerge");
    const r = run(cli, ["merge", "--a", "models/a.safetensors", "--b", "models/b.safetensors", "--multiplier", "0.75", "--out", "cli.safetensors", "--engine", "native"], { cwd: project, env });
    // --engine native fails with NATIVE_UNAVAILABLE when the addon does not load; the summary names the engine.
    assert.match(ok(r, "node_modules/.bin/tensormerge merge"), /native engine/);
    assertWeightedSum(join(project, "cli.safetensors"), 0.75);
  });
});
