/**
 * A tiny pickle writer: the protocol-2 opcodes torch.save emits for a state dict, which are
 * exactly the ones torch's `weights_only=True` unpickler accepts. Also used by the tests to
 * build hostile pickles opcode by opcode.
 */

export const OP = {
  MARK: 0x28, STOP: 0x2e, POP: 0x30, DUP: 0x32, INT: 0x49, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d,
  LONG: 0x4c, FLOAT: 0x46, NONE: 0x4e, PERSID: 0x50, BINPERSID: 0x51, REDUCE: 0x52, STRING: 0x53, BINSTRING: 0x54,
  SHORT_BINSTRING: 0x55, UNICODE: 0x56, BINUNICODE: 0x58, APPEND: 0x61, BUILD: 0x62, GLOBAL: 0x63,
  DICT: 0x64, EMPTY_DICT: 0x7d, APPENDS: 0x65, GET: 0x67, BINGET: 0x68, INST: 0x69, LONG_BINGET: 0x6a,
  LIST: 0x6c, EMPTY_LIST: 0x5d, OBJ: 0x6f, PUT: 0x70, BINPUT: 0x71, LONG_BINPUT: 0x72, SETITEM: 0x73,
  TUPLE: 0x74, EMPTY_TUPLE: 0x29, SETITEMS: 0x75, BINFLOAT: 0x47, PROTO: 0x80, NEWOBJ: 0x81,
  EXT1: 0x82, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87, NEWTRUE: 0x88, NEWFALSE: 0x89, LONG1: 0x8a,
  LONG4: 0x8b, BINBYTES: 0x42, SHORT_BINBYTES: 0x43, SHORT_BINUNICODE: 0x8c, BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e, EMPTY_SET: 0x8f, ADDITEMS: 0x90, FROZENSET: 0x91, NEWOBJ_EX: 0x92,
  STACK_GLOBAL: 0x93, MEMOIZE: 0x94, FRAME: 0x95, BYTEARRAY8: 0x96, NEXT_BUFFER: 0x97,
} as const;

export class PickleWriter {
  private buf = Buffer.alloc(4096);
  private len = 0;
  private readonly memo = new Map<string, number>();

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  /** Raw bytes (opcodes and their arguments). */
  raw(...bytes: (number | Uint8Array)[]): this {
    for (const b of bytes) {
      if (typeof b === "number") {
        this.ensure(1);
        this.buf[this.len++] = b;
      } else {
        this.ensure(b.length);
        this.buf.set(b, this.len);
        this.len += b.length;
      }
    }
    return this;
  }

  op(code: number): this {
    return this.raw(code);
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.len);
    this.len += 4;
    return this;
  }

  proto(version = 2): this {
    return this.raw(OP.PROTO, version);
  }

  /** GLOBAL "module\nname\n", memoized so later uses are a BINGET, as Python's pickler does. */
  global(module: string, name: string): this {
    return this.memoized(`g:${module}.${name}`, () => this.raw(OP.GLOBAL, Buffer.from(`${module}\n${name}\n`, "utf8")));
  }

  /** BINUNICODE (memoize for strings that repeat, such as "storage" and "cpu"). */
  str(s: string, memoize = false): this {
    const emit = () => {
      const b = Buffer.from(s, "utf8");
      this.raw(OP.BINUNICODE).u32(b.length).raw(b);
    };
    if (memoize) return this.memoized(`s:${s}`, emit);
    emit();
    return this;
  }

  int(v: number | bigint): this {
    if (typeof v === "number" && Number.isInteger(v)) {
      if (v >= 0 && v < 256) return this.raw(OP.BININT1, v);
      if (v >= 0 && v < 65536) return this.raw(OP.BININT2, v & 0xff, v >>> 8);
      if (v >= -0x80000000 && v < 0x80000000) {
        this.raw(OP.BININT);
        this.ensure(4);
        this.buf.writeInt32LE(v, this.len);
        this.len += 4;
        return this;
      }
    }
    // LONG1: minimal little-endian two's complement.
    let x = BigInt(v);
    const out: number[] = [];
    for (;;) {
      const byte = Number(x & 0xffn);
      out.push(byte);
      x >>= 8n;
      if ((x === 0n && (byte & 0x80) === 0) || (x === -1n && (byte & 0x80) !== 0)) break;
    }
    return this.raw(OP.LONG1, out.length, Uint8Array.from(out));
  }

  bool(v: boolean): this {
    return this.raw(v ? OP.NEWTRUE : OP.NEWFALSE);
  }

  /** A tuple of small ints (a tensor's size or stride). */
  intTuple(values: readonly number[]): this {
    if (values.length === 0) return this.raw(OP.EMPTY_TUPLE);
    if (values.length > 3) this.raw(OP.MARK);
    for (const v of values) this.int(v);
    return this.raw(values.length === 1 ? OP.TUPLE1 : values.length === 2 ? OP.TUPLE2 : values.length === 3 ? OP.TUPLE3 : OP.TUPLE);
  }

  private memoized(key: string, emit: () => void): this {
    const index = this.memo.get(key);
    if (index !== undefined) {
      if (index < 256) return this.raw(OP.BINGET, index);
      return this.raw(OP.LONG_BINGET).u32(index);
    }
    emit();
    const next = this.memo.size;
    this.memo.set(key, next);
    if (next < 256) return this.raw(OP.BINPUT, next);
    return this.raw(OP.LONG_BINPUT).u32(next);
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}
