/** A CLI subcommand: declared as data so `--help` and dispatch come from one place. */
import { resolve as resolvePath } from "node:path";
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
  /**
   * Several values after one flag (`--models a b c`), up to the next argument that starts with
   * "-"; repeating the flag adds more. Implies `multiple`.
   */
  variadic?: boolean;
  /** Left out of `--help` (an old spelling kept only to explain what replaced it). */
  hidden?: boolean;
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
  threads: { type: "string", value: "N", description: "engine threads, native or TS (default: all cores)" },
  isa: { type: "string", value: "NAME", description: "force a kernel set: auto, scalar, avx2, avx512" },
};

/** The page cache policy of merge and mergekit (MergeOptions.inputCache). */
export const INPUT_CACHE_OPTION: Record<string, CommandOption> = {
  "input-cache": { type: "string", value: "MODE", description: "uncached inputs: auto (default: bypass on a VM, keep on bare metal), keep (leave them in the page cache for the next merge) or bypass (direct reads, nothing left cached)" },
};

/** Where models given by name or hash are looked up; every command that finds models has it. */
export const MODEL_DIR_OPTION: Record<string, CommandOption> = {
  "model-dir": { type: "string", multiple: true, value: "DIR", description: "folder to find models given by name or hash in (repeatable; default $TENSORMERGE_MODELS or ./models)" },
};

/** What `--models` meant before it listed the models to merge. */
export const MODELS_IS_NOT_A_FOLDER = "--models lists the models to merge; folders to look models up in are --model-dir";

/**
 * For commands that merge no list of models (run, reproduce): `--models DIR` is refused with
 * the new spelling rather than as an unknown option.
 */
export const OLD_MODELS_OPTION: Record<string, CommandOption> = {
  models: { type: "string", multiple: true, hidden: true, value: "DIR", description: "renamed --model-dir" },
};

export function refuseOldModelsOption(args: ParsedArgs): void {
  if (listArg(args, "models").length) throw new MergeError("INVALID_ARGUMENT", `${MODELS_IS_NOT_A_FOLDER} (this command takes --model-dir DIR)`);
}

/** The model folders given with --model-dir, absolute; empty for the defaults. */
export function modelDirArgs(args: ParsedArgs): string[] {
  return listArg(args, "model-dir").map((d) => resolvePath(d));
}

export function defineCommand(c: Command): Command {
  return c;
}

export function commandHelp(c: Command): string {
  const lines = [`Usage: tensormerge ${c.usage}`, "", c.summary, "", "Options:"];
  const entries = Object.entries({ ...visibleOptions(c.options), help: { type: "boolean", short: "h", description: "show this help" } as CommandOption });
  const labels = entries.map(([name, o]) => `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}${o.variadic ? " …" : ""}` : ""}`);
  const width = Math.max(...labels.map((l) => l.length)) + 2;
  entries.forEach(([, o], i) => lines.push(`  ${labels[i]!.padEnd(width)}${o.description}`));
  return lines.join("\n") + "\n";
}

function visibleOptions(options: Record<string, CommandOption>): Record<string, CommandOption> {
  return Object.fromEntries(Object.entries(options).filter(([, o]) => !o.hidden));
}

/**
 * `--models a b c` → `--models a --models b --models c`, so node's parseArgs (one value per
 * flag) reads a variadic option. The list ends at the next argument starting with "-" (another
 * option, or "--", after which everything is positional); `--models=a` is a single value.
 */
export function expandVariadic(c: Command, argv: readonly string[]): string[] {
  const variadic = new Set(Object.entries(c.options).filter(([, o]) => o.variadic).map(([name]) => `--${name}`));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    out.push(arg);
    if (arg === "--") {
      out.push(...argv.slice(i + 1));
      break;
    }
    if (!variadic.has(arg)) continue;
    let k = i + 1;
    for (; k < argv.length && !argv[k]!.startsWith("-"); k++) {
      if (k > i + 1) out.push(arg);
      out.push(argv[k]!);
    }
    i = k - 1;
  }
  return out;
}

export function parseCommandArgs(c: Command, argv: string[]): ParsedArgs {
  const options: ParseArgsConfig["options"] = { help: { type: "boolean", short: "h" }, verbose: { type: "boolean" } };
  for (const [name, o] of Object.entries(c.options)) {
    options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple || o.variadic ? { multiple: true } : {}) };
  }
  try {
    const { values, positionals } = parseArgs({ args: expandVariadic(c, argv), options, allowPositionals: c.positionals ?? false, strict: true });
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
