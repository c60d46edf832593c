/**
 * A byte emitter for the few WebAssembly instructions the TS engine's kernels use: there is no
 * wasm toolchain to build with (and nothing may be fetched), and the kernels are small, so they
 * are written as calls on a FunctionBody and assembled here into a module that imports one
 * memory (the asm heap's WebAssembly.Memory, asm-kernels.ts) and exports its functions.
 * Encodings: the WebAssembly core specification 2.0, binary format (5.x), and its SIMD128
 * instructions (prefix 0xfd, then the opcode as an unsigned LEB128).
 */

export const I32 = 0x7f, F32 = 0x7d, F64 = 0x7c, V128 = 0x7b;
export type ValType = typeof I32 | typeof F32 | typeof F64 | typeof V128;

function uleb(v: number, out: number[]): void {
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}
function sleb(v: number, out: number[]): void {
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)) { out.push(byte); return; }
    out.push(byte | 0x80);
  }
}

/** Scalar opcodes used (spec 5.4). */
const OP = {
  block: 0x02, loop: 0x03, if: 0x04, else: 0x05, end: 0x0b, br: 0x0c, br_if: 0x0d, call: 0x10,
  "local.get": 0x20, "local.set": 0x21, "local.tee": 0x22,
  select: 0x1b,
  "i32.load": 0x28, "f32.load": 0x2a, "i32.load16_u": 0x2f, "i32.store": 0x36, "f32.store": 0x38, "i32.store16": 0x3b,
  "i32.const": 0x41, "f32.const": 0x43, "f64.const": 0x44,
  "i32.eqz": 0x45, "i32.eq": 0x46, "i32.ne": 0x47, "i32.lt_u": 0x49, "i32.gt_u": 0x4b, "i32.ge_u": 0x4f, "f32.lt": 0x5d,
  "i32.add": 0x6a, "i32.sub": 0x6b, "i32.and": 0x71, "i32.or": 0x72, "i32.shl": 0x74, "i32.shr_s": 0x75, "i32.shr_u": 0x76,
  "f32.abs": 0x8b, "f32.add": 0x92, "f32.sub": 0x93, "f32.mul": 0x94,
} as const;
/** SIMD128 opcodes used (after the 0xfd prefix). */
const SIMD = {
  "v128.load": 0x00, "v128.store": 0x0b, "v128.const": 0x0c,
  "i32x4.splat": 0x11, "f32x4.splat": 0x13, "f64x2.splat": 0x14, "i32x4.extract_lane": 0x1b,
  "i32x4.eq": 0x37, "i32x4.lt_u": 0x3a, "i32x4.ge_u": 0x40, "f32x4.lt": 0x43,
  "v128.and": 0x4e, "v128.or": 0x50, "v128.xor": 0x51, "v128.bitselect": 0x52, "v128.any_true": 0x53,
  "v128.load64_lane": 0x57, "v128.store64_lane": 0x5b, "v128.load64_zero": 0x5d,
  "f32x4.demote_f64x2_zero": 0x5e, "f64x2.promote_low_f32x4": 0x5f,
  "f64x2.floor": 0x75, "i16x8.narrow_i32x4_u": 0x86, "i32x4.all_true": 0xa3,
  "i32x4.shl": 0xab, "i32x4.shr_s": 0xac, "i32x4.shr_u": 0xad, "i32x4.add": 0xae, "i32x4.sub": 0xb1,
  "f32x4.abs": 0xe0, "f32x4.add": 0xe4, "f32x4.sub": 0xe5, "f32x4.mul": 0xe6,
  "f64x2.add": 0xf0, "f64x2.sub": 0xf1, "f64x2.mul": 0xf2,
} as const;
export type ScalarOp = keyof typeof OP;
export type SimdOp = keyof typeof SIMD;

/** One function's locals and code; `local` numbers a new local, params come first. */
export class FunctionBody {
  readonly code: number[] = [];
  private readonly locals: ValType[] = [];
  constructor(readonly params: ValType[], readonly results: ValType[]) {}

  local(type: ValType): number {
    this.locals.push(type);
    return this.params.length + this.locals.length - 1;
  }
  /** A scalar instruction, with its immediates (memory instructions: use load / store). */
  op(name: ScalarOp, ...imm: number[]): this {
    this.code.push(OP[name]);
    for (const v of imm) uleb(v, this.code);
    return this;
  }
  /** A SIMD instruction; `lane` for the lane instructions. */
  simd(name: SimdOp, lane?: number): this {
    this.code.push(0xfd);
    uleb(SIMD[name], this.code);
    if (lane !== undefined) this.code.push(lane);
    return this;
  }
  /** A memory instruction (scalar or SIMD) with its memarg: log2 alignment and a constant offset; lane for the lane forms. */
  mem(name: ScalarOp | SimdOp, align: number, offset: number, lane?: number): this {
    if (name in SIMD) {
      this.code.push(0xfd);
      uleb(SIMD[name as SimdOp], this.code);
    } else this.code.push(OP[name as ScalarOp]);
    uleb(align, this.code);
    uleb(offset, this.code);
    if (lane !== undefined) this.code.push(lane);
    return this;
  }
  get(i: number): this { return this.op("local.get", i); }
  set(i: number): this { return this.op("local.set", i); }
  tee(i: number): this { return this.op("local.tee", i); }
  i32(v: number): this {
    this.code.push(OP["i32.const"]);
    sleb(v | 0, this.code);
    return this;
  }
  f32(v: number): this {
    this.code.push(OP["f32.const"]);
    this.code.push(...new Uint8Array(Float32Array.of(v).buffer));
    return this;
  }
  f64(v: number): this {
    this.code.push(OP["f64.const"]);
    this.code.push(...new Uint8Array(Float64Array.of(v).buffer));
    return this;
  }
  /** v128.const of two doubles. */
  f64x2(v: number): this {
    this.code.push(0xfd);
    uleb(SIMD["v128.const"], this.code);
    this.code.push(...new Uint8Array(Float64Array.of(v, v).buffer));
    return this;
  }
  /** v128.const of four int32 lanes. */
  i32x4(v: number): this {
    this.code.push(0xfd);
    uleb(SIMD["v128.const"], this.code);
    this.code.push(...new Uint8Array(Int32Array.of(v, v, v, v).buffer));
    return this;
  }
  /** block / loop / if with no result. */
  open(kind: "block" | "loop" | "if"): this {
    this.code.push(OP[kind], 0x40);
    return this;
  }
  /** The locals declaration and code, as the code section holds them. */
  encode(): number[] {
    const groups: [number, ValType][] = [];
    for (const t of this.locals) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    const body: number[] = [];
    uleb(groups.length, body);
    for (const [n, t] of groups) { uleb(n, body); body.push(t); }
    body.push(...this.code, OP.end);
    const out: number[] = [];
    uleb(body.length, out);
    return out.concat(body);
  }
}

function section(id: number, content: number[], out: number[]): void {
  out.push(id);
  uleb(content.length, out);
  out.push(...content);
}
function vec(items: number[][]): number[] {
  const out: number[] = [];
  uleb(items.length, out);
  for (const item of items) out.push(...item);
  return out;
}
function name(s: string): number[] {
  const bytes = [...Buffer.from(s, "utf8")];
  const out: number[] = [];
  uleb(bytes.length, out);
  return out.concat(bytes);
}

/**
 * A module importing memory `env.memory` (at least one 64 KiB page, no maximum: any asm heap
 * links) and exporting each function under its name; function i may call function j by index.
 */
export function moduleBytes(functions: { name: string; body: FunctionBody }[]): Uint8Array {
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const types = functions.map(({ body }) => [0x60, body.params.length, ...body.params, body.results.length, ...body.results]);
  section(1, vec(types), out);
  section(2, vec([[...name("env"), ...name("memory"), 0x02, 0x00, 0x01]]), out);
  section(3, vec(functions.map((_, i) => { const b: number[] = []; uleb(i, b); return b; })), out);
  section(7, vec(functions.map((f, i) => { const b = [...name(f.name), 0x00]; uleb(i, b); return b; })), out);
  section(10, vec(functions.map((f) => f.body.encode())), out);
  return Uint8Array.from(out);
}

// Node has WebAssembly; the project's TypeScript libs (no DOM) do not declare it.
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
};

/**
 * One kernel module, compiled once per thread from the bytes `build` gives the first time, and
 * instantiated on each asm heap's memory (`env.memory`). `exports` is undefined where this
 * WebAssembly has no SIMD128 (the module does not validate) or TENSORMERGE_TS_WASM=0 asks for
 * the asm.js kernels.
 */
export class KernelModule {
  private module: object | null | undefined; // null: did not validate
  exports(memory: object, build: () => Uint8Array): Record<string, unknown> | undefined {
    if (process.env.TENSORMERGE_TS_WASM === "0" || typeof WebAssembly !== "object") return undefined;
    if (this.module === undefined) {
      const bytes = build();
      this.module = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
    }
    return this.module === null ? undefined : new WebAssembly.Instance(this.module, { env: { memory } }).exports;
  }
}
