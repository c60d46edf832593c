/**
 * Stopping the CLI mid-job: SIGHUP (terminal closed), SIGINT (Ctrl-C) and SIGTERM (kill, service
 * stop) each cancel the job, remove every temporary file, write no output and exit with
 * 128 + the signal's number, on both engines, for `merge` and `run`.
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

/** Runs the CLI, sends `signal` once it reports merge progress; resolves with the exit code. */
function runAndStop(args: string[], signal: NodeJS.Signals): Promise<{ code: number | null; sent: boolean; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    let sent = false;
    child.stdout.resume();
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      err += chunk;
      // Non-TTY progress: "merging: 10% (…)" or "merging, pass 1/1: 10% (…)".
      if (!sent && /^merging[^:\n]*: [1-9]\d*% \(/m.test(err)) {
        sent = true;
        child.kill(signal);
      }
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, sent, err }));
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
});
