/**
 * Scaled fp8 (ComfyUI's fp8_scaled files: `<layer>.weight` fp8 codes, `<layer>.scale_weight` one
 * number, a `scaled_fp8` marker) merged through the scale, both engines. Expected values are
 * computed here from the definitions: a weight's real values are fp32(widen(code) × scale) (the
 * fp8 codes widened by the independent reference of test/dtypes/fp8-reference.ts), the method's
 * formula in fp32 one rounding per operation, then either A's form again (fp8 codes of
 * fp32(r × fp32(1/scale_A)), A's scale tensors and marker copied) or, with `--dtype`, a plain
 * weight of that type (scale tensors and marker left out).
 */
import { strict as assert } from "node:assert";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isMergeError } from "../../lib/errors";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { runRecipe } from "../../lib/recipes/run";
import { E4M3, f32Bits, f32FromBits, refF32BitsToFp8, refFp8ToF32Bits } from "../dtypes/fp8-reference";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir, writeModel } from "../helpers/models";

const f = Math.fround;
const QKV = "model.diffusion_model.double_blocks.0.img_attn.qkv.weight";
const QKV_SCALE = "model.diffusion_model.double_blocks.0.img_attn.qkv.scale_weight";
const BIAS = "model.diffusion_model.double_blocks.0.img_attn.qkv.bias";
const FINAL = "model.diffusion_model.final_layer.linear.weight";
const FINAL_SCALE = "model.diffusion_model.final_layer.linear.scale_weight";
const MARKER = "scaled_fp8";

/** Finite e4m3fn codes (no NaN), every sign and exponent, from a seed. */
function codes(n: number, seed: number): Uint8Array {
  let s = seed >>> 0;
  return Uint8Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const c = s >>> 24;
    return (c & 0x7f) === 0x7f ? c & 0xfe : c;
  });
}
const widen = (code: number) => f32FromBits(refFp8ToF32Bits(E4M3, code));
const toE4m3 = (x: number) => refF32BitsToFp8(E4M3, f32Bits(x));
/** fp32 -> bf16 bits, round to nearest even (no NaN here). */
function bf16Bits(x: number): number {
  const b = f32Bits(x);
  const lower = b & 0xffff;
  let upper = b >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper++;
  return upper & 0xffff;
}
const u16 = (bytes: Uint8Array, i: number) => bytes[2 * i]! | (bytes[2 * i + 1]! << 8);

describe("scaled fp8: merged through the per-tensor scale", function () {
  this.timeout(120_000);
  const dir = tempDir("tm-scaled-fp8-");
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  // A: both Linears scaled (an fp32 and an fp16 scale); B: the qkv scaled, final_layer plain bf16.
  const qkvA = codes(128, 1), qkvB = codes(128, 2), finalA = codes(64, 3);
  const finalB = Array.from({ length: 64 }, (_, i) => Math.sin(i) * 0.05);
  const scaleA = f(0.0123), scaleB = f(0.02), finalScaleA = 0.5; // 0.5 is exact in fp16
  before(() => {
    writeModel(a, {
      [QKV]: { dtype: "F8_E4M3", shape: [16, 8], raw: qkvA },
      [QKV_SCALE]: { dtype: "F32", shape: [], values: [scaleA] },
      [BIAS]: { dtype: "BF16", shape: [16], values: new Array(16).fill(0.5) },
      [FINAL]: { dtype: "F8_E4M3", shape: [8, 8], raw: finalA },
      [FINAL_SCALE]: { dtype: "F16", shape: [], values: [finalScaleA] },
      [MARKER]: { dtype: "F8_E4M3", shape: [0], raw: new Uint8Array(0) },
    });
    writeModel(b, {
      [QKV]: { dtype: "F8_E4M3", shape: [16, 8], raw: qkvB },
      [QKV_SCALE]: { dtype: "F32", shape: [], values: [scaleB] },
      [BIAS]: { dtype: "BF16", shape: [16], values: new Array(16).fill(0.25) },
      [FINAL]: { dtype: "BF16", shape: [8, 8], values: finalB },
      [MARKER]: { dtype: "F8_E4M3", shape: [0], raw: new Uint8Array(0) },
    });
  });
  const alpha = 0.3;
  const p0 = f(1 - alpha), p1 = f(alpha);
  const ws = (x: number, y: number) => f(f(x * p0) + f(y * p1));
  /** The merged real values of the two weights, as fp32. */
  const mergedQkv = () => Array.from(qkvA, (c, i) => ws(f(widen(c) * scaleA), f(widen(qkvB[i]!) * scaleB)));
  const mergedFinal = () => {
    const bf = readModel(b).tensors.get(FINAL)!.values; // bf16 widened exactly
    return Array.from(finalA, (c, i) => ws(f(widen(c) * finalScaleA), bf[i]!));
  };

  const outputs = new Map<string, string[]>();
  for (const engine of ENGINES) {
    it(`keeps A's form: fp8 codes of r × (1/scale_A), A's scales and marker (${engine})`, async () => {
      const out = join(dir.path, `keep-${engine}.safetensors`);
      await merge({ a, b, method: "weighted-sum", multiplier: alpha, out, engine, recipeMetadata: false });
      outputs.set("keep", [...(outputs.get("keep") ?? []), out]);
      const O = readModel(out), A = readModel(a);
      assert.deepEqual(O.order, A.order);
      for (const name of [QKV_SCALE, FINAL_SCALE, MARKER]) assert.ok(Buffer.from(O.tensors.get(name)!.bytes).equals(Buffer.from(A.tensors.get(name)!.bytes)), name);
      const inv = f(1 / scaleA), invFinal = f(1 / finalScaleA);
      const want = mergedQkv().map((r) => toE4m3(f(r * inv)));
      assert.deepEqual([...O.tensors.get(QKV)!.bytes], want);
      assert.deepEqual([...O.tensors.get(FINAL)!.bytes], mergedFinal().map((r) => toE4m3(f(r * invFinal))));
      // and the merge did go through the scales: the codes differ from merging the codes alone
      const naive = Array.from(qkvA, (c, i) => toE4m3(ws(widen(c), widen(qkvB[i]!))));
      assert.notDeepEqual(want, naive);
    });

    it(`--dtype bf16 / fp32: plain weights, scale tensors and marker left out (${engine})`, async () => {
      for (const dtype of ["bf16", "fp32"] as const) {
        const out = join(dir.path, `plain-${dtype}-${engine}.safetensors`);
        await merge({ a, b, method: "weighted-sum", multiplier: alpha, dtype, out, engine, recipeMetadata: false });
        outputs.set(dtype, [...(outputs.get(dtype) ?? []), out]);
        const O = readModel(out);
        assert.deepEqual(O.order, [QKV, BIAS, FINAL]);
        const t = O.tensors.get(QKV)!;
        assert.equal(t.dtype, dtype === "bf16" ? "BF16" : "F32");
        const r = mergedQkv();
        if (dtype === "fp32") assert.deepEqual(t.values, r);
        else r.forEach((x, i) => assert.equal(u16(t.bytes, i), bf16Bits(x), `${QKV}[${i}]`));
        if (dtype === "fp32") assert.deepEqual(O.tensors.get(FINAL)!.values, mergedFinal());
      }
    });

    it(`no-interpolation to fp32 gives widen(code) × scale (${engine})`, async () => {
      const out = join(dir.path, `copy-fp32-${engine}.safetensors`);
      await merge({ a, method: "no-interpolation", dtype: "fp32", out, engine, recipeMetadata: false });
      const O = readModel(out);
      assert.deepEqual(O.tensors.get(QKV)!.values, Array.from(qkvA, (c) => f(widen(c) * scaleA)));
      assert.deepEqual(O.tensors.get(FINAL)!.values, Array.from(finalA, (c) => f(widen(c) * finalScaleA)));
      assert.ok(!O.tensors.has(QKV_SCALE) && !O.tensors.has(MARKER));
    });
  }

  it("the engines wrote the same bytes", function () {
    if (ENGINES.length < 2) this.skip();
    for (const [what, paths] of outputs) assert.ok(readFileSync(paths[0]!).equals(readFileSync(paths[1]!)), what);
  });

  it("an unsaved scaled row feeds the next row as its saved file would (one pass = rows one by one)", async () => {
    const chained = join(dir.path, "chained"), split = join(dir.path, "split");
    mkdirSync(chained);
    mkdirSync(split);
    const second = (first: string) => ({ name: "second", method: "weighted-sum", a: first, b: a, multiplier: 0.6, dtype: "fp32" });
    await runRecipe(parseRecipe(JSON.stringify({ rows: [{ name: "first", a, b, multiplier: alpha, save: false }, second("first")] })), { outDir: chained, recipeMetadata: false });
    await runRecipe(parseRecipe(JSON.stringify({ rows: [{ name: "first", a, b, multiplier: alpha }] })), { outDir: split, recipeMetadata: false });
    await runRecipe(parseRecipe(JSON.stringify({ rows: [second(join(split, "first.safetensors"))] })), { outDir: split, recipeMetadata: false });
    assert.ok(readFileSync(join(chained, "second.safetensors")).equals(readFileSync(join(split, "second.safetensors"))));
    assert.ok(!existsSync(join(chained, "first.safetensors")));
    // the saved first row is scaled fp8 again, and the second row read it through its scale
    assert.ok(readModel(join(split, "first.safetensors")).tensors.has(QKV_SCALE));
    assert.ok(!readModel(join(split, "second.safetensors")).tensors.has(QKV_SCALE));
  });

  it("refuses a scale outside ±[2^-100, 2^100] or not finite, naming the weight and the scale", async () => {
    for (const value of [1e-35, Infinity, 0]) {
      const bad = join(dir.path, `bad-${value}.safetensors`);
      writeModel(bad, {
        [QKV]: { dtype: "F8_E4M3", shape: [16, 8], raw: qkvA },
        [QKV_SCALE]: { dtype: "F32", shape: [], values: [value] },
      });
      const out = join(dir.path, `bad-out-${value}.safetensors`);
      await assert.rejects(
        merge({ a: bad, b, method: "weighted-sum", multiplier: alpha, out }),
        (e: unknown) => isMergeError(e, "DTYPE_UNSUPPORTED") && e.tensor === QKV && e.message.includes(`its scale ${QKV_SCALE} is ${String(f(value))},`),
      );
      assert.ok(!existsSync(out));
    }
  });
});
