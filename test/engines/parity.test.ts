/**
 * Native vs TS engine: bit-identical outputs over random models whose tensor lengths sit around
 * vector widths, every input dtype pair, every output dtype and every method, with special
 * values (NaN, ±Inf, subnormals, fp16 overflow) and misaligned data offsets. Every SIMD kernel
 * set the CPU supports is compared, plus a forced scalar run and thread counts 1 and 2.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { METHODS } from "../../lib/methods/registry";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";

const LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000, 4099];
const FLOATS = ["F32", "F16", "BF16", "F64"] as const;

function buildModel(path: string, seed: number, role: "a" | "b"): void {
  const tensors: Record<string, TestTensor> = { "odd.u8": { dtype: "U8", shape: [3], raw: new Uint8Array([1, 2, 3]) } };
  let s = seed;
  for (const da of FLOATS) {
    for (const db of FLOATS) {
      for (const n of LENGTHS) {
        tensors[`t.${da}.${db}.${n}.weight`] = { dtype: role === "a" ? da : db, shape: [n], values: randomValues(n, s++, true) };
      }
    }
  }
  tensors["position_ids"] = { dtype: "I64", shape: [1, 5], values: [0, 1, 2, 3, 4] };
  writeModel(path, tensors);
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
    for (const dtype of ["same", "fp16", "bf16", "fp32"] as const) {
      it(`${method.name} → ${dtype}`, async () => {
        const js = join(dir.path, `${method.name}-${dtype}-js.safetensors`);
        const nat = join(dir.path, `${method.name}-${dtype}-native.safetensors`);
        await merge({ recipeMetadata: false, a, b, c, method: method.name as never, multiplier: 0.3, dtype, out: js, engine: "js" });
        await merge({ recipeMetadata: false, a, b, c, method: method.name as never, multiplier: 0.3, dtype, out: nat, engine: "native" });
        const x = readFileSync(js), y = readFileSync(nat);
        assert.equal(x.length, y.length);
        const at = x.findIndex((v, i) => v !== y[i]);
        assert.equal(at, -1, `first differing byte at ${at}`);
      });
    }
  }

  for (const method of ["add-difference", "train-difference", "multiply-difference", "similarity-add-difference", "sum-twice"] as const) {
    for (const isa of ["scalar", "avx2", "avx512"] as const) {
      for (const threads of [1, 2]) {
        it(`${method} → fp16 with isa=${isa}, threads=${threads} equals the TS engine`, async function () {
          const { capabilities } = await import("../../lib/native/binding");
          if (!capabilities().isas.includes(isa)) this.skip(); // the CPU lacks it: nothing to compare
          const js = join(dir.path, `ref-js-${method}.safetensors`);
          const nat = join(dir.path, `ref-${method}-${isa}-${threads}.safetensors`);
          const params = method === "add-difference" || method === "train-difference" ? {} : { beta: 0.4 };
          await merge({ recipeMetadata: false, a, b, c, method, multiplier: 0.7, ...params, dtype: "fp16", out: js, engine: "js", overwrite: true });
          await merge({ recipeMetadata: false, a, b, c, method, multiplier: 0.7, ...params, dtype: "fp16", out: nat, engine: "native", isa, threads });
          assert.ok(readFileSync(js).equals(readFileSync(nat)));
        });
      }
    }
  }
});
