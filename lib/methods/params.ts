/**
 * Per-tensor parameter values. For each parameter of a row's method, a tensor's value is, in
 * order of precedence:
 *   1. the value of the first `weights` pattern that matches the key (JavaScript RegExp, searched
 *      anywhere in the key, as Python's re.search; anchor with ^ and $);
 *   2. the key's block value (`blockValue(key)`, from --blocks, --beta-blocks, --density-blocks…);
 *      a key in no block (undefined) is not merged at all: it stays A, as SuperMerger leaves
 *      such keys (the resolver returns null);
 *   3. the row's value: for α the multiplier, which a sweep varies (so overrides and block
 *      values stay fixed across a sweep), for the others `values[name]` (a base + models row:
 *      the model's own value first, lib/plan-many.ts) or the default.
 * Every parameter has the three forms under one scheme of names (perKeyOption / perBlockOption):
 *   α     --multiplier  --weight REGEX=V      --blocks VALUES       (merge(): multiplier, weights, blocks)
 *   β     --beta        --beta-weight …       --beta-blocks …       (beta, betaWeights, betaBlocks)
 *   NAME  --NAME        --NAME-weight …       --NAME-blocks …       (params, paramWeights, paramBlocks)
 * and a JSON recipe row keys all of them by parameter name: params, weights, blocks.
 * The planner calls the resolver once per tensor and hands the values to the method's kernelFor.
 */
import { MergeError } from "../errors";
import type { MergeMethod } from "./define";

export interface KeyValue {
  /** A regular expression over tensor names. */
  pattern: string;
  value: number;
}

/** How a row chooses its parameters (all optional: defaults and the multiplier otherwise). */
export interface RowParams {
  /** Row values by parameter name, except α (the row's multiplier). */
  values?: Readonly<Record<string, number>>;
  /** Per-key values by parameter name, in order: the first matching pattern wins. */
  weights?: Readonly<Record<string, readonly KeyValue[]>>;
  /**
   * Block values by parameter name: a key's value for its block, undefined/null when the key is
   * in no block, which then stays A (lib/blocks: `--blocks` → alpha, `--beta-blocks` → beta).
   */
  blockValue?: Readonly<Record<string, (key: string) => number | null | undefined>>;
  /**
   * The parsed block values behind `blockValue`, by parameter name, so that a value out of the
   * parameter's range is refused before any tensor is planned; `what` names the setting.
   */
  blockValues?: Readonly<Record<string, BlockValueList>>;
}

export interface BlockValueList {
  /** How messages name the setting ("--density-blocks", "row 2 (mix): block values for beta"). */
  what: string;
  /** Block names, in the map's order. */
  names: readonly string[];
  values: readonly number[];
}

/** "drop_rate", "dropRate", "drop-rate" → "drop-rate": a parameter's name as a flag. */
export function paramFlag(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/_/g, "-").toLowerCase();
}

/** The flag that sets a parameter per key: --weight (α), --beta-weight, --density-weight… */
export function perKeyOption(name: string): string {
  return name === "alpha" ? "--weight" : `--${paramFlag(name)}-weight`;
}

/** The flag that sets a parameter per block: --blocks (α), --beta-blocks, --density-blocks… */
export function perBlockOption(name: string): string {
  return name === "alpha" ? "--blocks" : `--${paramFlag(name)}-blocks`;
}

function invalid(where: string, message: string): MergeError {
  return new MergeError("INVALID_ARGUMENT", `${where}${message}`);
}

/** A value of parameter `name` of `method`: finite, in its range, whole where it must be; `what` names it. */
export function checkParamValue(method: MergeMethod, name: string, value: unknown, what: string): number {
  return checkValue(method, name, value, "", what);
}

function checkValue(method: MergeMethod, name: string, value: unknown, where: string, what: string): number {
  const p = method.params.find((q) => q.name === name)!;
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalid(where, `${what} must be a finite number, got ${JSON.stringify(value)}`);
  if (value < p.range[0] || value > p.range[1]) throw invalid(where, `${what} = ${value} is outside ${method.name}'s range for ${name} [${p.range[0]}, ${p.range[1]}]`);
  if (p.integer && !Number.isInteger(value)) throw invalid(where, `${what} must be a whole number, got ${value}`);
  return value;
}

/** Refuses a parameter name `method` lacks, naming the setting (`what`) and the method's parameters. */
export function checkParamName(method: MergeMethod, name: string, what: string): void {
  knownParam(method, name, "", what);
}

function knownParam(method: MergeMethod, name: string, where: string, what: string): void {
  if (method.params.some((p) => p.name === name)) return;
  const list = method.params.length ? `its parameters are ${method.params.map((p) => p.name).join(", ")}` : "it has no parameters";
  throw invalid(where, `${what}: ${method.name} has no parameter "${name}" (${list})`);
}

/** Checks names, ranges and patterns before anything is opened; `where` prefixes messages. */
export function checkRowParams(method: MergeMethod, params: RowParams | undefined, where = ""): void {
  if (!params) return;
  for (const [name, value] of Object.entries(params.values ?? {})) {
    if (name === "alpha") throw invalid(where, `alpha is the multiplier: set it there`);
    knownParam(method, name, where, name);
    checkValue(method, name, value, where, name);
  }
  for (const [name, list] of Object.entries(params.weights ?? {})) {
    knownParam(method, name, where, `per-key ${name}`);
    if (!Array.isArray(list)) throw invalid(where, `per-key ${name} must be a list of {pattern, value}`);
    list.forEach((w, i) => {
      const what = `per-key ${name}[${i}]`;
      if (typeof w?.pattern !== "string" || w.pattern === "") throw invalid(where, `${what}: the pattern must be a non-empty string`);
      try {
        new RegExp(w.pattern);
      } catch (e) {
        throw invalid(where, `${what}: "${w.pattern}" is not a valid regular expression (${(e as Error).message})`);
      }
      checkValue(method, name, w.value, where, `${what} (${w.pattern})`);
    });
  }
  for (const name of Object.keys(params.blockValue ?? {})) knownParam(method, name, where, `block values for ${name}`);
  for (const [name, list] of Object.entries(params.blockValues ?? {})) {
    knownParam(method, name, where, list.what);
    list.values.forEach((v, i) => checkValue(method, name, v, where, `${list.what}: ${list.names[i]}`));
  }
}

/** The value of every parameter of `method` for each key: `resolve(key, alpha)`. */
export function paramResolver(method: MergeMethod, params: RowParams | undefined): (key: string, alpha: number) => number[] | null {
  const compiled = method.params.map((p) => ({
    name: p.name,
    base: p.name === "alpha" ? undefined : params?.values?.[p.name] ?? p.default,
    patterns: (params?.weights?.[p.name] ?? []).map((w) => ({ re: new RegExp(w.pattern), value: w.value })),
    block: params?.blockValue?.[p.name],
  }));
  return (key, alpha) => {
    const values: number[] = [];
    for (const p of compiled) {
      const w = p.patterns.find((q) => q.re.test(key));
      if (w) {
        values.push(w.value);
        continue;
      }
      if (p.block) {
        const b = p.block(key);
        if (b === undefined || b === null) return null; // in no block: the key stays A
        values.push(checkValue(method, p.name, b, `${key}: `, `the block value of ${p.name}`));
        continue;
      }
      values.push(p.base ?? alpha);
    }
    return values;
  };
}

/** Whether a row has anything beyond its multiplier (for metadata and messages). */
export function hasRowParams(params: RowParams | undefined): boolean {
  return !!params && (Object.keys(params.values ?? {}).length > 0 || Object.values(params.weights ?? {}).some((l) => l.length > 0) || Object.keys(params.blockValue ?? {}).length > 0);
}
