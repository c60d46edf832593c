/**
 * Command-line flags for the methods' named parameters, made from the method registry: every
 * parameter after α (`--multiplier`) and β (`--beta`) of any method becomes `--<name>` (in
 * kebab case: `drop_rate` → `--drop-rate`), with `--<name>-weight REGEX=VALUE` (per key,
 * repeatable) and `--<name>-blocks VALUES` (per block), as `--beta` has `--beta-weight` and
 * `--beta-blocks`. A method added to the registry gets its flags without a CLI edit.
 */
import { MergeError } from "../errors";
import type { MergeMethod, MethodParam } from "../methods/define";
import { METHODS } from "../methods/registry";
import { listArg, stringArg, type CommandOption, type ParsedArgs } from "./command";

/** "drop_rate", "dropRate" → "drop-rate". */
export function paramFlag(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/_/g, "-").toLowerCase();
}

export interface NamedParam {
  name: string;
  flag: string;
  /** The methods that have it, in registry order. */
  methods: MergeMethod[];
  /** Its definition in the first of them (summary, range, default). */
  param: MethodParam;
}

/** Every named parameter (after α and β) of the given methods, in first-seen order. */
export function namedParams(methods: readonly MergeMethod[] = METHODS): NamedParam[] {
  const byName = new Map<string, NamedParam>();
  for (const m of methods) {
    for (const p of m.params.slice(2)) {
      const known = byName.get(p.name);
      if (known) known.methods.push(m);
      else byName.set(p.name, { name: p.name, flag: paramFlag(p.name), methods: [m], param: p });
    }
  }
  return [...byName.values()];
}

/**
 * The options for `namedParams`, leaving out any whose flag a command already has (`taken`),
 * so a parameter can never shadow a fixed option (a test keeps the registry free of such names).
 */
export function methodParamOptions(taken: readonly string[], methods: readonly MergeMethod[] = METHODS): Record<string, CommandOption> {
  const options: Record<string, CommandOption> = {};
  for (const p of namedParams(methods)) {
    if ([p.flag, `${p.flag}-weight`, `${p.flag}-blocks`].some((f) => taken.includes(f))) continue;
    const [lo, hi] = p.param.range;
    options[p.flag] = {
      type: "string",
      value: p.flag.replace(/-/g, "_").toUpperCase(),
      description: `${p.methods.map((m) => m.name).join(", ")}: ${p.param.summary} [${lo}, ${hi}] (default ${p.param.default}; per key --${p.flag}-weight REGEX=VALUE, per block --${p.flag}-blocks VALUES)`,
    };
    options[`${p.flag}-weight`] = { type: "string", multiple: true, hidden: true, value: "REGEX=VALUE", description: `${p.name} for keys matching REGEX` };
    options[`${p.flag}-blocks`] = { type: "string", hidden: true, value: "VALUES", description: `${p.name} per block` };
  }
  return options;
}

/** `--flag TEXT` as a finite number. */
export function numberArg(flag: string, text: string): number {
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v)) throw new MergeError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)}: expected a number`);
  return v;
}

/** `REGEX=VALUE`, split at the last "=" (a pattern may contain "=", a number cannot). */
export function keyValueArg(flag: string, text: string): { pattern: string; value: number } {
  const at = text.lastIndexOf("=");
  if (at <= 0) throw new MergeError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)}: expected REGEX=VALUE, such as "cond_stage_model\\.=0.3"`);
  return { pattern: text.slice(0, at), value: numberArg(flag, text.slice(at + 1)) };
}

export interface NamedParamValues {
  /** Row values by parameter name. */
  values: Record<string, number>;
  /** Per-key values by parameter name. */
  weights: Record<string, { pattern: string; value: number }[]>;
  /** Block values by parameter name (text, as --blocks). */
  blocks: Record<string, string>;
}

/**
 * The named parameters given on the command line for `method`. A flag of a parameter the method
 * lacks is an error naming the flag and the method's parameters (a typo must not be ignored).
 */
export function namedParamArgs(args: ParsedArgs, method: MergeMethod, methods: readonly MergeMethod[] = METHODS): NamedParamValues {
  const out: NamedParamValues = { values: {}, weights: {}, blocks: {} };
  for (const p of namedParams(methods)) {
    const value = stringArg(args, p.flag);
    const weights = listArg(args, `${p.flag}-weight`);
    const blocks = stringArg(args, `${p.flag}-blocks`);
    if (value === undefined && weights.length === 0 && blocks === undefined) continue;
    if (!method.params.some((q) => q.name === p.name)) {
      const own = method.params.slice(2).map((q) => `--${paramFlag(q.name)}`);
      const given = value !== undefined ? p.flag : weights.length ? `${p.flag}-weight` : `${p.flag}-blocks`;
      throw new MergeError("INVALID_ARGUMENT", `--${given}: ${method.name} has no parameter ${p.name} (${p.methods.map((m) => m.name).join(", ")} ${p.methods.length === 1 ? "has" : "have"}; ${method.name}'s own flags: ${own.length ? own.join(", ") : "none beyond --multiplier and --beta"})`);
    }
    if (value !== undefined) out.values[p.name] = numberArg(`--${p.flag}`, value);
    if (weights.length) out.weights[p.name] = weights.map((w) => keyValueArg(`--${p.flag}-weight`, w));
    if (blocks !== undefined) out.blocks[p.name] = blocks;
  }
  return out;
}

/** `--weights 1,0.8,0.6`: one weight per model, in the order of `--models`. */
export function modelWeightsArg(text: string, models: number): number[] {
  const parts = text.split(",").map((t) => t.trim());
  const weights = parts.map((t) => numberArg("--weights", t));
  if (weights.length !== models) {
    throw new MergeError("INVALID_ARGUMENT", `--weights ${JSON.stringify(text)}: ${weights.length} weight${weights.length === 1 ? "" : "s"} for ${models} model${models === 1 ? "" : "s"} (one per --models entry, in order; per-key α is --weight REGEX=VALUE)`);
  }
  return weights;
}
