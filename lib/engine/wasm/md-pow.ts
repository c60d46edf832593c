/**
 * multiply-difference's pow product as WebAssembly SIMD128 code (f64x2 lanes), built by
 * emit.ts: asm-kernels.ts mdPow's contract and det-math.ts powProductF32Array's fast path,
 * operation for operation (the same doubles in the same order, so the same bits as native's
 * merge_pow_product), over GROUP elements per step.
 *
 * Why: the product is a chain of ~45 dependent double operations per element, so the asm.js
 * kernel (one element per step) waits on latency, not arithmetic. Here GROUP elements run side
 * by side, two per f64x2 vector: 2·GROUP log chains, then GROUP/2·2 exp chains, each
 * independent of the others, as native runs 12-16 vectors together
 * (native/core/method_kernels_simd.h log2_halves, exp2_halves). Wasm has no gather: each table
 * entry is loaded into its lane (v128.load64_zero / load64_lane) from an index computed from the
 * operand's fp32 bits (read again from memory as an i32: a load, not a lane extract) or from k.
 *
 * Special elements (an operand not normal positive finite, or exactly 1) are found per step by
 * integer compares on the fp32 bits; their lanes compute garbage whose table indices are masked
 * into the heap (no trap, no effect), the step's original operands are put back in those lanes,
 * and `fix` treats each such element as asm-kernels.ts mdPowOne does (+0 where zero_kills says
 * so, else its index appended to the list for powProductF32). A last partial step runs over the
 * scratch blocks' next elements (inside the block: n is rounded up to GROUP, MD_BLOCK is a
 * multiple of it), and only elements below n are fixed or listed.
 */
import { F64, FunctionBody, I32, KernelModule, V128, moduleBytes } from "./emit";
import { mdAbsBody, mdBlockBody, mdCombineBody } from "./md-block";

/** Byte offsets in the heap (asm-kernels.ts): the two scratch blocks, the list, the tables. */
export interface PowLayout { x1: number; x2: number; list: number; logScale: number; logHi: number; expScale: number }
/** The pow tables' coefficients (det-math.ts powHeapTables: LOGP, EXPP). */
export interface PowCoefficients { logp: Float64Array; expp: Float64Array }

/** Elements per step: 8 (4 f64x2 vectors per operand); the build takes any multiple of 4. */
export const MD_WASM_GROUP = 8;
/** k − EXP_K_MIN indexes EXP_SCALE (det-math.ts: EXP_K_MIN = −2560). */
const EXP_K_BIAS = 2560;

/**
 * fix(i, left, zero1, zero2) → left: function 1 of the module, for a special element at byte
 * offset i of the blocks (its operands put back; see the top comment). The caller knows it is
 * special from the step's lane masks: the first block's other elements already hold results,
 * which may look special (a product of exactly 1).
 */
function fixBody(L: PowLayout): FunctionBody {
  const b = new FunctionBody([I32, I32, I32, I32], [I32]);
  const [i, left, zero1, zero2] = [0, 1, 2, 3];
  const u = b.local(I32), v = b.local(I32);
  b.get(i).mem("i32.load", 2, L.x1).set(u);
  b.get(i).mem("i32.load", 2, L.x2).set(v);
  // zero1 & u == 0 & v <u +∞ | zero2 & v == 0 & u <u +∞: +0
  b.get(zero1).get(u).op("i32.eqz").op("i32.and").get(v).i32(0x7f800000).op("i32.lt_u").op("i32.and");
  b.get(zero2).get(v).op("i32.eqz").op("i32.and").get(u).i32(0x7f800000).op("i32.lt_u").op("i32.and");
  b.op("i32.or").open("if").get(i).i32(0).mem("i32.store", 2, L.x1).get(left).op("br", 1).op("end");
  b.get(left).i32(2).op("i32.shl").get(i).i32(2).op("i32.shr_u").mem("i32.store", 2, L.list);
  b.get(left).i32(1).op("i32.add");
  return b;
}

/** mdPow(n, y1, y2, zero1, zero2) → the count listed: function 0 (see the top comment). */
function powBody(L: PowLayout, C: PowCoefficients, group: number): FunctionBody {
  if (group % 4 !== 0) throw new Error("group");
  const b = new FunctionBody([I32, F64, F64, I32, I32], [I32]);
  const [n, y1, y2, zero1, zero2] = [0, 1, 2, 3, 4];
  const J = group / 2, Q = group / 4;
  const i = b.local(I32), end = b.local(I32), n4 = b.local(I32), left = b.local(I32), any = b.local(I32), e = b.local(I32);
  const y1v = b.local(V128), y2v = b.local(V128);
  const orig = Array.from({ length: Q }, () => b.local(V128)), bad = Array.from({ length: Q }, () => b.local(V128));
  const base = [L.x1, L.x2];
  const idx = base.map(() => Array.from({ length: J }, () => [b.local(I32), b.local(I32)]));
  const r = base.map(() => Array.from({ length: J }, () => b.local(V128)));
  const p = base.map(() => Array.from({ length: J }, () => b.local(V128)));
  const t = Array.from({ length: J }, () => b.local(V128)), fr = Array.from({ length: J }, () => b.local(V128));
  const w = Array.from({ length: J }, () => b.local(V128));
  const ke = Array.from({ length: J }, () => [b.local(I32), b.local(I32)]);

  b.get(y1).simd("f64x2.splat").set(y1v);
  b.get(y2).simd("f64x2.splat").set(y2v);
  b.get(n).i32(2).op("i32.shl").set(n4);
  b.get(n).i32(group - 1).op("i32.add").i32(-group).op("i32.and").i32(2).op("i32.shl").set(end);
  /** A vector of two table doubles at byte offset `table` + the two indices' values. */
  const lookup = (table: number, [i0, i1]: number[]): void => {
    b.get(i1!).get(i0!).mem("v128.load64_zero", 0, table).mem("v128.load64_lane", 0, table, 1);
  };
  /** p ← p ⊙ c for every chain (⊙ = f64x2.mul by a vector local, or add of a constant). */
  const each = (chains: number[], f: (k: number) => void): void => chains.forEach((c, k) => { b.get(c); f(k); b.set(c); });
  /** acc ← c[4]·x, then + c[3], ·x, + c[2], ·x, + c[1], ·x, + c[0], every chain step by step (interleaved). */
  const horner = (acc: number[], x: number[], c: Float64Array): void => {
    acc.forEach((a, k) => b.f64x2(c[4]!).get(x[k]!).simd("f64x2.mul").set(a));
    for (const n of [3, 2, 1]) {
      each(acc, () => b.f64x2(c[n]!).simd("f64x2.add"));
      each(acc, (k) => b.get(x[k]!).simd("f64x2.mul"));
    }
    each(acc, () => b.f64x2(c[0]!).simd("f64x2.add"));
  };

  b.open("block").open("loop");
  b.get(i).get(end).op("i32.ge_u").op("br_if", 1);
  // the special test, on the fp32 bits of the step's operands
  for (let q = 0; q < Q; q++) {
    const test = (): void => {
      b.i32x4(0x00800000).simd("i32x4.sub").i32x4(0x7f000000).simd("i32x4.ge_u");
    };
    b.get(i).mem("v128.load", 0, L.x1 + 16 * q).tee(orig[q]!);
    test();
    b.get(orig[q]!).i32x4(0x3f800000).simd("i32x4.eq").simd("v128.or");
    b.get(i).mem("v128.load", 0, L.x2 + 16 * q).tee(bad[q]!);
    test();
    b.simd("v128.or").get(bad[q]!).i32x4(0x3f800000).simd("i32x4.eq").simd("v128.or").set(bad[q]!);
  }
  b.get(bad[0]!);
  for (let q = 1; q < Q; q++) b.get(bad[q]!).simd("v128.or");
  b.simd("v128.any_true").set(any);
  // log2: r = x·LOG_SCALE[s] − 1, s = bits >>> 19 (as a byte offset: (bits >>> 16) & 0xfff8)
  for (let o = 0; o < 2; o++) for (let j = 0; j < J; j++) {
    for (let l = 0; l < 2; l++) b.get(i).mem("i32.load", 2, base[o]! + 8 * j + 4 * l).i32(16).op("i32.shr_u").i32(0xfff8).op("i32.and").set(idx[o]![j]![l]!);
    b.get(i).mem("v128.load64_zero", 0, base[o]! + 8 * j).simd("f64x2.promote_low_f32x4");
    lookup(L.logScale, idx[o]![j]!);
    b.simd("f64x2.mul").f64x2(1).simd("f64x2.sub").set(r[o]![j]!);
  }
  const rs = r.flat(), ps = p.flat();
  // p = LOGP[4]·r, then + LOGP[3], ·r, + LOGP[2], ·r, + LOGP[1], ·r, + LOGP[0]
  horner(ps, rs, C.logp);
  // log2 x = LOG_HI[s] + p·r; t = y1·log2 x1 + y2·log2 x2
  for (let j = 0; j < J; j++) {
    b.get(y1v);
    lookup(L.logHi, idx[0]![j]!);
    b.get(p[0]![j]!).get(r[0]![j]!).simd("f64x2.mul").simd("f64x2.add").simd("f64x2.mul");
    b.get(y2v);
    lookup(L.logHi, idx[1]![j]!);
    b.get(p[1]![j]!).get(r[1]![j]!).simd("f64x2.mul").simd("f64x2.add").simd("f64x2.mul");
    b.simd("f64x2.add").set(t[j]!);
  }
  // exp2: k = ⌊16t + ½⌋, f = t − k/16, w = Σ EXPP[n]·f^n by Horner
  for (let j = 0; j < J; j++) {
    b.get(t[j]!).f64x2(16).simd("f64x2.mul").f64x2(0.5).simd("f64x2.add").simd("f64x2.floor").tee(fr[j]!);
    // k + 1.5·2^52: k's two's complement bits in the double's low word (lanes 0 and 2)
    b.f64x2(6755399441055744).simd("f64x2.add").set(w[j]!);
    for (let l = 0; l < 2; l++) b.get(w[j]!).simd("i32x4.extract_lane", 2 * l).i32(EXP_K_BIAS).op("i32.add").i32(8191).op("i32.and").i32(3).op("i32.shl").set(ke[j]![l]!);
    b.get(t[j]!).get(fr[j]!).f64x2(0.0625).simd("f64x2.mul").simd("f64x2.sub").set(fr[j]!);
  }
  horner(w, fr, C.expp);
  // w·EXP_SCALE[k − EXP_K_MIN], rounded once to fp32, stored over the first operand
  for (let j = 0; j < J; j++) {
    b.get(i).get(w[j]!);
    lookup(L.expScale, ke[j]!);
    b.simd("f64x2.mul").simd("f32x4.demote_f64x2_zero").mem("v128.store64_lane", 0, L.x1 + 8 * j, 0);
  }
  // special elements: their operands back, then fix one by one
  b.get(any).open("if");
  for (let q = 0; q < Q; q++) {
    b.get(i).get(orig[q]!).get(i).mem("v128.load", 0, L.x1 + 16 * q).get(bad[q]!).simd("v128.bitselect").mem("v128.store", 0, L.x1 + 16 * q);
  }
  // one by one (lanes known: unrolled), below n only
  for (let k = 0; k < group; k++) {
    b.get(i).i32(4 * k).op("i32.add").tee(e).get(n4).op("i32.lt_u");
    b.get(bad[k >> 2]!).simd("i32x4.extract_lane", k & 3).op("i32.and").open("if");
    b.get(e).get(left).get(zero1).get(zero2).op("call", 1).set(left);
    b.op("end");
  }
  b.op("end"); // if
  b.get(i).i32(4 * group).op("i32.add").set(i);
  b.op("br", 0).op("end").op("end");
  b.get(left);
  return b;
}

/**
 * The module's bytes: exports mdPow (function 0), fix (1), and md-block.ts's mdAbs (2),
 * mdCombine (3) and mdBlock (4); memory imported as env.memory.
 */
export function mdPowModuleBytes(layout: PowLayout, coefficients: PowCoefficients, group = MD_WASM_GROUP): Uint8Array {
  return moduleBytes([
    { name: "mdPow", body: powBody(layout, coefficients, group) },
    { name: "fix", body: fixBody(layout) },
    { name: "mdAbs", body: mdAbsBody(layout) },
    { name: "mdCombine", body: mdCombineBody(layout) },
    { name: "mdBlock", body: mdBlockBody() },
  ]);
}

/** mdPow of asm-kernels.ts's kernels: the same arguments and result. */
export type MdPow = (n: number, y1: number, y2: number, zero1: number, zero2: number) => number;
/** md-block.ts mdBlock: byte offsets of A, B, C and the result, n, the pow product's arguments, p2, p3. */
export type MdBlock = (a: number, b: number, c: number, out: number, n: number, y1: number, y2: number, zero1: number, zero2: number, p2: number, p3: number) => number;
/** The module's kernels bound to one memory. */
export interface MdWasm { pow: MdPow; block: MdBlock }

const compiled = new KernelModule();

/**
 * The SIMD pow kernel and md-block.ts's block kernel bound to `memory`, or undefined where this
 * WebAssembly has no SIMD128 or TENSORMERGE_TS_WASM=0 asks for the asm.js kernel (KernelModule;
 * the layout is the same for every heap, so the first one's builds the module).
 */
export function mdPowWasm(memory: object, layout: PowLayout, coefficients: PowCoefficients): MdWasm | undefined {
  const exports = compiled.exports(memory, () => mdPowModuleBytes(layout, coefficients));
  return exports && { pow: exports.mdPow as MdPow, block: exports.mdBlock as MdBlock };
}
