/** Checks of user-supplied options, with messages that name the parameter (sharp's `is.ts` style). */
import { MergeError } from "./errors";

export function invalid(name: string, expected: string, actual: unknown): MergeError {
  const shown = typeof actual === "string" ? JSON.stringify(actual)
    : Array.isArray(actual) ? "an array"
    : typeof actual === "function" ? "a function"
    : typeof actual === "object" && actual !== null ? "an object"
    : String(actual);
  return new MergeError("INVALID_ARGUMENT", `Expected ${expected} for ${name} but received ${shown} of type ${typeof actual}`);
}

export function requireString(name: string, value: unknown): string {
  if (value === undefined) throw new MergeError("INVALID_ARGUMENT", `${name} is required (a non-empty string)`);
  if (typeof value !== "string" || value.length === 0) throw invalid(name, "a non-empty string", value);
  return value;
}

export function optionalString(name: string, value: unknown): string | undefined {
  return value === undefined ? undefined : requireString(name, value);
}

export function optionalBoolean(name: string, value: unknown): boolean | undefined {
  if (value !== undefined && typeof value !== "boolean") throw invalid(name, "true or false", value);
  return value;
}

/** A callback option: checked up front, so a wrong type fails before any work, not at the first event. */
export function optionalFunction<T extends (...args: never[]) => unknown>(name: string, value: unknown): T | undefined {
  if (value !== undefined && typeof value !== "function") throw invalid(name, "a function", value);
  return value as T | undefined;
}

/** An AbortSignal (or one from another realm: anything with `aborted` and `addEventListener`). */
export function optionalSignal(name: string, value: unknown): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value;
  const v = value as { aborted?: unknown; addEventListener?: unknown } | null;
  if (typeof v === "object" && v !== null && typeof v.aborted === "boolean" && typeof v.addEventListener === "function") return value as AbortSignal;
  throw invalid(name, "an AbortSignal", value);
}

/** A list of non-empty strings; `orOne` also takes a single string. */
export function optionalStringList(name: string, value: unknown, orOne = false): string[] | undefined {
  if (value === undefined) return undefined;
  if (orOne && typeof value === "string") return [requireString(name, value)];
  if (!Array.isArray(value)) throw invalid(name, orOne ? "a string or an array of strings" : "an array of strings", value);
  return value.map((v, i) => requireString(`${name}[${i}]`, v));
}

/**
 * A string-to-string map (safetensors `__metadata__` holds only strings: a number or an object
 * there makes a file that readers refuse). Own keys only, read as data.
 */
export function optionalStringRecord(name: string, value: unknown): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value) || (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null)) {
    throw invalid(name, "an object of strings", value);
  }
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") throw invalid(`${name}[${JSON.stringify(k)}]`, "a string", v);
  }
  return value as Record<string, string>;
}

export function requireNumberInRange(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) throw invalid(name, `a number between ${min} and ${max}`, value);
  return value;
}

export function requireInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) throw invalid(name, `an integer between ${min} and ${max}`, value);
  return value;
}

export function requireOneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) throw invalid(name, `one of ${allowed.join(", ")}`, value);
  return value as T;
}

/** Options objects: catch misspelled keys (better-sqlite3 catches `readOnly` the same way). */
export function rejectUnknownKeys(name: string, value: object, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new MergeError("INVALID_ARGUMENT", `Unknown option ${name}.${key} (known: ${known.join(", ")})`);
  }
}

/**
 * Parses a multiplier list: "0.3", "0.1,0.2,0.25" or a range "start:stop:step" (stop included
 * when it falls on a step). Values are rounded to 10 decimals so 0.1 + 2 × 0.1 is 0.3.
 */
/** The most values one sweep (a merge, or one recipe row) may have: planning is sized for this. */
export const MAX_SWEEP_VALUES = 10_001;

/** Refuses a sweep of more than MAX_SWEEP_VALUES values, however they were given (ranges, lists). */
export function checkSweepSize(count: number, what: string): void {
  if (count > MAX_SWEEP_VALUES) {
    throw new MergeError("INVALID_ARGUMENT", `${what} has ${count.toLocaleString("en-US")} values; a sweep has at most ${MAX_SWEEP_VALUES.toLocaleString("en-US")}`);
  }
}

export function parseMultipliers(text: string): number[] {
  const values: number[] = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const range = part.split(":");
    if (range.length === 1) {
      values.push(parseNumber(part, text));
      continue;
    }
    if (range.length !== 3) throw new MergeError("INVALID_ARGUMENT", `multiplier range "${part}" must be start:stop:step`);
    const [start, stop, step] = range.map((r) => parseNumber(r, text)) as [number, number, number];
    if (!(step > 0)) throw new MergeError("INVALID_ARGUMENT", `multiplier range "${part}" needs a positive step`);
    const count = Math.floor((stop - start) / step + 1e-9);
    if (count < 0) throw new MergeError("INVALID_ARGUMENT", `multiplier range "${part}" is empty (stop is below start)`);
    // Several ranges add up: the limit is on the whole sweep, checked before any value is built.
    checkSweepSize(values.length + count + 1, `multiplier "${text.length > 60 ? `${text.slice(0, 57)}...` : text}"`);
    for (let i = 0; i <= count; i++) values.push(Math.round((start + i * step) * 1e10) / 1e10);
  }
  checkSweepSize(values.length, `multiplier "${text.length > 60 ? `${text.slice(0, 57)}...` : text}"`);
  if (values.length === 0) throw new MergeError("INVALID_ARGUMENT", `no multiplier in "${text}"`);
  return values;
}

function parseNumber(s: string, whole: string): number {
  const v = Number(s);
  if (s.trim() === "" || !Number.isFinite(v)) throw new MergeError("INVALID_ARGUMENT", `"${s}" in multiplier "${whole}" is not a number`);
  return v;
}

/** The shortest decimal text of a multiplier, for file names: 0.1 → "0.1", 0.144 → "0.144". */
export function formatMultiplier(m: number): string {
  return String(Math.round(m * 1e10) / 1e10);
}
