/**
 * fp32 -> fp16 narrowing as WebAssembly SIMD128: asm-kernels.ts narrowF16's contract (n fp32
 * words at byte offset src -> n fp16 codes at dst; the NaNs and infinities among them at the
 * heap's COUNTS words, bytes 6144 and 6148), its two paths bit for bit.
 *
 * Why: the narrowing runs over every fp16 output element, one element per step in asm.js; the
 * common element (2^-14 <= |x| < 65520) is four integer operations, which i32x4 lanes do four
 * at a time. Eight elements per step: two vectors of fp32 words, rounded by the same integer
 * rebias-and-round, packed to eight codes by i16x8.narrow_i32x4_u (the codes are 0..0xffff,
 * so its unsigned saturation never clips). A step with an element outside that range (zeros,
 * small weights, subnormals, overflow, Inf, NaN) runs all eight through `one`, the scalar code
 * of asm-kernels.ts narrowF16 (its table path, and the counts), as do the last n mod 8.
 */
import { FunctionBody, I32, KernelModule, V128, moduleBytes } from "./emit";

/** COUNTS (asm-kernels.ts): the NaN and Inf counts' byte offsets; the tables at 0, 2048, 4096. */
const NAN_AT = 6144, INF_AT = 6148;

/** one(src, dst, i): element i, as asm-kernels.ts narrowF16's loop body, counting in memory. */
function oneBody(): FunctionBody {
  const b = new FunctionBody([I32, I32, I32], []);
  const [src, dst, i] = [0, 1, 2];
  const word = b.local(I32), a = b.local(I32), se = b.local(I32), m = b.local(I32), s = b.local(I32), h = b.local(I32), ha = b.local(I32);
  b.get(src).get(i).i32(2).op("i32.shl").op("i32.add").mem("i32.load", 2, 0).tee(word).i32(0x7fffffff).op("i32.and").set(a);
  const storeH = (): void => {
    b.get(dst).get(i).i32(1).op("i32.shl").op("i32.add").get(h).mem("i32.store16", 1, 0);
  };
  b.open("block");
  b.get(a).i32(0x38800000).op("i32.sub").i32(0x0effe000).op("i32.lt_u").open("if");
  b.get(word).i32(16).op("i32.shr_s").i32(0x8000).op("i32.and");
  b.get(a).i32(0x37fff001).op("i32.sub").get(a).i32(13).op("i32.shr_s").i32(1).op("i32.and").op("i32.add").i32(13).op("i32.shr_s");
  b.op("i32.or").set(h);
  storeH();
  b.op("br", 1).op("end");
  b.get(word).i32(23).op("i32.shr_u").set(se);
  b.get(se).i32(0xff).op("i32.and").i32(0xff).op("i32.eq").open("if");
  // Inf / NaN: the payload's top bits, quiet bit set
  b.get(word).i32(16).op("i32.shr_u").i32(0x8000).op("i32.and");
  b.get(word).i32(0x7fffff).op("i32.and").tee(m).i32(13).op("i32.shr_u").i32(0x7e00).op("i32.or");
  b.i32(0x7c00);
  b.get(m).op("select"); // man != 0 ? 0x7e00 | man >>> 13 : 0x7c00 (select takes its first when the condition is not 0)
  b.op("i32.or").set(h);
  b.op("else");
  b.get(word).i32(0x7fffff).op("i32.and").i32(0x800000).op("i32.or").set(m);
  b.get(se).i32(2).op("i32.shl").mem("i32.load", 2, 2048).set(s);
  b.get(se).i32(2).op("i32.shl").mem("i32.load", 2, 0);
  b.get(m).get(se).i32(2).op("i32.shl").mem("i32.load", 2, 4096).op("i32.add");
  b.get(m).get(s).op("i32.shr_u").i32(1).op("i32.and").op("i32.add").get(s).op("i32.shr_u");
  b.op("i32.add").set(h);
  b.op("end");
  storeH();
  b.get(h).i32(0x7fff).op("i32.and").tee(ha).i32(0x7c00).op("i32.gt_u").open("if");
  b.i32(0).i32(0).mem("i32.load", 2, NAN_AT).i32(1).op("i32.add").mem("i32.store", 2, NAN_AT);
  b.op("else");
  b.get(ha).i32(0x7c00).op("i32.eq").open("if");
  b.i32(0).i32(0).mem("i32.load", 2, INF_AT).i32(1).op("i32.add").mem("i32.store", 2, INF_AT);
  b.op("end").op("end");
  b.op("end"); // block
  return b;
}

/** narrowF16(src, dst, n): function 0 (see the top comment); `one` is function 1. */
function narrowBody(): FunctionBody {
  const b = new FunctionBody([I32, I32, I32], []);
  const [src, dst, n] = [0, 1, 2];
  const i = b.local(I32), end = b.local(I32), k = b.local(I32);
  const w = [b.local(V128), b.local(V128)], a = [b.local(V128), b.local(V128)];
  b.i32(0).i32(0).mem("i32.store", 2, NAN_AT);
  b.i32(0).i32(0).mem("i32.store", 2, INF_AT);
  b.get(n).i32(-8).op("i32.and").set(end);
  const scalarUpTo = (limit: () => void): void => {
    b.open("block").open("loop");
    b.get(k); limit(); b.op("i32.ge_u").op("br_if", 1);
    b.get(src).get(dst).get(k).op("call", 1);
    b.get(k).i32(1).op("i32.add").set(k);
    b.op("br", 0).op("end").op("end");
  };
  b.open("block").open("loop");
  b.get(i).get(end).op("i32.ge_u").op("br_if", 1);
  for (let q = 0; q < 2; q++) {
    b.get(src).get(i).i32(2).op("i32.shl").op("i32.add").mem("v128.load", 0, 16 * q).tee(w[q]!);
    b.i32x4(0x7fffffff).simd("v128.and").set(a[q]!);
  }
  // every lane 2^-14 <= |x| < 65520: (a − 0x38800000) <u 0x0effe000
  for (let q = 0; q < 2; q++) b.get(a[q]!).i32x4(0x38800000).simd("i32x4.sub").i32x4(0x0effe000).simd("i32x4.lt_u");
  b.simd("v128.and").simd("i32x4.all_true").open("if");
  b.get(dst).get(i).i32(1).op("i32.shl").op("i32.add");
  for (let q = 0; q < 2; q++) {
    b.get(w[q]!).i32(16).simd("i32x4.shr_s").i32x4(0x8000).simd("v128.and");
    b.get(a[q]!).i32x4(0x37fff001).simd("i32x4.sub");
    b.get(a[q]!).i32(13).simd("i32x4.shr_s").i32x4(1).simd("v128.and").simd("i32x4.add").i32(13).simd("i32x4.shr_s");
    b.simd("v128.or");
  }
  b.simd("i16x8.narrow_i32x4_u").mem("v128.store", 0, 0);
  b.op("else");
  b.get(i).set(k);
  scalarUpTo(() => b.get(i).i32(8).op("i32.add"));
  b.op("end");
  b.get(i).i32(8).op("i32.add").set(i);
  b.op("br", 0).op("end").op("end");
  b.get(end).set(k);
  scalarUpTo(() => b.get(n));
  return b;
}

export function narrowF16ModuleBytes(): Uint8Array {
  return moduleBytes([{ name: "narrowF16", body: narrowBody() }, { name: "one", body: oneBody() }]);
}

/** asm-kernels.ts narrowF16's signature. */
export type NarrowF16 = (src: number, dst: number, n: number) => void;

const compiled = new KernelModule();

/** The SIMD narrowing bound to `memory` (an asm heap's), or undefined (KernelModule: no SIMD128, or TENSORMERGE_TS_WASM=0). */
export function narrowF16Wasm(memory: object): NarrowF16 | undefined {
  return compiled.exports(memory, narrowF16ModuleBytes)?.narrowF16 as NarrowF16 | undefined;
}
