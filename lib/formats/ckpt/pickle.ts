/**
 * A restricted pickle reader. It interprets the pickle stack machine (every opcode of protocols
 * 0 to 5) but builds only inert data: numbers, strings, bytes, lists, tuples, dicts, sets, and
 * the values that the caller's allowlist of globals returns. Nothing is ever imported, looked
 * up by name or called: a GLOBAL whose name is not on the allowlist stops the parse at once with
 * PICKLE_GLOBAL_REFUSED, before any REDUCE/BUILD/NEWOBJ could use it, and an allowed global is
 * only a TypeScript function that builds a description (a tensor's storage key, shape, strides).
 *
 * Resource bounds, because the input is hostile: the memo, the stack and the mark depth are
 * capped; every declared length is checked against the bytes that remain before anything is
 * allocated; big integers are capped in size. The reader never recurses over values, so a
 * deeply nested (or cyclic) structure cannot overflow the JS stack.
 */
import { MergeError, type ErrorCode } from "../../errors";

// ---- values ---------------------------------------------------------------------------------

/** A Python tuple (lists are plain arrays). */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

type DictKey = string | number | bigint | boolean | null | object;

/** A Python dict or OrderedDict; keeps insertion order like Python. */
export class PyDict {
  private readonly map = new Map<DictKey, [PyValue, PyValue]>();
  /** Instance attributes set by BUILD (an OrderedDict's `_metadata`). */
  attributes: PyValue = null;
  constructor(readonly ordered: boolean) {}
  set(key: PyValue, value: PyValue, where: () => string): void {
    const k = dictKey(key, where, 0);
    const existing = this.map.get(k);
    if (existing) existing[1] = value; // Python keeps the first position of a re-set key
    else this.map.set(k, [key, value]);
  }
  get(key: string): PyValue | undefined {
    return this.map.get(key)?.[1];
  }
  has(key: string): boolean {
    return this.map.has(key);
  }
  get size(): number {
    return this.map.size;
  }
  entries(): IterableIterator<[PyValue, PyValue]> {
    return this.map.values();
  }
}

/** A Python set or frozenset. */
export class PySet {
  readonly items: PyValue[] = [];
  constructor(readonly frozen: boolean) {}
}

/** What an allowed global does when a pickle applies it. Never runs anything. */
export interface GlobalImpl {
  /** True for classes (may be instantiated by NEWOBJ/OBJ/INST), false for functions (REDUCE only). */
  isClass: boolean;
  /** Builds the value for REDUCE (function or class call) and class instantiation. */
  call(args: PyValue[], where: () => string): PyValue;
  /** Instances are recorded as opaque PyObjects (`call` is not used). */
  opaque?: boolean;
}

/** An allowed global, as pushed by GLOBAL / STACK_GLOBAL. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string, readonly impl: GlobalImpl) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** An instance of an allowed but opaque class (recorded, never interpreted). */
export class PyObject {
  state: PyValue = null;
  constructor(readonly cls: PyGlobal, readonly args: PyValue[]) {}
}

/** Base class for the values a caller's globals and persistent ids produce (storages, tensors). */
export abstract class PyExternal {
  abstract readonly pyType: string;
}

export type PyValue =
  | null | boolean | number | bigint | string | Uint8Array
  | PyValue[] | PyTuple | PyDict | PySet | PyGlobal | PyObject | PyExternal;

/** A short description of a value's type, for messages (never recursive). */
export function pyTypeName(v: PyValue | undefined): string {
  if (v === undefined) return "nothing";
  if (v === null) return "None";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "bigint") return "int";
  if (typeof v === "string") return "str";
  if (v instanceof Uint8Array) return "bytes";
  if (Array.isArray(v)) return "list";
  if (v instanceof PyTuple) return "tuple";
  if (v instanceof PyDict) return v.ordered ? "OrderedDict" : "dict";
  if (v instanceof PySet) return v.frozen ? "frozenset" : "set";
  if (v instanceof PyGlobal) return v.qualifiedName;
  if (v instanceof PyObject) return `${v.cls.qualifiedName} instance`;
  return v.pyType;
}

/** Python hash-equality for the key types a checkpoint uses; tuples compare by value. */
function dictKey(v: PyValue, where: () => string, depth: number): DictKey {
  if (typeof v === "boolean") return v ? 1 : 0; // True == 1 in Python
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) && BigInt(Number(v)) === v ? Number(v) : `\0i${v}`;
  if (v === null || typeof v === "string" || typeof v === "number") return v;
  if (v instanceof Uint8Array) return `\0b${Buffer.from(v).toString("hex")}`;
  if (v instanceof PyTuple) {
    if (depth > 32) throw pickleError("PICKLE_INVALID", `${where()}: dict key tuple nested too deeply`);
    const parts = v.items.map((x) => {
      const k = dictKey(x, where, depth + 1);
      return typeof k === "object" && k !== null ? `\0o${objectId(k)}` : `${typeof k}:${String(k)}`;
    });
    return `\0t(${parts.join(",")})`;
  }
  if (v instanceof PyGlobal || v instanceof PyObject || v instanceof PyExternal) return v; // identity hash
  throw pickleError("PICKLE_INVALID", `${where()}: unhashable dict key of type ${pyTypeName(v)}`);
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;
function objectId(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, (id = nextObjectId++));
  return id;
}

// ---- errors ---------------------------------------------------------------------------------

/** Raised when the pickle ends early; callers that read a stream in pieces may retry with more. */
export class PickleTruncatedError extends MergeError {
  readonly truncated = true;
}

function pickleError(code: ErrorCode, message: string, path?: string): MergeError {
  return new MergeError(code, message, path === undefined ? {} : { path });
}

// ---- the machine ----------------------------------------------------------------------------

export interface PickleLimits {
  /** Most memo entries. */
  maxMemo: number;
  /** Most values on the stack, all mark levels together. */
  maxStack: number;
  /** Deepest MARK nesting. */
  maxMarkDepth: number;
  /** Largest LONG1/LONG4/LONG integer, in bytes. */
  maxLongBytes: number;
}

export const DEFAULT_PICKLE_LIMITS: PickleLimits = {
  maxMemo: 4_000_000,
  maxStack: 4_000_000,
  maxMarkDepth: 256,
  maxLongBytes: 64,
};

export interface UnpickleHooks {
  /** The implementation of an allowed global, or undefined to refuse it. */
  findGlobal(module: string, name: string): GlobalImpl | undefined;
  /** Resolves a persistent id (torch storages); undefined means none are allowed. */
  persistentLoad?(pid: PyValue, where: () => string): PyValue;
}

export interface UnpickleOptions {
  /** Context for messages, such as "model.ckpt: archive/data.pkl". */
  where: string;
  /** File path for MergeError.path. */
  path?: string;
  /** Byte offset to start at (legacy files hold several pickles back to back). */
  start?: number;
  limits?: Partial<PickleLimits>;
}

export interface UnpickleResult {
  value: PyValue;
  /** Offset just after the STOP opcode. */
  end: number;
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Runs a pickle through the restricted machine. Throws MergeError on anything unexpected. */
export function unpickle(data: Uint8Array, hooks: UnpickleHooks, options: UnpickleOptions): UnpickleResult {
  try {
    return run(data, hooks, options);
  } catch (e) {
    // Errors raised by the caller's globals and persistent ids do not know the file: add it.
    if (e instanceof MergeError && e.path === undefined && options.path !== undefined) {
      throw new MergeError(e.code, e.message, { path: options.path, ...(e.tensor !== undefined ? { tensor: e.tensor } : {}), cause: e });
    }
    throw e;
  }
}

function run(data: Uint8Array, hooks: UnpickleHooks, options: UnpickleOptions): UnpickleResult {
  const limits = { ...DEFAULT_PICKLE_LIMITS, ...options.limits };
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = options.start ?? 0;
  let opStart = pos;
  let stack: PyValue[] = [];
  const metastack: PyValue[][] = [];
  let metastackItems = 0;
  const memo = new Map<number, PyValue>();
  const where = () => `${options.where} (byte ${opStart})`;
  const fail = (message: string, code: ErrorCode = "PICKLE_INVALID"): never => {
    throw pickleError(code, `${where()}: ${message}`, options.path);
  };
  const truncated = (): never => {
    throw new PickleTruncatedError("PICKLE_INVALID", `${where()}: the pickle ends in the middle of an opcode`, options.path === undefined ? {} : { path: options.path });
  };

  const need = (n: number): number => {
    if (!Number.isSafeInteger(n) || n < 0 || pos + n > data.length) truncated();
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = () => data[need(1)]!;
  const u16 = () => dv.getUint16(need(2), true);
  const u32 = () => dv.getUint32(need(4), true);
  const i32 = () => dv.getInt32(need(4), true);
  const u64 = (): number => {
    const v = dv.getBigUint64(need(8), true);
    if (v > BigInt(data.length)) truncated(); // cannot be satisfied by the bytes that exist
    return Number(v);
  };
  const bytes = (n: number) => {
    const at = need(n);
    return data.subarray(at, at + n);
  };
  const line = (): string => {
    const nl = data.indexOf(0x0a, pos);
    if (nl < 0) truncated();
    const text = latin1.decode(data.subarray(pos, nl));
    pos = nl + 1;
    return text;
  };
  const decodeUtf8 = (b: Uint8Array, what: string): string => {
    try {
      return utf8.decode(b);
    } catch {
      return fail(`${what} is not valid UTF-8`);
    }
  };

  const push = (v: PyValue) => {
    if (stack.length + metastackItems >= limits.maxStack) fail(`more than ${limits.maxStack} values on the stack`);
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length === 0) fail("stack underflow");
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail("stack underflow");
    return stack[stack.length - 1]!;
  };
  const popMark = (): PyValue[] => {
    const items = stack;
    const prev = metastack.pop();
    if (prev === undefined) return fail("no MARK to pop to");
    metastackItems -= prev.length;
    stack = prev;
    return items;
  };
  const memoPut = (index: number) => {
    if (!Number.isSafeInteger(index) || index < 0) fail(`invalid memo index ${index}`);
    if (!memo.has(index) && memo.size >= limits.maxMemo) fail(`more than ${limits.maxMemo} memo entries`);
    memo.set(index, top());
  };
  const memoGet = (index: number) => {
    const v = memo.get(index);
    if (v === undefined) fail(`memo entry ${index} read before it was written`);
    push(v!);
  };
  const toInt = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const decodeLong = (b: Uint8Array): number | bigint => {
    if (b.length > limits.maxLongBytes) fail(`integer of ${b.length} bytes exceeds the ${limits.maxLongBytes}-byte limit`);
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return toInt(v);
  };
  const parseIntText = (text: string, what: string): number | bigint => {
    const t = text.endsWith("L") ? text.slice(0, -1) : text;
    if (!/^[+-]?\d+$/.test(t)) fail(`${what} ${JSON.stringify(text.slice(0, 40))} is not an integer`);
    if (t.length > limits.maxLongBytes * 3) fail(`${what} has too many digits`);
    return toInt(BigInt(t));
  };
  const resolveGlobal = (module: string, name: string): PyGlobal => {
    const impl = hooks.findGlobal(module, name);
    if (!impl) {
      throw pickleError("PICKLE_GLOBAL_REFUSED", `${where()}: refused global ${module}.${name} (only tensor and state-dict globals are allowed; nothing was executed)`, options.path);
    }
    return new PyGlobal(module, name, impl);
  };
  const callGlobal = (callable: PyValue, args: PyValue[], how: string): PyValue => {
    if (!(callable instanceof PyGlobal)) return fail(`${how} applied to a ${pyTypeName(callable)}, not an allowed global`);
    if (how !== "REDUCE" && !callable.impl.isClass) fail(`${how} on ${callable.qualifiedName}, which is not a class`);
    if (callable.impl.opaque) return new PyObject(callable, args);
    return callable.impl.call(args, where);
  };
  const tupleArgs = (v: PyValue, how: string): PyValue[] => {
    if (!(v instanceof PyTuple)) return fail(`${how} arguments must be a tuple, got ${pyTypeName(v)}`);
    return v.items;
  };
  const build = (inst: PyValue, state: PyValue) => {
    if (inst instanceof PyDict) {
      // OrderedDict.__reduce__ carries instance attributes (torch's `_metadata`) as BUILD state.
      if (!(state instanceof PyDict) && !(state instanceof PyTuple)) fail(`BUILD state for a dict must be a dict, got ${pyTypeName(state)}`);
      inst.attributes = state;
    } else if (inst instanceof PyObject) {
      inst.state = state;
    } else if (inst instanceof PyExternal) {
      // A tensor's Python attributes (torch writes them for subclasses): recorded nowhere.
    } else {
      fail(`BUILD on a ${pyTypeName(inst)} is not allowed`);
    }
  };
  const mark = () => {
    if (metastack.length >= limits.maxMarkDepth) fail(`MARK nesting deeper than ${limits.maxMarkDepth}`);
    metastack.push(stack);
    metastackItems += stack.length;
    stack = [];
  };

  for (;;) {
    opStart = pos;
    const op = u8();
    switch (op) {
      case 0x28: mark(); break; // MARK
      case 0x2e: { // STOP
        const value = pop();
        return { value, end: pos };
      }
      case 0x30: if (stack.length > 0) stack.pop(); else popMark(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      case 0x46: { // FLOAT
        const t = line().trim();
        if (!/^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan|infinity)$/i.test(t)) fail(`FLOAT ${JSON.stringify(t.slice(0, 40))} is not a number`);
        const lower = t.toLowerCase().replace(/^[+]/, "");
        push(lower.endsWith("nan") ? NaN : lower.endsWith("inf") || lower.endsWith("infinity") ? (lower.startsWith("-") ? -Infinity : Infinity) : Number(t));
        break;
      }
      case 0x49: { // INT (protocol 0; "00"/"01" are False/True)
        const t = line();
        if (t === "00") push(false);
        else if (t === "01") push(true);
        else push(parseIntText(t, "INT"));
        break;
      }
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4c: push(parseIntText(line(), "LONG")); break; // LONG
      case 0x4d: push(u16()); break; // BININT2
      case 0x4e: push(null); break; // NONE
      case 0x50: { // PERSID (text persistent id)
        if (!hooks.persistentLoad) fail("persistent ids are not allowed here");
        push(hooks.persistentLoad!(line(), where));
        break;
      }
      case 0x51: { // BINPERSID
        if (!hooks.persistentLoad) fail("persistent ids are not allowed here");
        const pid = pop();
        push(hooks.persistentLoad!(pid, where));
        break;
      }
      case 0x52: { // REDUCE
        const args = tupleArgs(pop(), "REDUCE");
        const callable = pop();
        push(callGlobal(callable, args, "REDUCE"));
        break;
      }
      case 0x53: push(decodeUtf8(escapeDecode(quoted(line(), fail), fail), "STRING")); break; // STRING
      case 0x54: { // BINSTRING
        const n = i32();
        if (n < 0) fail("BINSTRING with a negative length");
        push(decodeUtf8(bytes(n), "BINSTRING"));
        break;
      }
      case 0x55: push(decodeUtf8(bytes(u8()), "SHORT_BINSTRING")); break; // SHORT_BINSTRING
      case 0x56: push(rawUnicodeEscape(line(), fail)); break; // UNICODE
      case 0x58: push(decodeUtf8(bytes(u32()), "BINUNICODE")); break; // BINUNICODE
      case 0x61: { // APPEND
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) fail(`APPEND to a ${pyTypeName(list)}`);
        (list as PyValue[]).push(v);
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        build(top(), state);
        break;
      }
      case 0x63: { // GLOBAL
        const module = line();
        const name = line();
        push(resolveGlobal(module, name));
        break;
      }
      case 0x64: { // DICT
        const items = popMark();
        push(dictFrom(items, where, fail));
        break;
      }
      case 0x7d: push(new PyDict(false)); break; // EMPTY_DICT
      case 0x65: { // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail(`APPENDS to a ${pyTypeName(list)}`);
        for (const v of items) (list as PyValue[]).push(v);
        break;
      }
      case 0x67: memoGet(Number(parseIntText(line(), "GET"))); break; // GET
      case 0x68: memoGet(u8()); break; // BINGET
      case 0x6a: memoGet(u32()); break; // LONG_BINGET
      case 0x69: { // INST
        const module = line();
        const name = line();
        const cls = resolveGlobal(module, name);
        const args = popMark();
        push(callGlobal(cls, args, "INST"));
        break;
      }
      case 0x6c: push(popMark()); break; // LIST
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x6f: { // OBJ
        const items = popMark();
        if (items.length === 0) fail("OBJ without a class");
        push(callGlobal(items[0]!, items.slice(1), "OBJ"));
        break;
      }
      case 0x70: memoPut(Number(parseIntText(line(), "PUT"))); break; // PUT
      case 0x71: memoPut(u8()); break; // BINPUT
      case 0x72: memoPut(u32()); break; // LONG_BINPUT
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        const dict = top();
        if (!(dict instanceof PyDict)) fail(`SETITEM on a ${pyTypeName(dict)}`);
        (dict as PyDict).set(k, v, where);
        break;
      }
      case 0x74: push(new PyTuple(popMark())); break; // TUPLE
      case 0x29: push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x75: { // SETITEMS
        const items = popMark();
        const dict = top();
        if (!(dict instanceof PyDict)) fail(`SETITEMS on a ${pyTypeName(dict)}`);
        if (items.length % 2 !== 0) fail("SETITEMS with an odd number of items");
        for (let i = 0; i < items.length; i += 2) (dict as PyDict).set(items[i]!, items[i + 1]!, where);
        break;
      }
      case 0x47: push(dv.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) fail(`pickle protocol ${v} is newer than 5`);
        break;
      }
      case 0x81: { // NEWOBJ
        const args = tupleArgs(pop(), "NEWOBJ");
        const cls = pop();
        push(callGlobal(cls, args, "NEWOBJ"));
        break;
      }
      case 0x82: case 0x83: case 0x84: { // EXT1, EXT2, EXT4: globals by registry code
        const code = op === 0x82 ? u8() : op === 0x83 ? u16() : i32();
        fail(`refused extension-registry global (code ${code})`, "PICKLE_GLOBAL_REFUSED");
        break;
      }
      case 0x85: push(new PyTuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); push(new PyTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); push(new PyTuple([a, b, c])); break; } // TUPLE3
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x8a: push(decodeLong(bytes(u8()))); break; // LONG1
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) fail("LONG4 with a negative length");
        if (n > limits.maxLongBytes) fail(`integer of ${n} bytes exceeds the ${limits.maxLongBytes}-byte limit`);
        push(decodeLong(bytes(n)));
        break;
      }
      case 0x42: push(bytes(u32())); break; // BINBYTES
      case 0x43: push(bytes(u8())); break; // SHORT_BINBYTES
      case 0x8c: push(decodeUtf8(bytes(u8()), "SHORT_BINUNICODE")); break; // SHORT_BINUNICODE
      case 0x8d: push(decodeUtf8(bytes(u64()), "BINUNICODE8")); break; // BINUNICODE8
      case 0x8e: push(bytes(u64())); break; // BINBYTES8
      case 0x96: push(bytes(u64()).slice()); break; // BYTEARRAY8
      case 0x8f: push(new PySet(false)); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const set = top();
        if (!(set instanceof PySet) || set.frozen) fail(`ADDITEMS on a ${pyTypeName(set)}`);
        for (const v of items) (set as PySet).items.push(v);
        break;
      }
      case 0x91: { // FROZENSET
        const s = new PySet(true);
        for (const v of popMark()) s.items.push(v);
        push(s);
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop();
        const args = tupleArgs(pop(), "NEWOBJ_EX");
        const cls = pop();
        if (!(kwargs instanceof PyDict) || kwargs.size !== 0) fail("NEWOBJ_EX with keyword arguments is not supported");
        push(callGlobal(cls, args, "NEWOBJ_EX"));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") fail("STACK_GLOBAL needs two strings");
        push(resolveGlobal(module as string, name as string));
        break;
      }
      case 0x94: memoPut(memo.size); break; // MEMOIZE
      case 0x95: u64(); break; // FRAME: a framing hint, the length is only checked
      case 0x97: fail("out-of-band buffers (NEXT_BUFFER) are not supported"); break;
      case 0x98: top(); break; // READONLY_BUFFER: no-op on our inert bytes
      default:
        fail(`unknown opcode 0x${op.toString(16).padStart(2, "0")}`);
    }
  }
}

function dictFrom(items: PyValue[], where: () => string, fail: (m: string) => never): PyDict {
  if (items.length % 2 !== 0) fail("DICT with an odd number of items");
  const d = new PyDict(false);
  for (let i = 0; i < items.length; i += 2) d.set(items[i]!, items[i + 1]!, where);
  return d;
}

/** Protocol 0 STRING argument: a quoted Python literal. */
function quoted(text: string, fail: (m: string) => never): string {
  if (text.length < 2 || text[0] !== text[text.length - 1] || (text[0] !== "'" && text[0] !== '"')) fail("STRING argument is not quoted");
  return text.slice(1, -1);
}

const PY_ESCAPES = new Map<string, number>([["\\", 0x5c], ["'", 0x27], ['"', 0x22], ["a", 7], ["b", 8], ["f", 12], ["n", 10], ["r", 13], ["t", 9], ["v", 11]]);

/** Python's codecs.escape_decode for a latin-1 string; returns the bytes. */
function escapeDecode(text: string, fail: (m: string) => never): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x5c || i + 1 >= text.length) {
      if (c === 0x5c) fail("STRING ends with a lone backslash");
      out.push(c & 0xff);
      continue;
    }
    const e = text[++i]!;
    const simple = PY_ESCAPES.get(e);
    if (simple !== undefined) out.push(simple);
    else if (e === "\n") continue;
    else if (e === "x") {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) fail("invalid \\x escape in STRING");
      out.push(parseInt(hex, 16));
      i += 2;
    } else if (e >= "0" && e <= "7") {
      let j = i;
      while (j < i + 3 && j < text.length && text[j]! >= "0" && text[j]! <= "7") j++;
      out.push(parseInt(text.slice(i, j), 8) & 0xff);
      i = j - 1;
    } else {
      out.push(0x5c, e.charCodeAt(0) & 0xff);
    }
  }
  return Uint8Array.from(out);
}

/** Python's raw-unicode-escape decoding (protocol 0 UNICODE). */
function rawUnicodeEscape(text: string, fail: (m: string) => never): string {
  return text.replace(/\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})/g, (_m, hex: string) => {
    const cp = parseInt(hex.slice(1), 16);
    if (cp > 0x10ffff) fail("UNICODE escape beyond U+10FFFF");
    return String.fromCodePoint(cp);
  });
}
