/**
 * Variable bindings: which model each `__NAME__` of a recipe stands for.
 *
 * - on the command line: `--var SD15=v1-5-pruned-emaonly` (or `--var __SD15__=…`);
 * - in a bindings file: a JSON object `{ "SD15": "models/sd15.safetensors" }`, or lines
 *   `SD15 = models/sd15.safetensors` with `#` comments.
 *
 * A value is any model reference: a path, a model name found in the model folders, or a hash.
 */
import { MergeError } from "../errors";
import { VARIABLE_NAME } from "./validate";

export type Bindings = Record<string, string>;

/** "__SD15__" → "SD15"; "SD15" stays. */
export function variableName(text: string): string {
  const t = text.trim();
  const m = /^__(.+)__$/.exec(t);
  return m ? m[1]! : t;
}

function bind(out: Bindings, rawName: string, value: string, where: string): void {
  const name = variableName(rawName);
  if (!VARIABLE_NAME.test(name)) throw new MergeError("INVALID_ARGUMENT", `${where}: "${rawName}" is not a variable name`);
  if (value.trim() === "") throw new MergeError("INVALID_ARGUMENT", `${where}: no model given for ${name}`);
  // Own properties only: "constructor" or "toString" is a variable like any other.
  if (Object.hasOwn(out, name) && out[name] !== value.trim()) throw new MergeError("INVALID_ARGUMENT", `${where}: ${name} is bound twice`);
  Object.defineProperty(out, name, { value: value.trim(), writable: true, enumerable: true, configurable: true });
}

/**
 * Parses `NAME=MODEL` arguments.
 *
 * @example
 * parseVarArgs(["SD15=sd15.safetensors", "__F222__=f222"]); // { SD15: "sd15.safetensors", F222: "f222" }
 */
export function parseVarArgs(args: readonly string[]): Bindings {
  const out: Bindings = {};
  for (const arg of args) {
    const eq = arg.indexOf("=");
    if (eq <= 0) throw new MergeError("INVALID_ARGUMENT", `--var expects NAME=MODEL, got "${arg}"`);
    bind(out, arg.slice(0, eq), arg.slice(eq + 1), `--var ${arg}`);
  }
  return out;
}

/**
 * Parses a bindings file (JSON object, or `NAME = MODEL` lines).
 *
 * @example
 * parseBindingsText('{"SD15": "sd15.safetensors"}');
 * parseBindingsText("SD15 = sd15.safetensors  # the base\n");
 */
export function parseBindingsText(text: string, source = "bindings"): Bindings {
  const out: Bindings = {};
  if (text.trim().startsWith("{")) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new MergeError("INVALID_ARGUMENT", `${source}: not valid JSON (${(e as Error).message})`);
    }
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (typeof v !== "string") throw new MergeError("INVALID_ARGUMENT", `${source}: the value of ${k} must be a string`);
      bind(out, k, v, source);
    }
    return out;
  }
  text.split(/\r?\n/).forEach((line, i) => {
    const body = line.replace(/#.*$/, "").trim();
    if (!body) return;
    const eq = body.indexOf("=");
    if (eq <= 0) throw new MergeError("INVALID_ARGUMENT", `${source} line ${i + 1}: expected NAME = MODEL`);
    bind(out, body.slice(0, eq), body.slice(eq + 1), `${source} line ${i + 1}`);
  });
  return out;
}
