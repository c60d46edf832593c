/**
 * Command-line flags for the methods' named parameters, made from the method registry: every
 * parameter after α (`--multiplier`) and a classic method's β (`--beta`) becomes `--<name>` (in
 * kebab case: `drop_rate` → `--drop-rate`), with its per-key and per-block forms beside it, as
 * α and β have theirs: `--<name>-weight REGEX=VALUE` (repeatable; the first matching pattern
 * wins) and `--<name>-blocks VALUES` (a SuperMerger list or preset, as --blocks). They become
 * the recipe row's `params`, `weights` and `blocks` by parameter name (lib/methods/params.ts).
 * A method added to the registry gets its flags without a CLI edit.
 */
import { MergeError } from "../errors";
import type { MergeMethod, MethodParam } from "../methods/define";
import { METHODS } from "../methods/registry";
import { checkParamValue, paramFlag, perBlockOption, perKeyOption, type KeyValue } from "../methods/params";
import { MODEL_WEIGHT_PARAM } from "../recipes/types";
import { listArg, stringArg, type CommandOption, type ParsedArgs } from "./command";

export { paramFlag } from "../methods/params";

export interface NamedParam {
  name: string;
  /** The row value's flag without "--": "drop-rate". */
  flag: string;
  /** The per-key flag without "--": "drop-rate-weight". */
  weightFlag: string;
  /** The per-block flag without "--": "drop-rate-blocks". */
  blocksFlag: string;
  /** The methods that have it, in registry order. */
  methods: MergeMethod[];
  /** Its definition in the first of them (summary, range, default). */
  param: MethodParam;
}

/** Every named parameter (after α and β) of the given methods, in first-seen order. */
export function namedParams(methods: readonly MergeMethod[] = METHODS): NamedParam[] {
  const byName = new Map<string, NamedParam>();
  for (const m of methods) {
    // α is --multiplier; a classic method's β is --beta; a base + models method names its second.
    // Its per-model weight is --weights (one value per model), not a flag of its own.
    for (const p of m.params.slice(m.many ? 1 : 2)) {
      if (m.many && p.name === MODEL_WEIGHT_PARAM) continue;
      const known = byName.get(p.name);
      if (known) known.methods.push(m);
      else byName.set(p.name, { name: p.name, flag: paramFlag(p.name), weightFlag: perKeyOption(p.name).slice(2), blocksFlag: perBlockOption(p.name).slice(2), methods: [m], param: p });
    }
  }
  return [...byName.values()];
}

/**
 * The options for `namedParams` (each parameter's value, per-key and per-block flags), leaving
 * out any whose flag a command already has (`taken`), so a parameter can never shadow a fixed
 * option (a test keeps the registry free of such names).
 */
export function methodParamOptions(taken: readonly string[], methods: readonly MergeMethod[] = METHODS): Record<string, CommandOption> {
  const options: Record<string, CommandOption> = {};
  for (const p of namedParams(methods)) {
    if (taken.includes(p.flag)) continue;
    const [lo, hi] = p.param.range;
    // Methods may share a parameter with different defaults (normalize: ties 1, dare 0).
    const defaults = p.methods.map((m) => m.params.find((q) => q.name === p.name)!.default);
    const defaultText = defaults.every((d) => d === defaults[0]) ? `default ${defaults[0]}` : `default ${p.methods.map((m, i) => `${defaults[i]} for ${m.name}`).join(", ")}`;
    options[p.flag] = {
      type: "string",
      value: p.param.integer ? "N" : "X",
      description: `${p.methods.map((m) => m.name).join(", ")}: ${p.param.summary} [${lo}, ${hi}] (${defaultText}${p.methods.some((m) => m.many && m.params.find((q) => q.name === p.name)!.perModel) ? "; a comma list gives one value per model" : ""})`,
    };
    if (!taken.includes(p.weightFlag)) {
      options[p.weightFlag] = { type: "string", multiple: true, value: "REGEX=X", description: `${p.name} for keys matching REGEX, every model alike (repeatable, as --weight)` };
    }
    if (!taken.includes(p.blocksFlag)) options[p.blocksFlag] = { type: "string", value: "VALUES", description: `${p.name} per block, as --blocks` };
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
  const pattern = text.slice(0, at);
  try {
    new RegExp(pattern);
  } catch (e) {
    throw new MergeError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)}: ${JSON.stringify(pattern)} is not a valid regular expression (${(e as Error).message})`);
  }
  const valueText = text.slice(at + 1);
  const value = Number(valueText);
  if (valueText.trim() === "" || !Number.isFinite(value)) {
    const perModel = valueText.includes(",") ? " (one value, for every model: per-model values are the parameter's own flag with a comma list)" : "";
    throw new MergeError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)}: expected a number after the last "=", got ${JSON.stringify(valueText)}${perModel}`);
  }
  return { pattern, value };
}

export interface NamedParamArgs {
  /** Row values by parameter name. */
  values: Record<string, number>;
  /** Per-model values by parameter name, one per model (`--density 0.2,0.3,0.5`). */
  perModel: Record<string, number[]>;
  /** Per-key values by parameter name, in the order given (`--density-weight REGEX=X`). */
  weights: Record<string, KeyValue[]>;
  /** Block values by parameter name, as typed (`--density-blocks GRAD_V`). */
  blocks: Record<string, string>;
}

/** The flags of `method`'s named parameters, for messages. */
function ownFlags(method: MergeMethod): string {
  const flags = method.params.slice(method.many ? 1 : 2).filter((q) => !(method.many && q.name === MODEL_WEIGHT_PARAM)).map((q) => `--${paramFlag(q.name)}`);
  return flags.length ? flags.join(", ") : "none beyond --multiplier and --beta";
}

function lacking(flag: string, p: NamedParam, method: MergeMethod): MergeError {
  return new MergeError("INVALID_ARGUMENT", `--${flag}: ${method.name} has no parameter ${p.name} (${p.methods.map((m) => m.name).join(", ")} ${p.methods.length === 1 ? "has" : "have"} it; ${method.name}'s own: ${ownFlags(method)})`);
}

/**
 * The named parameters given on the command line for `method`. A per-model parameter of a base
 * + models method takes one value (for every model) or a comma list of one per model, as
 * `--weights`. A flag of a parameter the method lacks is an error naming the flag and the
 * method's own flags (a typo in a method name must not silently drop a parameter).
 */
export function namedParamArgs(args: ParsedArgs, method: MergeMethod, models = 0, methods: readonly MergeMethod[] = METHODS): NamedParamArgs {
  const out: NamedParamArgs = { values: {}, perModel: {}, weights: {}, blocks: {} };
  for (const p of namedParams(methods)) {
    const own = method.params.find((q) => q.name === p.name);
    const perKey = listArg(args, p.weightFlag);
    if (perKey.length) {
      if (!own) throw lacking(p.weightFlag, p, method);
      out.weights[p.name] = perKey.map((text) => {
        const w = keyValueArg(`--${p.weightFlag}`, text);
        checkParamValue(method, p.name, w.value, `--${p.weightFlag} ${JSON.stringify(text)}: ${p.name}`);
        return w;
      });
    }
    const perBlock = stringArg(args, p.blocksFlag);
    if (perBlock !== undefined) {
      if (!own) throw lacking(p.blocksFlag, p, method);
      if (perBlock.trim() === "") throw new MergeError("INVALID_ARGUMENT", `--${p.blocksFlag} is empty: give a value per block or a preset, as --blocks`);
      out.blocks[p.name] = perBlock;
    }
    const value = stringArg(args, p.flag);
    if (value === undefined) continue;
    if (!own) throw lacking(p.flag, p, method);
    if (value.includes(",")) {
      if (!(method.many && own.perModel)) throw new MergeError("INVALID_ARGUMENT", `--${p.flag} ${JSON.stringify(value)}: one number; ${method.name}'s ${p.name} is ${method.many ? "the row's, not each model's" : "one value"}`);
      const list = value.split(",").map((t) => numberArg(`--${p.flag}`, t.trim()));
      if (list.length !== models) throw new MergeError("INVALID_ARGUMENT", `--${p.flag} ${JSON.stringify(value)}: ${list.length} values for ${models} model${models === 1 ? "" : "s"} (one for all, or one per --models entry, in order)`);
      out.perModel[p.name] = list;
    } else out.values[p.name] = numberArg(`--${p.flag}`, value);
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
