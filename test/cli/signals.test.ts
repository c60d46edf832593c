/**
 * Stopping the CLI mid-job: SIGHUP (terminal closed), SIGINT (Ctrl-C) and SIGTERM (kill, service
 * stop) each cancel the job, remove every temporary file, write no output and exit with
 * 128 + the signal's number, on both engines, for `merge` and `run`; `demo` stops too.
 */
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSyntheticModel } from "../../lib/synthetic";
import { ENGINES } from "../helpers/engines";
import { tempDir } from "../helpers/models";

const CLI = join(__dirname, "../../lib/cli/main.js");
const SIGNALS = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;
/** 128 outputs of 16 MiB: seconds of work, stopped at the first 10% (about 200 MiB written). */
const VALUES = 128;

/**
 * Runs the CLI, sends `signal` once its output matches `when` (default: merge progress past 0%);
 * resolves with the exit code and what it printed.
 */
function runAndStop(args: string[], signal: NodeJS.Signals, options: { when?: RegExp; env?: Record<string, string> } = {}): Promise<{ code: number | null; sent: boolean; out: string; err: string }> {
  // Non-TTY progress: "merging: 10% (…)" or "merging, pass 1/1: 10% (…)".
  const when = options.when ?? /^merging[^:\n]*: [1-9]\d*% \(/m;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } });
    let out = "", err = "";
    let sent = false;
    const watch = () => {
      if (!sent && (when.test(err) || when.test(out))) {
        sent = true;
        child.kill(signal);
      }
    };
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => { out += chunk; watch(); });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => { err += chunk; watch(); });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, sent, out, err }));
  });
}

describe("CLI: stopped by a signal", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const inputs = join(dir.path, "inputs");
  const a = join(inputs, "a.safetensors"), b = join(inputs, "b.safetensors");
  before(async () => {
    mkdirSync(inputs);
    await writeSyntheticModel(a, [["w", [2048, 2048], "F32"]], { seed: 1 });
    await writeSyntheticModel(b, [["w", [2048, 2048], "F32"]], { seed: 2 });
  });

  const step = (1 / (VALUES - 1)).toFixed(6);
  const commands = {
    merge: (out: string, engine: string) => ["merge", "--a", a, "--b", b, "--multiplier", `0:1:${step}`, "--out", join(out, "sweep.safetensors"), "--no-metadata", "--engine", engine],
    run: (out: string, engine: string) => {
      const recipe = join(dir.path, `sweep-${engine}.txt`);
      writeFileSync(recipe, `sweep = ${a} + ${b}, 0:1:${step}, safetensors\n`);
      return ["run", recipe, "--out-dir", out, "--no-metadata", "--engine", engine];
    },
  };

  for (const engine of ENGINES) {
    for (const [command, argsFor] of Object.entries(commands)) {
      for (const [signal, expected] of Object.entries(SIGNALS) as [NodeJS.Signals, number][]) {
        it(`${command}, ${engine} engine: ${signal} removes every temporary file and exits ${expected}`, async () => {
          const out = dir.fresh(`${command}-${engine}-${signal}`);
          const r = await runAndStop(argsFor(out, engine), signal);
          assert.ok(r.sent, `the job ended before reporting progress: ${r.err}`);
          assert.equal(r.code, expected, r.err);
          // Nothing at all: no output, no temporary or staged file, no history line.
          assert.deepEqual(readdirSync(out), []);
        });
      }
    }
  }

  for (const [signal, expected] of Object.entries(SIGNALS) as [NodeJS.Signals, number][]) {
    it(`demo: ${signal} stops it, removes its folder and exits ${expected}`, async () => {
      const tmp = dir.fresh(`demo-${signal}`);
      const r = await runAndStop(["demo"], signal, { when: /^demo folder: /m, env: { TMPDIR: tmp } });
      assert.ok(r.sent);
      assert.equal(r.code, expected, r.out + r.err);
      assert.deepEqual(readdirSync(tmp), []);
    });
  }
});
