/**
 * JSON as Python's `json` module reads and writes it, because the classic tool's metadata is
 * `json.dumps(...)` output and ancestors are copied from `json.loads(...)` of the inputs' own
 * metadata. To write what the classic tool would write for the same inputs we must keep what
 * JavaScript's JSON loses:
 *
 * - integers and floats are different types (`1` stays `1`, `1.0` stays `1.0`, `1e-5` becomes
 *   `1e-05`, Python's `repr`);
 * - object keys keep their order, a repeated key keeps its first position and its last value;
 * - `NaN`, `Infinity` and `-Infinity` are accepted and written as Python does;
 * - `dumps` uses Python's defaults: `", "` and `": "` separators, `ensure_ascii=True`.
 */
import { MergeError } from "../errors";

export type PyJson =
  | null
  | boolean
  | string
  | { int: string }
  | { float: number }
  | PyJson[]
  | Map<string, PyJson>;

/** A Python float (written with `repr`). */
export function pyFloat(x: number): PyJson {
  return { float: x };
}

/** A Python dict from entries, in order. */
export function pyDict(entries: [string, PyJson][]): Map<string, PyJson> {
  return new Map(entries);
}

/** Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mantissa, expText] = x.toExponential().split("e") as [string, string];
  const exp = Number(expText);
  const negative = mantissa.startsWith("-");
  const digits = mantissa.replace("-", "").replace(".", "");
  const sign = negative ? "-" : "";
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${"0".repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

function dumpString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`; // UTF-16 units: surrogate pairs as Python writes them
    else out += ch;
  }
  return `${out}"`;
}

/** `json.dumps(value)` with Python's default options. */
export function pyDumps(value: PyJson): string {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "string") return dumpString(value);
  if (Array.isArray(value)) return `[${value.map(pyDumps).join(", ")}]`;
  if (value instanceof Map) return `{${[...value].map(([k, v]) => `${dumpString(k)}: ${pyDumps(v)}`).join(", ")}}`;
  if ("int" in value) return value.int;
  return pyFloatRepr(value.float);
}

const JSON_ESCAPES = new Map<string, string>([['"', '"'], ["\\", "\\"], ["/", "/"], ["b", "\b"], ["f", "\f"], ["n", "\n"], ["r", "\r"], ["t", "\t"]]);

/** `json.loads(text)`: throws on invalid JSON. */
export function pyLoads(text: string): PyJson {
  let i = 0;
  const fail = (what: string): never => {
    throw new MergeError("METADATA_INVALID", `invalid JSON at ${i}: ${what}`);
  };
  const ws = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const literal = (word: string, v: PyJson): PyJson => {
    if (text.startsWith(word, i)) {
      i += word.length;
      return v;
    }
    return fail(`unexpected ${JSON.stringify(text[i] ?? "end")}`);
  };
  const str = (): string => {
    const start = i;
    i++; // opening quote
    let out = "";
    for (;;) {
      if (i >= text.length) return fail("unterminated string");
      const ch = text[i]!;
      if (ch === '"') {
        i++;
        return out;
      }
      if (ch === "\\") {
        const e = text[i + 1];
        const simple = e === undefined ? undefined : JSON_ESCAPES.get(e);
        if (simple !== undefined) {
          out += simple;
          i += 2;
        } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else return fail(`bad escape in string starting at ${start}`);
        continue;
      }
      if (ch.charCodeAt(0) < 0x20) return fail("control character in string");
      out += ch;
      i++;
    }
  };
  const num = (): PyJson => {
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) {
      if (text.startsWith("-Infinity", i)) return literal("-Infinity", { float: -Infinity });
      return fail("bad number");
    }
    i += m[0].length;
    if (m[1] === undefined && m[2] === undefined) return { int: BigInt(m[0]).toString() };
    return { float: Number(m[0]) };
  };
  const value = (depth: number): PyJson => {
    if (depth > 200) return fail("nested too deeply");
    ws();
    const ch = text[i];
    if (ch === "{") {
      i++;
      const map = new Map<string, PyJson>();
      ws();
      if (text[i] === "}") {
        i++;
        return map;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') return fail("expected a key");
        const k = str();
        ws();
        if (text[i] !== ":") return fail("expected ':'");
        i++;
        map.set(k, value(depth + 1));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return map; }
        return fail("expected ',' or '}'");
      }
    }
    if (ch === "[") {
      i++;
      const list: PyJson[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return list;
      }
      for (;;) {
        list.push(value(depth + 1));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return list; }
        return fail("expected ',' or ']'");
      }
    }
    if (ch === '"') return str();
    if (ch === "t") return literal("true", true);
    if (ch === "f") return literal("false", false);
    if (ch === "n") return literal("null", null);
    if (ch === "N") return literal("NaN", { float: NaN });
    if (ch === "I") return literal("Infinity", { float: Infinity });
    return num();
  };
  const v = value(0);
  ws();
  if (i !== text.length) fail("extra data");
  return v;
}

/**
 * How A1111 reads a metadata value (`read_metadata_from_safetensors`): a string that starts
 * with "{" is decoded as JSON when it parses; anything else stays the string it is.
 */
export function a1111MetadataValue(value: string | undefined): PyJson | undefined {
  if (value === undefined) return undefined;
  if (value.startsWith("{")) {
    try {
      return pyLoads(value);
    } catch {
      return value;
    }
  }
  return value;
}
