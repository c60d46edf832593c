/**
 * bake on SD 1.x with kohya LoRAs (linear + LoCon 3×3), checked module by module against the
 * formula computed here: the fixed fp32 order bit for bit, double precision within rounding,
 * the names mapped by the tests' own kohya-direction mapping (fixtures.ts).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { bake } from "../../lib/lora/bake";
import { ENGINES, captureEngineStats, setOnlyTuningKnobs } from "../helpers/engines";
import { readModel, tempDir, type ReadTensor } from "../helpers/models";
import { addScaled, deltaF32, deltaF64, kohyaNameOfSd1, loraEntries, viaF16, writeBase, writeLora } from "./fixtures";

interface ModuleFactors { up: ReadTensor; down: ReadTensor; alpha?: number }

function modulesOf(path: string): Map<string, ModuleFactors> {
  const { tensors } = readModel(path);
  const out = new Map<string, ModuleFactors>();
  for (const [name, t] of tensors) {
    const m = /^(.*)\.lora_down\.weight$/.exec(name);
    if (!m) continue;
    const alpha = tensors.get(`${m[1]}.alpha`);
    out.set(m[1]!, { down: t, up: tensors.get(`${m[1]}.lora_up.weight`)!, ...(alpha ? { alpha: alpha.values[0]! } : {}) });
  }
  return out;
}

/** Expected fp32 values of every tensor the LoRAs change: key → values (LoRAs in order). */
function expectedBake(basePath: string, loras: { path: string; ratio: number; te: number }[], nameOf: (key: string) => string | undefined): { fp32: Map<string, Float32Array>; f64: Map<string, Float64Array> } {
  const base = readModel(basePath);
  const byName = new Map<string, string>();
  for (const key of base.tensors.keys()) {
    const n = nameOf(key);
    if (n) byName.set(n, key);
  }
  const fp32 = new Map<string, Float32Array>();
  const f64 = new Map<string, Float64Array>();
  for (const l of loras) {
    for (const [name, m] of modulesOf(l.path)) {
      const key = byName.get(name);
      assert.ok(key, `the test's mapping has no checkpoint key for ${name}`);
      const w = base.tensors.get(key)!;
      const rows = m.up.shape[0]!, rank = m.down.shape[0]!, cols = m.down.values.length / rank;
      assert.equal(rows * cols, w.values.length, `${name} → ${key}`);
      const c = (name.startsWith("lora_te") ? l.te : l.ratio) * (m.alpha ?? rank) / rank;
      fp32.set(key, addScaled(fp32.get(key) ?? Float32Array.from(w.values), deltaF32(m.up.values, m.down.values, rows, rank, cols), c));
      const d = deltaF64(m.up.values, m.down.values, rows, rank, cols);
      const prev = f64.get(key) ?? Float64Array.from(w.values);
      f64.set(key, prev.map((v, i) => v + c * d[i]!));
    }
  }
  return { fp32, f64 };
}

describe("lora: bake kohya LoRAs into SD 1.x", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-lora-sd-");
  const base = join(tmp.path, "sd15.safetensors");
  const lora = join(tmp.path, "kohya.safetensors");
  const locon = join(tmp.path, "locon.safetensors");
  before(async () => {
    await writeBase(base, "sd15", 32);
    writeLora(lora, loraEntries("lora_sd15_kohya_r32", 32), 11, () => 8);
    // LoCon with alphas that differ per module, and a few modules without alpha (scale 1)
    let k = 0;
    writeLora(locon, loraEntries("lora_sd15_locon_r16", 32), 23, () => (++k % 7 === 0 ? undefined : 1 + (k % 5)));
  });
  after(() => tmp.cleanup());

  for (const engine of ENGINES) {
    it(`every module lands on its tensor: W + ratio·alpha/rank·up·down, bit for bit in the fixed fp32 order (${engine})`, async () => {
      const out = join(tmp.fresh("kohya"), "out.safetensors");
      const report = await bake({ model: base, loras: [{ path: lora, ratio: 0.7 }], te: 0.5, out, engine, recipeMetadata: false });
      const { fp32, f64 } = expectedBake(base, [{ path: lora, ratio: 0.7, te: 0.35 }], kohyaNameOfSd1);
      assert.equal(fp32.size, 264); // 16 × 12 UNet + 12 × 6 text-encoder modules
      assert.equal(report.tensorsBaked, 264);
      assert.equal(report.loras[0]!.matched, 264);
      const got = readModel(out), orig = readModel(base);
      for (const [key, t] of got.tensors) {
        const want = fp32.get(key);
        if (!want) {
          assert.ok(Buffer.from(t.bytes).equals(Buffer.from(orig.tensors.get(key)!.bytes)), `${key} is not a LoRA target and must be copied as is`);
          continue;
        }
        assert.equal(t.dtype, "F32");
        const exact = f64.get(key)!;
        for (let i = 0; i < want.length; i++) {
          assert.ok(Object.is(t.values[i], want[i]), `${key}[${i}]: ${t.values[i]} ≠ ${want[i]}`);
          assert.ok(Math.abs(t.values[i]! - exact[i]!) <= 1e-6 * (Math.abs(exact[i]!) + 1e-3), `${key}[${i}] is far from the double-precision value`);
        }
      }
    });

    it(`LoCon (3×3 convs, per-module alpha, no alpha = scale 1) and a second LoRA in a row, into fp16: adds in fp32, rounds once (${engine})`, async () => {
      const out = join(tmp.fresh("locon"), "out.safetensors");
      const report = await bake({ model: base, loras: [{ path: locon, ratio: 0.6 }, { path: lora, ratio: -0.4, te: 0.25 }], dtype: "fp16", out, engine, recipeMetadata: false });
      const { fp32 } = expectedBake(base, [{ path: locon, ratio: 0.6, te: 0.6 }, { path: lora, ratio: -0.4, te: 0.25 }], kohyaNameOfSd1);
      assert.equal(report.loras[0]!.matched, 350);
      const got = readModel(out);
      let convs = 0;
      for (const [key, want] of fp32) {
        const t = got.tensors.get(key)!;
        assert.equal(t.dtype, "F16");
        if (t.shape.length === 4 && t.shape[2] === 3) convs++;
        for (let i = 0; i < want.length; i++) assert.ok(Object.is(t.values[i], viaF16(want[i]!)), `${key}[${i}]: ${t.values[i]} ≠ fp16(${want[i]})`);
      }
      assert.ok(convs >= 40, `3×3 convs checked: ${convs}`);
    });
  }

  it("native and TS engines write the same bytes (threads 1 and 2, scalar and auto kernels, fp16 / bf16 / fp8)", async function () {
    if (ENGINES.length < 2) this.skip();
    for (const dtype of ["fp16", "bf16", "fp8-e4m3"] as const) {
      const outs: Buffer[] = [];
      for (const [engine, threads, isa] of [["js", 1, "auto"], ["js", 2, "auto"], ["native", 1, "scalar"], ["native", 2, "auto"]] as const) {
        const out = join(tmp.fresh(`parity-${dtype}`), "out.safetensors");
        await bake({ model: base, loras: [{ path: locon, ratio: 0.9 }, { path: lora, ratio: 0.3 }], dtype, out, engine, threads, isa, recipeMetadata: false });
        outs.push((await import("node:fs")).readFileSync(out));
      }
      for (let i = 1; i < outs.length; i++) assert.ok(outs[i]!.equals(outs[0]!), `${dtype}: output ${i} differs from the first`);
    }
  });

  it("native: the same bytes whatever the number of output windows in flight (TENSORMERGE_OUTPUT_BUFFERS) and their size", async function () {
    if (!ENGINES.includes("native")) this.skip();
    const stats = captureEngineStats();
    const outs: Buffer[] = [];
    const seen: number[] = [];
    stats.install();
    try {
      // Ramp windows (TENSORMERGE_RAMP_KIB): the first and last windows from 8 or 12 KiB up, so window
      // boundaries fall inside the LoRA-updated tensors at many more places.
      for (const [buffers, windowMib, threads, ramp] of [[undefined, undefined, 2, undefined], ["3", "1", 2, "0"], ["5", "1", 1, "12"], ["2", "1", 2, "8"], ["2", undefined, 2, "0"]] as const) {
        const restore = setOnlyTuningKnobs({ TENSORMERGE_OUTPUT_BUFFERS: buffers, TENSORMERGE_WINDOW_MIB: windowMib, TENSORMERGE_RAMP_KIB: ramp });
        try {
          const out = join(tmp.fresh("buffers"), "out.safetensors");
          await bake({ model: base, loras: [{ path: locon, ratio: 0.9 }, { path: lora, ratio: 0.3 }], dtype: "fp16", out, engine: "native", threads, recipeMetadata: false });
          outs.push(readFileSync(out));
          seen.push(stats.last()!.outputBuffers!);
          if (windowMib) assert.ok(stats.last()!.windows! >= 3, `${windowMib} MiB windows: ${stats.last()!.windows} windows, the case needs several`);
        } finally {
          restore();
        }
      }
    } finally {
      stats.restore();
    }
    assert.deepEqual(seen, [2, 3, 5, 2, 2]);
    for (let i = 1; i < outs.length; i++) assert.ok(outs[i]!.equals(outs[0]!), `run ${i} differs from the default`);
  });
});
