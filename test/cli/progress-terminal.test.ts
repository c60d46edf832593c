/**
 * The progress bars on a real 80 × 24 terminal (tmux renders the screen): one line per bar, no
 * line wider than the terminal, nothing left over after a bar, rates and ETAs that are real
 * numbers for hashing as for merging. Needs tmux: skipped without it locally, failed under CI.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { writeSyntheticModel } from "../../lib/synthetic";
import { tempDir } from "../helpers/models";

const CLI = join(__dirname, "../../lib/cli/main.js");
const hasTmux = spawnSync("tmux", ["-V"]).status === 0;

/**
 * Runs a shell command in a detached 80 × 24 tmux session on a private server; returns the
 * screen (with what scrolled off) once it ends. Run from `cwd` so the report's paths are short.
 */
async function screenOf(cwd: string, command: string, env: Record<string, string>): Promise<string[]> {
  const server = `tm-test-${process.pid}-${Math.random().toString(16).slice(2)}`;
  const tmux = (...args: string[]) => spawnSync("tmux", ["-L", server, "-f", "/dev/null", ...args], { encoding: "utf8" });
  const vars = Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(" ");
  const started = tmux("new-session", "-d", "-x", "80", "-y", "24", `cd '${cwd}' && env ${vars} ${command}; echo EXIT=$?; sleep 600`);
  assert.equal(started.status, 0, started.stderr);
  try {
    for (const deadline = Date.now() + 120_000; Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 250));
      const screen = tmux("capture-pane", "-p", "-S", "-").stdout; // with the lines scrolled off
      if (/^EXIT=\d+$/m.test(screen)) return screen.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "");
    }
    throw new Error(`the command did not finish: ${tmux("capture-pane", "-p").stdout}`);
  } finally {
    tmux("kill-server");
  }
}

describe("CLI progress on an 80-column terminal", function () {
  this.timeout(180_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  before(async function () {
    if (!hasTmux) {
      if (process.env.CI) throw new Error("tmux is required under CI for the terminal tests");
      this.skip();
    }
    // A sweep of 11 × 16 MiB on the TS engine: a couple of seconds of redraws.
    await writeSyntheticModel(a, [["w", [2048, 2048], "F32"]], { seed: 1 });
    await writeSyntheticModel(b, [["w", [2048, 2048], "F32"]], { seed: 2 });
  });

  /** Each bar is exactly one line, fully formed (nothing after its ETA), within 80 columns. */
  function assertBars(screen: string[], bars: string[]): void {
    for (const line of screen) assert.ok(line.length <= 80, `${line.length} columns: ${line}`);
    for (const label of bars) {
      const lines = screen.filter((l) => l.startsWith(`${label} `) || l.startsWith(`${label}[`));
      assert.equal(lines.length, 1, `one line for "${label}":\n${screen.join("\n")}`);
      assert.match(lines[0]!, new RegExp(`^${label.replace(/[.]/g, "\\.")} \\[#+\\] 100%( .+)?  ETA 0:00$`), lines[0]);
      assert.doesNotMatch(lines[0]!, / 0 B\/s|--\/s/, `no rate: ${lines[0]}`);
    }
    // Nothing else on screen but the command's own report: no fragments of earlier redraws.
    const known = /^(hashing |merging|wrote |weighted-sum: |js engine |EXIT=0$|  (writing|finishing|done) )/;
    for (const line of screen) assert.match(line, known, `a stray line:\n${screen.join("\n")}`);
  }

  it("merge: a bar for hashing each input, then one for the merge", async () => {
    const out = basename(dir.fresh("merge"));
    const screen = await screenOf(dir.path, `${process.execPath} ${CLI} merge --a a.safetensors --b b.safetensors --multiplier 0:1:0.1 --out ${out}/o.safetensors --engine js`, { TENSORMERGE_CACHE_DIR: dir.fresh("cache") });
    assertBars(screen, ["hashing a.safetensors", "hashing b.safetensors", "merging"]);
  });

  it("run: hashing bars with a real rate and ETA, then the merge", async () => {
    const out = basename(dir.fresh("run"));
    writeFileSync(join(dir.path, "sweep.txt"), `sweep = ${a} + ${b}, 0:1:0.1, safetensors\n`);
    const screen = await screenOf(dir.path, `${process.execPath} ${CLI} run sweep.txt --out-dir ${out} --engine js`, { TENSORMERGE_CACHE_DIR: dir.fresh("cache") });
    assertBars(screen, ["hashing a.safetensors", "hashing b.safetensors", "merging, pass 1/1"]);
  });
});
