/** A CLI subcommand: declared as data so `--help` and dispatch come from one place. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { MergeError } from "../errors";

export interface CliIo {
  out: NodeJS.WriteStream | NodeJS.WritableStream;
  err: NodeJS.WriteStream | NodeJS.WritableStream;
  isTTY: boolean;
}

export interface CommandOption {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
  description: string;
  /** Placeholder shown in help, e.g. FILE. */
  value?: string;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: Record<string, CommandOption>;
  /** Allow positional arguments. */
  positionals?: boolean;
  run(args: ParsedArgs, io: CliIo, signal: AbortSignal): Promise<number>;
}

export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/** The engine options every merging command shares (merge, run, reproduce, bench). */
export const ENGINE_OPTIONS: Record<string, CommandOption> = {
  engine: { type: "string", value: "NAME", description: "auto (default), native or js" },
  threads: { type: "string", value: "N", description: "native engine threads (default: all cores)" },
  isa: { type: "string", value: "NAME", description: "force a kernel set: auto, scalar, avx2, avx512" },
};

export function defineCommand(c: Command): Command {
  return c;
}

export function commandHelp(c: Command): string {
  const lines = [`Usage: tensormerge ${c.usage}`, "", c.summary, "", "Options:"];
  const entries = Object.entries({ ...c.options, help: { type: "boolean", short: "h", description: "show this help" } as CommandOption });
  const labels = entries.map(([name, o]) => `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`);
  const width = Math.max(...labels.map((l) => l.length)) + 2;
  entries.forEach(([, o], i) => lines.push(`  ${labels[i]!.padEnd(width)}${o.description}`));
  return lines.join("\n") + "\n";
}

export function parseCommandArgs(c: Command, argv: string[]): ParsedArgs {
  const options: ParseArgsConfig["options"] = { help: { type: "boolean", short: "h" }, verbose: { type: "boolean" } };
  for (const [name, o] of Object.entries(c.options)) {
    options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: c.positionals ?? false, strict: true });
    return { values: values as ParsedArgs["values"], positionals };
  } catch (e) {
    throw new MergeError("INVALID_ARGUMENT", `${(e as Error).message} (see: tensormerge ${c.name} --help)`);
  }
}

/** A required option, or INVALID_ARGUMENT saying which one is missing, as the user typed options. */
export function requiredArg(args: ParsedArgs, name: string, command: string, why = ""): string {
  const v = stringArg(args, name);
  if (v === undefined || v === "") throw new MergeError("INVALID_ARGUMENT", `--${name} is required${why} (see: tensormerge ${command} --help)`);
  return v;
}

export function stringArg(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === "string" ? v : undefined;
}
export function listArg(args: ParsedArgs, name: string): string[] {
  const v = args.values[name];
  return Array.isArray(v) ? (v as string[]) : typeof v === "string" ? [v] : [];
}
export function flagArg(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}
