/**
 * Defensive reading and refusals: malformed LoRA files, LoRAs that do not fit the model, and
 * the low-rank operand's checks in the native core (job.cc) before any pointer arithmetic.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DTYPE_ID } from "../../lib/dtypes";
import { newControl, runJob } from "../../lib/engine";
import { MergeError } from "../../lib/errors";
import { bake } from "../../lib/lora/bake";
import { openLora } from "../../lib/lora/read";
import { KERNEL_ID, type Job, type Operand } from "../../lib/native/job";
import { ENGINES } from "../helpers/engines";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";
import { writeBase } from "./fixtures";

async function rejects(p: Promise<unknown>, code: string, check?: (e: MergeError) => void): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof MergeError, String(e));
    assert.equal(e.code, code, e.message);
    check?.(e);
    return true;
  });
}

const TO_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";

describe("lora: defensive reading and refusals", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-lora-bad-");
  const base = join(tmp.path, "sd15.safetensors");
  let toK: number[] = []; // [rows, cols] of the target of TO_K in the shrunk model
  before(async () => {
    await writeBase(base, "sd15", 32);
    toK = readModel(base).tensors.get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")!.shape;
  });
  after(() => tmp.cleanup());

  const lora = (name: string, tensors: Record<string, TestTensor>): string => {
    const p = join(tmp.path, `${name}.safetensors`);
    writeModel(p, tensors);
    return p;
  };
  const f16 = (shape: number[], seed = 1): TestTensor => ({ dtype: "F16", shape, values: randomValues(shape.reduce((a, b) => a * b, 1), seed) });
  const out = () => join(tmp.fresh("out"), "out.safetensors");

  it("rank mismatch between up and down: LORA_INVALID naming the file and the tensor", async () => {
    const p = lora("rank", { [`${TO_K}.lora_down.weight`]: f16([3, toK[1]!]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) });
    await rejects(openLora(p), "LORA_INVALID", (e) => {
      assert.equal(e.path, p);
      assert.equal(e.tensor, `${TO_K}.lora_up.weight`);
    });
  });

  it("an up without its down, a 3-D down, a NaN alpha, a non-float factor: LORA_INVALID", async () => {
    await rejects(openLora(lora("noup", { [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) })), "LORA_INVALID");
    await rejects(openLora(lora("3d", { [`${TO_K}.lora_down.weight`]: f16([4, toK[1]!, 2]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) })), "LORA_INVALID");
    await rejects(openLora(lora("nan", { [`${TO_K}.lora_down.weight`]: f16([4, toK[1]!]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]), [`${TO_K}.alpha`]: { dtype: "F32", shape: [], values: [NaN] } })), "LORA_INVALID", (e) => assert.equal(e.tensor, `${TO_K}.alpha`));
    await rejects(openLora(lora("int", { [`${TO_K}.lora_down.weight`]: { dtype: "I32", shape: [4, toK[1]!] }, [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) })), "LORA_INVALID");
  });

  it("a truncated LoRA file: FILE_TRUNCATED naming it", async () => {
    const p = lora("trunc", { [`${TO_K}.lora_down.weight`]: f16([4, toK[1]!]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) });
    truncateSync(p, readFileSync(p).length - 10);
    await rejects(openLora(p), "FILE_TRUNCATED", (e) => assert.equal(e.path, p));
    const o = out();
    await rejects(bake({ model: base, loras: [p], out: o, recipeMetadata: false }), "FILE_TRUNCATED");
    assert.ok(!existsSync(o));
  });

  it("a module whose ΔW does not fit its tensor: SHAPE_MISMATCH naming the LoRA and the tensor; nothing written", async () => {
    const p = lora("shape", { [`${TO_K}.lora_down.weight`]: f16([4, toK[1]! + 1]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) });
    const o = out();
    await rejects(bake({ model: base, loras: [p], out: o, recipeMetadata: false }), "SHAPE_MISMATCH", (e) => {
      assert.equal(e.path, p);
      assert.equal(e.tensor, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight");
    });
    assert.ok(!existsSync(o));
  });

  it("a LoRA for another architecture (SDXL te1/te2 names, FLUX blocks): ARCHITECTURE_MISMATCH before writing", async () => {
    const xl = lora("xl", { "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": f16([4, 8]), "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": f16([8, 4]) });
    const flux = lora("flux", { "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": f16([4, 8]), "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": f16([24, 4]) });
    for (const p of [xl, flux]) {
      const o = out();
      await rejects(bake({ model: base, loras: [p], out: o, recipeMetadata: false }), "ARCHITECTURE_MISMATCH", (e) => assert.equal(e.path, p));
      assert.ok(!existsSync(o));
    }
  });

  it("modules that match nothing: refused above 10% (LORA_MISMATCH), reported below", async () => {
    const t: Record<string, TestTensor> = { [`${TO_K}.lora_down.weight`]: f16([4, toK[1]!]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]) };
    t["lora_unet_nothing_here.lora_down.weight"] = f16([4, 8]);
    t["lora_unet_nothing_here.lora_up.weight"] = f16([8, 4]);
    await rejects(bake({ model: base, loras: [lora("unmatched", t)], out: out(), recipeMetadata: false }), "LORA_MISMATCH");
    // 1 of 11 modules unmatched (9%): baked, with a warning naming it
    for (const layer of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) {
      const rows = readModel(base).tensors.get(`cond_stage_model.transformer.text_model.encoder.layers.${layer}.mlp.fc1.weight`)!.shape;
      t[`lora_te_text_model_encoder_layers_${layer}_mlp_fc1.lora_down.weight`] = f16([2, rows[1]!], layer);
      t[`lora_te_text_model_encoder_layers_${layer}_mlp_fc1.lora_up.weight`] = f16([rows[0]!, 2], layer + 50);
    }
    delete t[`${TO_K}.lora_down.weight`];
    delete t[`${TO_K}.lora_up.weight`];
    const r = await bake({ model: base, loras: [lora("mostly", t)], out: out(), recipeMetadata: false });
    assert.equal(r.loras[0]!.matched, 10);
    assert.deepEqual(r.loras[0]!.unmatched, ["lora_unet_nothing_here"]);
    assert.match(r.warnings[0]!, /lora_unet_nothing_here/);
  });

  it("a Tucker core that does not fit its factors, a lokr_t2 beside a full lokr_w2, a LoKr rank mismatch: LORA_INVALID on reading; DoRA refused for baking", async () => {
    // LyCORIS Tucker LoKr: w2_a [r, out2], w2_b [r, in2], t2 [r, r, kh, kw]; here t2 has 3 rows for r = 2
    await rejects(openLora(lora("lokr-t2", { [`${TO_K}.lokr_w1`]: f16([2, 2]), [`${TO_K}.lokr_w2_a`]: f16([2, toK[0]! / 2]), [`${TO_K}.lokr_w2_b`]: f16([2, toK[1]! / 2]), [`${TO_K}.lokr_t2`]: f16([3, 2, 1, 1]) })), "LORA_INVALID");
    await rejects(openLora(lora("lokr-t2-full", { [`${TO_K}.lokr_w1`]: f16([2, 2]), [`${TO_K}.lokr_w2`]: f16([toK[0]! / 2, toK[1]! / 2]), [`${TO_K}.lokr_w2_a`]: f16([2, toK[0]! / 2]), [`${TO_K}.lokr_w2_b`]: f16([2, toK[1]! / 2]), [`${TO_K}.lokr_t2`]: f16([2, 2, 1, 1]) })), "LORA_INVALID");
    await rejects(openLora(lora("lokr-rank", { [`${TO_K}.lokr_w1`]: f16([2, 2]), [`${TO_K}.lokr_w2_a`]: f16([toK[0]! / 2, 2]), [`${TO_K}.lokr_w2_b`]: f16([3, toK[1]! / 2]) })), "LORA_INVALID");
    const conv = "lora_unet_down_blocks_0_resnets_0_conv1";
    const w = readModel(base).tensors.get("model.diffusion_model.input_blocks.1.0.in_layers.2.weight")!.shape;
    // lora_mid [r_up, r_down, kh, kw]: [4, 5] does not fit up rank 4 / down rank 4
    await rejects(openLora(lora("tucker-bad", { [`${conv}.lora_down.weight`]: f16([4, w[1]!, 1, 1]), [`${conv}.lora_mid.weight`]: f16([4, 5, 3, 3]), [`${conv}.lora_up.weight`]: f16([w[0]!, 4, 1, 1]) })), "LORA_INVALID");
    // with a Tucker core the down factor is [r, in] or [r, in, 1, 1], not a 3×3 kernel
    await rejects(openLora(lora("tucker-3x3-down", { [`${conv}.lora_down.weight`]: f16([4, w[1]!, 3, 3]), [`${conv}.lora_mid.weight`]: f16([4, 4, 3, 3]), [`${conv}.lora_up.weight`]: f16([w[0]!, 4, 1, 1]) })), "LORA_INVALID");
    // LoHa Tucker: hada_t1 [r, r, kh, kw] with hada_w1_a [r, out]; a core of the wrong rank
    await rejects(openLora(lora("loha-t1", { [`${conv}.hada_w1_a`]: f16([4, w[0]!]), [`${conv}.hada_w1_b`]: f16([4, w[1]!]), [`${conv}.hada_t1`]: f16([4, 3, 3, 3]), [`${conv}.hada_w2_a`]: f16([4, w[0]!]), [`${conv}.hada_w2_b`]: f16([4, w[1]!]), [`${conv}.hada_t2`]: f16([4, 4, 3, 3]) })), "LORA_INVALID");
    const dora = lora("dora", { [`${TO_K}.lora_down.weight`]: f16([4, toK[1]!]), [`${TO_K}.lora_up.weight`]: f16([toK[0]!, 4]), [`${TO_K}.dora_scale`]: f16([1, toK[1]!]) });
    await rejects(bake({ model: base, loras: [dora], out: out(), recipeMetadata: false }), "LORA_INVALID");
  });

  describe("the low-rank operand in the job contract", () => {
    // A factor file: up [2, 3] then down [3, 3], F32, no header (the job addresses bytes).
    const factors = join(tmp.path, "factors.bin");
    const up = [1e8, 1, -1e8, 3, 4, 0.5];
    const down = [1, 0, -1, 1, 0.25, 2, 1, 2, 0.5];
    before(() => writeFileSync(factors, Buffer.from(new Float32Array([...up, ...down]).buffer)));
    const job = (patch: (lr: Extract<Operand, { kind: "lowrank" }>) => void = () => undefined, source?: Operand): Job => {
      const lr: Extract<Operand, { kind: "lowrank" }> = { kind: "lowrank", rows: 2, cols: 3, rank: 3, up: { file: 0, offset: 0, dtype: DTYPE_ID.F32 }, down: { file: 0, offset: 24, dtype: DTYPE_ID.F32 } };
      patch(lr);
      return {
        inputs: [{ path: factors, size: 60 }],
        outputs: [{ path: join(tmp.fresh("job"), "out.bin"), size: 24, literals: [] }],
        pieces: [{ name: "t", n: 6, ops: [{ kernel: KERNEL_ID["weighted-sum"], args: [{ kind: "input", file: 0, offset: 36, dtype: DTYPE_ID.F32 }, lr], params: [0, 1], round: DTYPE_ID.F32 }], writes: [{ output: 0, offset: 0, dtype: DTYPE_ID.F32, source: source ?? { kind: "op", index: 0 } }] }],
        threads: 1, isa: "auto", control: newControl(24),
      };
    };
    for (const engine of ENGINES) {
      it(`element i is Σ_r up[row, r]·down[r, col] summed in ascending r, one fp32 rounding each (${engine})`, async () => {
        const j = job();
        await runJob(j, engine);
        const bytes = readFileSync(j.outputs[0]!.path);
        const got = Array.from({ length: 6 }, (_, i) => bytes.readFloatLE(4 * i));
        // row 0: fp32(1e8·1 + 1·1) = 1e8, then − 1e8 → 0 (any other order gives 1); col 1: 0 + 0.25 − 2e8 …
        const f = Math.fround;
        const want = [0, 1, 2].map((c) => f(f(f(up[0]! * down[c]!) + f(up[1]! * down[3 + c]!)) + f(up[2]! * down[6 + c]!)))
          .concat([0, 1, 2].map((c) => f(f(f(up[3]! * down[c]!) + f(up[4]! * down[3 + c]!)) + f(up[5]! * down[6 + c]!))));
        assert.equal(want[0], 0);
        assert.deepEqual(got, want);
      });
    }
    const kronJob = (patch: (k: Extract<Operand, { kind: "kronecker" }>) => void = () => undefined): Job => {
      const j = job();
      const k: Extract<Operand, { kind: "kronecker" }> = {
        kind: "kronecker", rows: 2, cols: 3, kernel: 1, rowStart: 0,
        a: { rows: 1, cols: 1, full: { file: 0, offset: 16, dtype: DTYPE_ID.F32 } }, // 4
        b: { rows: 2, cols: 3, full: { file: 0, offset: 24, dtype: DTYPE_ID.F32 } }, // down[0..5]
      };
      patch(k);
      j.pieces[0]!.ops[0]!.args[1] = k;
      return j;
    };
    for (const engine of ENGINES) {
      it(`a Kronecker operand: A ⊗ B element by element, factors full or low-rank (${engine})`, async () => {
        const j = kronJob();
        await runJob(j, engine);
        const bytes = readFileSync(j.outputs[0]!.path);
        assert.deepEqual(Array.from({ length: 6 }, (_, i) => bytes.readFloatLE(4 * i)), [4, 0, -4, 4, 1, 8]);
        // a as the product up[0, :] · down (rank 3, [1, 3] · [3, 1] → one value): b's row 1 needs rowStart
        const k = kronJob((x) => { x.rows = 1; x.rowStart = 1; x.a = { rows: 1, cols: 1, product: { rank: 1, up: { file: 0, offset: 12, dtype: DTYPE_ID.F32 }, down: { file: 0, offset: 12, dtype: DTYPE_ID.F32 } } }; });
        k.pieces[0]!.n = 3;
        k.pieces[0]!.ops[0]!.args[0] = { kind: "input", file: 0, offset: 36, dtype: DTYPE_ID.F32 };
        k.outputs[0]!.size = 12;
        await runJob(k, engine);
        const b2 = readFileSync(k.outputs[0]!.path);
        assert.deepEqual(Array.from({ length: 3 }, (_, i) => b2.readFloatLE(4 * i)), [9, 2.25, 18]); // 3·3 × down[3..5]
      });
    }
    it("the native core re-checks a Kronecker operand's shape and factors", async function () {
      if (!ENGINES.includes("native")) this.skip();
      await rejects(runJob(kronJob((k) => { k.b.full!.offset = 48; }), "native"), "INVALID_OFFSET");
      await rejects(runJob(kronJob((k) => { k.cols = 2; }), "native"), "SHAPE_MISMATCH");
      await rejects(runJob(kronJob((k) => { k.rowStart = 1; }), "native"), "SHAPE_MISMATCH");
      await rejects(runJob(kronJob((k) => { k.kernel = 2; }), "native"), "SHAPE_MISMATCH");
      await rejects(runJob(kronJob((k) => { k.a.full!.dtype = DTYPE_ID.I32; }), "native"), "DTYPE_UNSUPPORTED");
    });
    it("long rows (3 × 3000, rank 5 and 4 + 1) cut in chunks and blocks: both engines give the fixed-order values", async () => {
      const rows = 3, cols = 3000, rank = 5;
      const up = randomValues(rows * rank, 5).map(Math.fround), down = randomValues(rank * cols, 6).map(Math.fround);
      const file = join(tmp.path, "long.bin");
      writeFileSync(file, Buffer.from(new Float32Array([...up, ...down]).buffer));
      const f = Math.fround;
      const want = Array.from({ length: rows * cols }, (_, i) => {
        const row = Math.floor(i / cols), col = i % cols;
        let acc = f(up[row * rank]! * down[col]!);
        for (let r = 1; r < rank; r++) acc = f(acc + f(up[row * rank + r]! * down[r * cols + col]!));
        return acc;
      });
      for (const engine of ENGINES) {
        const j: Job = {
          inputs: [{ path: file, size: 4 * (up.length + down.length) }],
          outputs: [{ path: join(tmp.fresh("long"), "out.bin"), size: 4 * rows * cols, literals: [] }],
          pieces: [{ name: "long", n: rows * cols, ops: [{ kernel: KERNEL_ID["weighted-sum"], args: [{ kind: "input", file: 0, offset: 0, dtype: DTYPE_ID.F32 }, { kind: "lowrank", rows, cols, rank, up: { file: 0, offset: 0, dtype: DTYPE_ID.F32 }, down: { file: 0, offset: 4 * up.length, dtype: DTYPE_ID.F32 } }], params: [0, 1], round: DTYPE_ID.F32 }], writes: [{ output: 0, offset: 0, dtype: DTYPE_ID.F32, source: { kind: "op", index: 0 } }] }],
          threads: 2, isa: "auto", control: newControl(4 * rows * cols),
        };
        await runJob(j, engine);
        const bytes = readFileSync(j.outputs[0]!.path);
        for (let i = 0; i < want.length; i++) assert.ok(Object.is(bytes.readFloatLE(4 * i), want[i]), `${engine} [${i}]`);
      }
    });
    it("the native core re-checks every factor before reading it (out of the file, wrong shape, rank 0, as a write source)", async function () {
      if (!ENGINES.includes("native")) this.skip();
      await rejects(runJob(job((lr) => { lr.down.offset = 40; }), "native"), "INVALID_OFFSET");
      await rejects(runJob(job((lr) => { lr.up.offset = 2 ** 53 - 8; }), "native"), "INVALID_OFFSET");
      await rejects(runJob(job((lr) => { lr.rows = 3; }), "native"), "SHAPE_MISMATCH");
      await rejects(runJob(job((lr) => { lr.rank = 0; }), "native"), "SHAPE_INVALID");
      await rejects(runJob(job((lr) => { lr.up.file = 1; }), "native"), "INVALID_ARGUMENT");
      await rejects(runJob(job((lr) => { lr.up.dtype = DTYPE_ID.I64; }), "native"), "DTYPE_UNSUPPORTED");
      await rejects(runJob(job((lr) => { lr.hadamard = { rank: 3, up: lr.up, down: { ...lr.down, offset: 50 } }; }), "native"), "INVALID_OFFSET");
      const bad = job();
      await rejects(runJob(job(undefined, bad.pieces[0]!.ops[0]!.args[1]!), "native"), "INVALID_ARGUMENT");
    });
  });
});
