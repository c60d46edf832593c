/**
 * The engines' side of per-tensor statistics: native and TS outputs bit-identical across threads,
 * window sizes (1 MiB windows cut through the tensors, so a piece's reductions run before its
 * first window and its writes span several), forced ISAs and TS worker threads; DARE masks the
 * same across runs, engines, threads and key order, different across same-shaped tensors, with a
 * drop fraction within 4σ; the k-th magnitude exact against a sort (fp16 inputs: many ties).
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { capabilities } from "../../../lib/native/binding";
import { merge } from "../../../lib/merge";
import { ENGINES, setEngineKnobs } from "../../helpers/engines";
import { decodeValues, encodeValues, randomValues, readModel, tempDir, writeModel, type TestTensor } from "../../helpers/models";

const BIG = "model.diffusion_model.middle_block.1.proj_in.weight";
const BIG2 = "model.diffusion_model.middle_block.1.proj_out.weight";
const HALF = "model.diffusion_model.out.2.weight";

/** Tensors over 1 MiB each (several windows), the same shape twice, an fp16 one with many ties. */
function writeBig(dir: string, m: number, order = [BIG, HALF, BIG2]): string {
  const tensors: Record<string, TestTensor> = {};
  const n = 300_001;
  for (const key of order) {
    if (key === HALF) tensors[key] = { dtype: "F16", shape: [513, 129], values: randomValues(513 * 129, 5 + m, m > 0).map((x) => (Number.isFinite(x) ? x : 0.01)) };
    else tensors[key] = { dtype: "F32", shape: [n], values: randomValues(n, (key === BIG ? 11 : 11) + 3 * m, true) };
  }
  const path = join(dir, `${order[0] === BIG ? "" : "reordered-"}${m === 0 ? "base" : `m${m}`}.safetensors`);
  writeModel(path, tensors);
  return path;
}

const bytesOf = (path: string) => readFileSync(path);

describe("many-model methods: engines, threads, windows and masks", function () {
  this.timeout(300000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  before(() => {
    dir = tempDir("tm-many-engines-");
    paths = [0, 1, 2, 3].map((m) => writeBig(dir.path, m));
  });
  after(() => dir.cleanup());

  const cases = [
    { method: "ties", params: { density: 0.25 }, modelWeights: [1, 0.8, 0.6] },
    { method: "dare-ties", params: { "drop-rate": 0.6, seed: 9 } },
    { method: "model-stock" },
  ];
  for (const c of cases) {
    it(`${c.method}: native at every ISA, threads 1/2, 1 MiB windows, equals the TS engine at threads 1 and 2`, async function () {
      const ref = join(dir.path, `${c.method}-js-1.safetensors`);
      await merge({ recipeMetadata: false, engine: "js", threads: 1, base: paths[0], models: paths.slice(1), out: ref, ...c } as never);
      const expected = bytesOf(ref);
      const js2 = join(dir.path, `${c.method}-js-2.safetensors`);
      await merge({ recipeMetadata: false, engine: "js", threads: 2, base: paths[0], models: paths.slice(1), out: js2, ...c } as never);
      assert.ok(bytesOf(js2).equals(expected), "TS threads=2");
      if (!ENGINES.includes("native")) return;
      for (const isa of ["scalar", "avx2", "avx512"] as const) {
        if (!capabilities().isas.includes(isa)) continue;
        for (const threads of [1, 2]) {
          for (const windowMib of [undefined, "1"]) {
            const restore = setEngineKnobs({ TENSORMERGE_WINDOW_MIB: windowMib });
            try {
              const out = join(dir.path, `${c.method}-${isa}-${threads}-${windowMib ?? "d"}.safetensors`);
              await merge({ recipeMetadata: false, engine: "native", isa, threads, base: paths[0], models: paths.slice(1), out, ...c } as never);
              assert.ok(bytesOf(out).equals(expected), `${isa} threads=${threads} window=${windowMib ?? "default"}`);
            } finally {
              restore();
            }
          }
        }
      }
    });
  }

  it("ties with 1, 2, 4 and 6 models (the task merge's unrolled model counts and its loop), by count, unnormalised: native at every ISA equals the TS engine", async function () {
    const more = [4, 5, 6].map((m) => writeBig(dir.path, m));
    const all = [...paths, ...more];
    const variants = [{}, { "sign-by-count": 1 }, { normalize: 0 }];
    for (const models of [1, 2, 4, 6]) {
      for (const [v, params] of variants.entries()) {
        const c = { method: "ties", params: { density: 0.3, ...params }, modelWeights: [1, 0.8, 0.6, 1.2, 0.5, 0.9].slice(0, models) };
        const ref = join(dir.path, `ties-n${models}-${v}-js.safetensors`);
        await merge({ recipeMetadata: false, engine: "js", threads: 1, base: all[0], models: all.slice(1, models + 1), out: ref, ...c } as never);
        const expected = bytesOf(ref);
        if (!ENGINES.includes("native")) continue;
        for (const isa of ["scalar", "avx2", "avx512"] as const) {
          if (!capabilities().isas.includes(isa)) continue;
          const out = join(dir.path, `ties-n${models}-${v}-${isa}.safetensors`);
          await merge({ recipeMetadata: false, engine: "native", isa, threads: 2, base: all[0], models: all.slice(1, models + 1), out, ...c } as never);
          assert.ok(bytesOf(out).equals(expected), `${models} models, variant ${v}, ${isa}`);
        }
      }
    }
  });

  it("slerp, slerp-mecha, add-cosine-a/b: native (threads 1/2, 1 MiB windows) equals TS bit for bit (the shared acos/sin, per-column sums)", async () => {
    for (const method of ["slerp", "slerp-mecha", "add-cosine-a", "add-cosine-b"] as const) {
      for (const t of [0.1, 0.5, 0.77, 1.3]) {
        const outs: Buffer[] = [];
        for (const engine of ENGINES) {
          for (const [threads, windowMib] of engine === "native" ? ([[1, undefined], [2, "1"]] as const) : ([[1, undefined]] as const)) {
            const restore = setEngineKnobs({ TENSORMERGE_WINDOW_MIB: windowMib });
            try {
              const out = join(dir.path, `${method}-${t}-${engine}-${threads}.safetensors`);
              await merge({ recipeMetadata: false, engine, threads, method, a: paths[0]!, b: paths[2]!, multiplier: t, dtype: "fp16", out });
              outs.push(bytesOf(out));
            } finally {
              restore();
            }
          }
        }
        assert.ok(outs.every((o) => o.equals(outs[0]!)), `${method} t=${t}`);
      }
    }
  });

  it("DARE masks do not depend on key order, and differ across same-shaped tensors", async () => {
    const reordered = [0, 1].map((m) => writeBig(dir.path, m, [HALF, BIG2, BIG]));
    const options = { method: "dare", params: { "drop-rate": 0.5, seed: 3 } };
    for (const engine of ENGINES) {
      const a = join(dir.path, `order-a-${engine}.safetensors`), b = join(dir.path, `order-b-${engine}.safetensors`);
      await merge({ recipeMetadata: false, engine, base: paths[0], models: [paths[1]], out: a, ...options } as never);
      await merge({ recipeMetadata: false, engine, base: reordered[0], models: [reordered[1]], out: b, ...options } as never);
      const ta = readModel(a).tensors, tb = readModel(b).tensors;
      for (const key of [BIG, BIG2, HALF]) assert.ok(Buffer.from(ta.get(key)!.bytes).equals(Buffer.from(tb.get(key)!.bytes)), `${engine} ${key}`);
      assert.deepEqual(readModel(b).order, [HALF, BIG2, BIG]);
    }
  });

  it("DARE drops each element with probability p (within 4σ per model and tensor), independently across models and same-shaped tensors", async () => {
    // Base 0, model 1 all ones, model 2 all twos, rescale off, weights 1, λ 1: r = k1 + 2·k2,
    // so each output element tells which of the two models kept it.
    const n = 200_000;
    const write = (name: string, value: number) => {
      const path = join(dir.path, name);
      writeModel(path, { [BIG]: { dtype: "F32", shape: [n], values: new Array<number>(n).fill(value) }, [BIG2]: { dtype: "F32", shape: [n], values: new Array<number>(n).fill(value) } });
      return path;
    };
    const base = write("zeros.safetensors", 0), ones = write("ones.safetensors", 1), twos = write("twos.safetensors", 2);
    for (const p of [0.1, 0.5, 0.9]) {
      const outs: Buffer[] = [];
      for (const engine of ENGINES) {
        const out = join(dir.path, `drop-${p}-${engine}.safetensors`);
        await merge({ recipeMetadata: false, engine, method: "dare", base, models: [ones, twos], params: { "drop-rate": p, rescale: 0, seed: 1234 }, out } as never);
        outs.push(bytesOf(out));
        const t = readModel(out).tensors;
        const masks = [BIG, BIG2].map((key) => {
          const r = t.get(key)!.values;
          assert.ok(r.every((v) => v === 0 || v === 1 || v === 2 || v === 3), `${engine} ${key}: values other than k1 + 2·k2`);
          return [r.map((v) => v & 1), r.map((v) => v >> 1)];
        });
        const tol = 4 * Math.sqrt((p * (1 - p)) / n);
        masks.forEach((pair, tensor) => pair.forEach((mask, model) => {
          const dropped = 1 - mask.reduce((s, k) => s + k, 0) / n;
          assert.ok(Math.abs(dropped - p) < tol, `${engine} p=${p} tensor ${tensor} model ${model + 1}: dropped ${dropped}, expected ${p} ± ${tol}`);
        }));
        // Independence: both kept with probability (1−p)², across models and across tensors.
        const both = (x: number[], y: number[]) => x.reduce((s, k, i) => s + (k & y[i]!), 0) / n;
        const q = (1 - p) ** 2, tolBoth = 4 * Math.sqrt((q * (1 - q)) / n);
        assert.ok(Math.abs(both(masks[0]![0]!, masks[0]![1]!) - q) < tolBoth, `${engine} p=${p}: models 1 and 2 not independent`);
        assert.ok(Math.abs(both(masks[0]![0]!, masks[1]![0]!) - q) < tolBoth, `${engine} p=${p}: same-shaped tensors share a mask`);
      }
      assert.ok(outs.every((o) => o.equals(outs[0]!)), `p=${p}: the engines' masks differ`);
    }
  });

  it("the k-th magnitude is exact: ties keeps exactly the elements with |δ| ≥ the k-th largest, ties at it included", async () => {
    // Base zeros: δ = M, and a single model with weight 1 keeps δ itself where it survives the trim.
    const n = 513 * 129;
    const zeros = join(dir.path, "kth-base.safetensors"), model = join(dir.path, "kth-model.safetensors");
    const values = randomValues(n, 99).map((x) => Math.round(x * 2000) / 2000); // fp16 values with many ties
    writeModel(zeros, { [HALF]: { dtype: "F16", shape: [513, 129], values: new Array(n).fill(0) }, [BIG]: { dtype: "F32", shape: [n], values: new Array(n).fill(0) } });
    writeModel(model, { [HALF]: { dtype: "F16", shape: [513, 129], values }, [BIG]: { dtype: "F32", shape: [n], values: randomValues(n, 7) } });
    const stored: Record<string, number[]> = { [HALF]: decodeValues("F16", encodeValues("F16", values)), [BIG]: decodeValues("F32", encodeValues("F32", randomValues(n, 7))) };
    for (const density of [1e-6, 0.001, 0.2, 0.5, 0.999]) {
      for (const engine of ENGINES) {
        const out = join(dir.path, `kth-${density}-${engine}.safetensors`);
        await merge({ recipeMetadata: false, engine, method: "ties", base: zeros, models: [model], params: { density }, out } as never);
        for (const key of [HALF, BIG]) {
          const got = readModel(out).tensors.get(key)!.values;
          const mags = stored[key]!.map(Math.abs).sort((p: number, q: number) => q - p);
          const k = Math.trunc(density * n);
          const threshold = k === 0 ? Infinity : mags[k - 1]!;
          const expected = stored[key]!.map((x: number) => (Math.abs(x) >= threshold ? x : 0));
          assert.deepEqual(got.map((x) => x + 0), expected.map((x) => x + 0), `${engine} density=${density} ${key}`);
          const kept = got.filter((x) => x !== 0).length, nonzero = stored[key]!.filter((x: number) => Math.abs(x) >= threshold && x !== 0).length;
          assert.equal(kept, nonzero);
          if (k > 0) assert.ok(kept >= Math.min(k, stored[key]!.filter((x: number) => x !== 0).length));
        }
      }
    }
  });
});
