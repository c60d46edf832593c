/** Checks of user-supplied options, with messages that name the parameter (sharp's `is.ts` style). */
import { MergeError } from "./errors";

export function invalid(name: string, expected: string, actual: unknown): MergeError {
  const shown = typeof actual === "string" ? JSON.stringify(actual) : String(actual);
  return new MergeError("INVALID_ARGUMENT", `Expected ${expected} for ${name} but received ${shown} of type ${typeof actual}`);
}

export function requireString(name: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0) throw invalid(name, "a non-empty string", value);
  return value;
}

export function optionalString(name: string, value: unknown): string | undefined {
  return value === undefined ? undefined : requireString(name, value);
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
    if (count < 0 || count > 10_000) throw new MergeError("INVALID_ARGUMENT", `multiplier range "${part}" is empty or too long`);
    for (let i = 0; i <= count; i++) values.push(Math.round((start + i * step) * 1e10) / 1e10);
  }
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
