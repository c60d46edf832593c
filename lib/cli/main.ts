#!/usr/bin/env node
/** The `tensormerge` command line: dispatch to a subcommand, one clear line per error. */
import { MergeError } from "../errors";
import { commandHelp, parseCommandArgs, type CliIo } from "./command";
import { COMMANDS } from "./commands";

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    "Usage: tensormerge <command> [options]",
    "",
    "Merge model checkpoints (safetensors, .ckpt) at disk speed.",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Options:",
    "  --version, -v  print the version",
    "  --help, -h     show this help",
    "",
    "Run `tensormerge <command> --help` for a command's options.",
    "",
  ].join("\n");
}

export async function runCli(argv: string[], io: CliIo, signal: AbortSignal): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    io.out.write(mainHelp());
    return name ? 0 : 1;
  }
  if (name === "--version" || name === "-v") {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    io.out.write(`${require("../../../package.json").version}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    io.err.write(`tensormerge: unknown command "${name}"\n\n${mainHelp()}`);
    return 2;
  }
  const verbose = rest.includes("--verbose");
  try {
    const args = parseCommandArgs(command, rest);
    if (args.values.help) {
      io.out.write(commandHelp(command));
      return 0;
    }
    return await command.run(args, io, signal);
  } catch (e) {
    const code = e instanceof MergeError ? e.code : "INTERNAL";
    const message = e instanceof Error ? e.message : String(e);
    io.err.write(`tensormerge: error [${code}]: ${message}\n`);
    if (verbose && e instanceof Error && e.stack) io.err.write(`${e.stack}\n`);
    return code === "INVALID_ARGUMENT" ? 2 : 1;
  }
}

/** Signals that stop a command cleanly, with their numbers (the exit code is 128 + the number). */
export const STOP_SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

if (require.main === module) {
  const controller = new AbortController();
  let stoppedBy: keyof typeof STOP_SIGNALS | undefined;
  for (const [name, number] of Object.entries(STOP_SIGNALS) as [keyof typeof STOP_SIGNALS, number][]) {
    process.on(name, () => {
      // The first signal cancels cleanly (temp files removed, then exit 128 + its number); a
      // second Ctrl-C exits at once. A closed terminal (SIGHUP) or a service stop (SIGTERM)
      // cannot be impatient, so those only cancel.
      if (stoppedBy && name === "SIGINT") process.exit(128 + number);
      stoppedBy ??= name;
      controller.abort();
    });
  }
  // After SIGHUP the terminal is gone and writing to it fails (EIO, EPIPE): progress and the
  // final message are lost, but the cleanup must still run.
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => undefined);
  // A command that finished anyway (the signal came after its outputs were committed) says so.
  const exitCode = (code: number) => (stoppedBy && code !== 0 ? 128 + STOP_SIGNALS[stoppedBy] : code);
  runCli(process.argv.slice(2), { out: process.stdout, err: process.stderr, isTTY: Boolean(process.stderr.isTTY) }, controller.signal).then(
    (code) => { process.exitCode = exitCode(code); },
    (e) => { process.stderr.write(`tensormerge: ${String(e)}\n`); process.exitCode = exitCode(1); },
  );
}
