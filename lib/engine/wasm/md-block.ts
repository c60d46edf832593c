/**
 * multiply-difference over one block of the TS engine as WebAssembly SIMD128: the first pass
 * (|A − C|, |B − C| into the scratch blocks), the pow product (md-pow.ts, called), and the last
 * pass (the copysign and C + m), f32x4 where asm-kernels.ts mdAbs and mdCombine go one element
 * at a time, in one call from JavaScript per block.
 *
 * Why: after the pow product went to f64x2 lanes (md-pow.ts), the two asm.js passes around it
 * (scalar fp32: 5 loads and 2 stores, then 4 loads and a store, per element) and a JS-to-wasm
 * call for each of the three took a large share of the block's time.
 *
 * Bits: every operation is an IEEE 754 binary32 one with the same operands in the same order as
 * mdAbs and mdCombine (f32x4 lanes round as f32 scalars do; wasm SIMD keeps subnormals), so each
 * lane gives their result wherever no operand is a NaN. A NaN's payload may depend on which of
 * two NaN operands an instruction returns, so this block combines only when the pow product
 * listed no element: an A, B or C that is NaN or ±∞ makes |A − C| or |B − C| NaN or ∞, and
 * md-pow.ts lists such elements (finite products and its own +0 only otherwise). A block with
 * listed elements returns before its last pass; the caller computes them and runs asm.js
 * mdCombine over it, as before.
 */
import { F32, F64, FunctionBody, I32, V128, type ScalarOp } from "./emit";
import type { PowLayout } from "./md-pow";

/** Module function indices (md-pow.ts: mdPow 0, fix 1). */
export const MD_POW_FN = 0, MD_ABS_FN = 2, MD_COMBINE_FN = 3;

/**
 * A loop over byte offsets [0, n·4): `vector(i)` for each 16 bytes that fit, then `scalar(i)`
 * for each element left (no load reads past the n-th element, which may end the memory).
 */
function lanes(b: FunctionBody, n: number, vector: (i: number) => void, scalar: (i: number) => void): void {
  const i = b.local(I32), end = b.local(I32);
  b.get(n).i32(-4).op("i32.and").i32(2).op("i32.shl").set(end);
  for (const [step, body] of [[16, vector], [4, scalar]] as const) {
    b.open("block").open("loop");
    b.get(i).get(end).op("i32.ge_u").op("br_if", 1);
    body(i);
    b.get(i).i32(step).op("i32.add").set(i);
    b.op("br", 0).op("end").op("end");
    if (step === 16) b.get(n).i32(2).op("i32.shl").set(end);
  }
}

/** address `base` + i on the stack */
const at = (b: FunctionBody, base: number, i: number): FunctionBody => b.get(base).get(i).op("i32.add");

/** mdAbs(a, b, c, n): x1 = |A − C|, x2 = |B − C| (asm-kernels.ts mdAbs). */
export function mdAbsBody(L: PowLayout): FunctionBody {
  const b = new FunctionBody([I32, I32, I32, I32], []);
  const [a, bb, c, n] = [0, 1, 2, 3];
  const pass = (load: ScalarOp | "v128.load", sub: "f32.sub" | "f32x4.sub", abs: "f32.abs" | "f32x4.abs", store: ScalarOp | "v128.store", align: number) => (i: number) => {
    for (const [x, to] of [[a, L.x1], [bb, L.x2]] as const) {
      b.get(i);
      at(b, x, i).mem(load, align, 0);
      at(b, c, i).mem(load, align, 0);
      if (sub === "f32.sub") b.op(sub).op(abs as ScalarOp);
      else b.simd(sub).simd(abs as "f32x4.abs");
      b.mem(store, align, to);
    }
  };
  lanes(b, n, pass("v128.load", "f32x4.sub", "f32x4.abs", "v128.store", 0), pass("f32.load", "f32.sub", "f32.abs", "f32.store", 2));
  return b;
}

/**
 * mdCombine(a, b, c, out, n, p2, p3): out = C + m·(w < C ? −1 : 1), w = A·p2 + B·p3, m the
 * first scratch block (asm-kernels.ts mdCombine; method-kernels.ts says why it is native's).
 */
export function mdCombineBody(L: PowLayout): FunctionBody {
  const b = new FunctionBody([I32, I32, I32, I32, I32, F32, F32], []);
  const [a, bb, c, out, n, p2, p3] = [0, 1, 2, 3, 4, 5, 6];
  const p2v = b.local(V128), p3v = b.local(V128), cv = b.local(V128), cs = b.local(F32);
  b.get(p2).simd("f32x4.splat").set(p2v);
  b.get(p3).simd("f32x4.splat").set(p3v);
  lanes(b, n, (i) => {
    at(b, out, i);
    at(b, c, i).mem("v128.load", 0, 0).tee(cv);
    b.get(i).mem("v128.load", 0, L.x1);
    // ±1: 1.0's bits with the sign bit of the lane mask w < C
    b.i32x4(0x3f800000);
    at(b, a, i).mem("v128.load", 0, 0).get(p2v).simd("f32x4.mul");
    at(b, bb, i).mem("v128.load", 0, 0).get(p3v).simd("f32x4.mul").simd("f32x4.add");
    b.get(cv).simd("f32x4.lt").i32x4(0x80000000).simd("v128.and").simd("v128.xor");
    b.simd("f32x4.mul").simd("f32x4.add").mem("v128.store", 0, 0);
  }, (i) => {
    at(b, out, i);
    at(b, c, i).mem("f32.load", 2, 0).tee(cs);
    b.get(i).mem("f32.load", 2, L.x1);
    b.f32(-1).f32(1);
    at(b, a, i).mem("f32.load", 2, 0).get(p2).op("f32.mul");
    at(b, bb, i).mem("f32.load", 2, 0).get(p3).op("f32.mul").op("f32.add");
    b.get(cs).op("f32.lt").op("select");
    b.op("f32.mul").op("f32.add").mem("f32.store", 2, 0);
  });
  return b;
}

/**
 * mdBlock(a, b, c, out, n, y1, y2, zero1, zero2, p2, p3) → the count mdPow listed: the three
 * passes over n <= MD_BLOCK elements; with a count above 0 the last pass is the caller's (top
 * comment).
 */
export function mdBlockBody(): FunctionBody {
  const b = new FunctionBody([I32, I32, I32, I32, I32, F64, F64, I32, I32, F32, F32], [I32]);
  const [a, bb, c, out, n, y1, y2, zero1, zero2, p2, p3] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const left = b.local(I32);
  b.get(a).get(bb).get(c).get(n).op("call", MD_ABS_FN);
  b.get(n).get(y1).get(y2).get(zero1).get(zero2).op("call", MD_POW_FN).tee(left);
  b.op("i32.eqz").open("if");
  b.get(a).get(bb).get(c).get(out).get(n).get(p2).get(p3).op("call", MD_COMBINE_FN);
  b.op("end");
  b.get(left);
  return b;
}
