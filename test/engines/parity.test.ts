/**
 * Native vs TS engine: bit-identical outputs over random models whose tensor lengths sit around
 * vector widths, every input dtype pair (fp8 included), every output dtype and every method, with special
 * values (NaN, ±Inf, subnormals, fp16 overflow) and misaligned data offsets. Every SIMD kernel
 * set the CPU supports is compared, plus a forced scalar run and thread counts 1 and 2 (of both
 * engines: the TS engine shares chunks out to worker threads).
 *
 * One latitude: an operation on two NaNs with different payloads (fp8 NaN codes widen to
 * distinct payloads, and carry a sign) returns one of them, and which one is up to the
 * compiler and the JIT (x86 keeps the first operand's, and operands of a commutative add may
 * be swapped). Such elements must be NaN in both outputs; every other byte must be equal.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { METHODS } from "../../lib/methods/registry";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";

const LENGTHS = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 47, 63, 64, 65, 67, 127, 129, 1000, 4099];
const FLOATS = ["F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2"] as const;

/** fp8 tensors hold random bytes: every code, NaNs (and e5m2 Infs) included. */
function randomBytes(n: number, seed: number): Uint8Array {
  let s = seed >>> 0 || 1;
  return Uint8Array.from({ length: n }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24);
}

function buildModel(path: string, seed: number, role: "a" | "b"): void {
  const tensors: Record<string, TestTensor> = { "odd.u8": { dtype: "U8", shape: [3], raw: new Uint8Array([1, 2, 3]) } };
  let s = seed;
  for (const da of FLOATS) {
    for (const db of FLOATS) {
      for (const n of LENGTHS) {
        const dtype = role === "a" ? da : db;
        tensors[`t.${da}.${db}.${n}.weight`] = dtype.startsWith("F8") ? { dtype, shape: [n], raw: randomBytes(n, s++) } : { dtype, shape: [n], values: randomValues(n, s++, true) };
      }
    }
  }
  // one long fp8 tensor: many windows and thread splits (three TS engine chunks of 2^20)
  tensors["t.long.weight"] = { dtype: role === "a" ? "F8_E4M3" : "F8_E5M2", shape: [2_100_003], raw: randomBytes(2_100_003, s++) };
  tensors["position_ids"] = { dtype: "I64", shape: [1, 5], values: [0, 1, 2, 3, 4] };
  writeModel(path, tensors);
}

function isNaNElement(dtype: string, b: Buffer, i: number): boolean {
  switch (dtype) {
    case "F32": return (b.readUInt32LE(4 * i) & 0x7fffffff) > 0x7f800000;
    case "F64": return Number.isNaN(b.readDoubleLE(8 * i));
    case "F16": return (b.readUInt16LE(2 * i) & 0x7fff) > 0x7c00;
    case "BF16": return (b.readUInt16LE(2 * i) & 0x7fff) > 0x7f80;
    case "F8_E4M3": return (b[i]! & 0x7f) === 0x7f;
    case "F8_E5M2": return (b[i]! & 0x7f) > 0x7c;
    default: return false;
  }
}

/** Byte-identical files, or identical but for elements that are NaN in both (see above). */
function assertSameOutputs(pathX: string, pathY: string): void {
  const x = readFileSync(pathX), y = readFileSync(pathY);
  assert.equal(x.length, y.length);
  if (x.equals(y)) return;
  const headerEnd = 8 + Number(x.readBigUInt64LE(0));
  assert.ok(x.subarray(0, headerEnd).equals(y.subarray(0, headerEnd)), "headers differ");
  const mx = readModel(pathX), my = readModel(pathY);
  for (const [name, t] of mx.tensors) {
    const tb = Buffer.from(t.bytes), ub = Buffer.from(my.tensors.get(name)!.bytes);
    const size = tb.length / Math.max(1, t.shape.reduce((p, q) => p * q, 1));
    for (let i = 0; i * size < tb.length; i++) {
      const same = tb.subarray(i * size, (i + 1) * size).equals(ub.subarray(i * size, (i + 1) * size));
      if (!same && !(isNaNElement(t.dtype, tb, i) && isNaNElement(t.dtype, ub, i))) assert.fail(`${name}[${i}] differs`);
    }
  }
}

describe("engines: native and TS outputs are bit-identical", function () {
  this.timeout(300_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(() => {
    buildModel(a, 100, "a");
    buildModel(b, 5000, "b");
    buildModel(c, 9000, "b");
  });

  for (const method of METHODS) {
    for (const dtype of ["same", "fp16", "bf16", "fp32", "fp8-e4m3", "fp8-e5m2"] as const) {
      it(`${method.name} → ${dtype}`, async () => {
        const js = join(dir.path, `${method.name}-${dtype}-js.safetensors`);
        const nat = join(dir.path, `${method.name}-${dtype}-native.safetensors`);
        // Base + models methods (ties, dare…): A is the base, B and C the models.
        const inputs = method.many ? { base: a, models: [b, c], ...(method.name === "ties" ? { params: { density: 0.3 } } : {}) } : { a, b, c };
        await merge({ recipeMetadata: false, ...inputs, method: method.name as never, multiplier: 0.3, dtype, out: js, engine: "js", threads: 1 });
        await merge({ recipeMetadata: false, ...inputs, method: method.name as never, multiplier: 0.3, dtype, out: nat, engine: "native" });
        assertSameOutputs(js, nat);
      });
    }
  }

  for (const method of ["add-difference", "train-difference", "multiply-difference", "similarity-add-difference", "sum-twice"] as const) {
    for (const isa of ["scalar", "avx2", "avx512"] as const) {
      for (const threads of [1, 2]) {
        for (const dtype of method === "add-difference" ? (["fp16", "fp8-e4m3", "fp8-e5m2"] as const) : (["fp16"] as const)) {
          it(`${method} → ${dtype} with isa=${isa}, threads=${threads} equals the TS engine with threads=${threads}`, async function () {
            const { capabilities } = await import("../../lib/native/binding");
            if (!capabilities().isas.includes(isa)) this.skip(); // the CPU lacks it: nothing to compare
            const js = join(dir.path, `ref-js-${method}-${threads}-${dtype}.safetensors`);
            const nat = join(dir.path, `ref-${method}-${isa}-${threads}-${dtype}.safetensors`);
            const params = method === "add-difference" || method === "train-difference" ? {} : { beta: 0.4 };
            await merge({ recipeMetadata: false, a, b, c, method, multiplier: 0.7, ...params, dtype, out: js, engine: "js", threads, overwrite: true });
            await merge({ recipeMetadata: false, a, b, c, method, multiplier: 0.7, ...params, dtype, out: nat, engine: "native", isa, threads });
            assertSameOutputs(js, nat);
          });
        }
      }
    }
  }
});
