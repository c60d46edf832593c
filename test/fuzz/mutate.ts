/**
 * Deterministic mutators for the TS parser fuzzers: byte-level edits (bit flips, boundary
 * words, pickle opcodes, inserted, duplicated, deleted and truncated chunks) and, for
 * safetensors, edits of the JSON header with tokens that reach its checks (keys, dtypes,
 * unsafe integers, prototype names) while the 8-byte length stays consistent most of the time.
 * Every choice comes from the seeded generator passed in: a (seed, iteration) pair replays.
 */
import { OP } from "../../lib/formats/ckpt/pickle-writer";

export type Random = () => number;

const OPCODES = Object.values(OP);
const INTERESTING32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

const pickInt = (random: Random, n: number) => Math.floor(random() * n);

/** One to four byte-level edits of `input` (never in place). */
export function mutateBytes(input: Uint8Array, random: Random): Uint8Array {
  let data = Buffer.from(input);
  const pick = (n: number) => pickInt(random, n);
  const rounds = 1 + pick(4);
  for (let r = 0; r < rounds && data.length > 0; r++) {
    const at = pick(data.length);
    switch (pick(8)) {
      case 0: data[at]! ^= 1 << pick(8); break;
      case 1: data[at] = [0, 0xff, 0x7f, 0x80, pick(256)][pick(5)]!; break;
      case 2: if (at + 4 <= data.length) data.writeUInt32LE(INTERESTING32[pick(INTERESTING32.length)]!, at); break;
      case 3: data[at] = OPCODES[pick(OPCODES.length)]!; break;
      case 4: { // insert random bytes
        const ins = Buffer.from(Array.from({ length: 1 + pick(8) }, () => pick(256)));
        data = Buffer.concat([data.subarray(0, at), ins, data.subarray(at)]);
        break;
      }
      case 5: { // duplicate a chunk
        const len = 1 + pick(Math.min(64, data.length - at));
        data = Buffer.concat([data.subarray(0, at + len), data.subarray(at, at + len), data.subarray(at + len)]);
        break;
      }
      case 6: { // delete a chunk
        const len = 1 + pick(Math.min(32, data.length - at));
        data = Buffer.concat([data.subarray(0, at), data.subarray(at + len)]);
        break;
      }
      default: data = data.subarray(0, at); // truncate
    }
  }
  return data;
}

/** Tokens of the safetensors header grammar and values at its limits. */
const JSON_TOKENS = [
  '"__metadata__"', '"__proto__"', '"constructor"', '"prototype"', '"toString"', '"hasOwnProperty"',
  '"dtype"', '"shape"', '"data_offsets"', '"F16"', '"BF16"', '"F32"', '"F64"', '"I64"', '"U8"', '"BOOL"', '"F8_E4M3"', '"X"',
  "0", "1", "-1", "2", "4", "1.5", "1e3", "-0", "9007199254740991", "9007199254740992", "9007199254740993", "1e308", "4294967296",
  "[", "]", "{", "}", ",", ":", "null", "true", "[]", "{}", '""', '"\\u0000"', '"\\ud800"', '"é"', " ",
];

/** JSON text edits: replace a token-sized span, insert a token, or swap two spans. */
function mutateJson(text: string, random: Random): string {
  const pick = (n: number) => pickInt(random, n);
  let s = text;
  const rounds = 1 + pick(3);
  for (let r = 0; r < rounds; r++) {
    const at = pick(s.length + 1);
    const token = JSON_TOKENS[pick(JSON_TOKENS.length)]!;
    switch (pick(4)) {
      case 0: s = s.slice(0, at) + token + s.slice(at); break;
      case 1: { // replace the JSON value or string around `at` (up to the next delimiter)
        const end = s.slice(at).search(/[,:\]}]/);
        s = s.slice(0, at) + token + s.slice(end < 0 ? s.length : at + end);
        break;
      }
      case 2: { // copy a span elsewhere (duplicate keys, nested entries)
        const len = 1 + pick(Math.min(48, s.length - at + 1));
        const to = pick(s.length + 1);
        s = s.slice(0, to) + s.slice(at, at + len) + s.slice(to);
        break;
      }
      default: { // replace a quoted key with a prototype name
        const quote = s.indexOf('"', at);
        const close = quote < 0 ? -1 : s.indexOf('"', quote + 1);
        if (close > quote) s = s.slice(0, quote) + ['"__proto__"', '"constructor"', '"__metadata__"', '"toString"'][pick(4)] + s.slice(close + 1);
      }
    }
  }
  return s;
}

/**
 * A mutated safetensors file: the JSON header edited as text (or as bytes), the tensor data
 * shortened or extended, and the length prefix rewritten to match the new header 7 times in 8.
 */
export function mutateSafetensors(file: Uint8Array, random: Random): Uint8Array {
  const pick = (n: number) => pickInt(random, n);
  const buf = Buffer.from(file);
  if (buf.length < 8 || pick(16) === 0) return mutateBytes(buf, random);
  const n = Number(buf.readBigUInt64LE(0));
  if (n > buf.length - 8) return mutateBytes(buf, random);
  let header: Buffer = buf.subarray(8, 8 + n);
  let data: Buffer = buf.subarray(8 + n);
  header = pick(4) === 0 ? Buffer.from(mutateBytes(header, random)) : Buffer.from(mutateJson(header.toString("utf8"), random), "utf8");
  switch (pick(6)) {
    case 0: data = data.subarray(0, pick(data.length + 1)); break;
    case 1: data = Buffer.concat([data, Buffer.alloc(1 + pick(16))]); break;
    default: break;
  }
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(pick(8) === 0 ? BigInt(n) : BigInt(header.length));
  return Buffer.concat([prefix, header, data]);
}
