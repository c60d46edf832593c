/**
 * bake across naming schemes and architectures, each module's target written out by hand here:
 * SD 2.x (OpenCLIP q/k/v as row slices of one in_proj_weight), SDXL (kohya SGM names, both text
 * encoders), PEFT / diffusers names, LyCORIS LoHa, FLUX (kohya BFL names and ai-toolkit's
 * diffusers names, q/k/v and the MLP as row slices of qkv / linear1).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { bake } from "../../lib/lora/bake";
import { ENGINES } from "../helpers/engines";
import { bf16FromF32, randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";
import { addScaled, deltaF32, loraEntries, viaF16, writeBase, writeLora } from "./fixtures";

/** One module of a hand-made LoRA: its factors (values kept for the expectation) and where it must land. */
interface Spec {
  key: string;
  rowStart: number;
  rows: number;
  cols: number;
  rank: number;
  up: number[];
  down: number[];
  /** LoHa's second product. */
  up2?: number[];
  down2?: number[];
  c: number;
}

let seed = 100;
const values = (n: number) => randomValues(n, ++seed);

/** Adds a kohya/PEFT/diffusers module (names given) to `tensors` and returns its spec. */
function addModule(tensors: Record<string, TestTensor>, names: { up: string; down: string; alpha?: string }, key: string, shape: number[], rank: number, slice: [number, number] | undefined, ratio: number, alpha?: number, kernel: number[] = []): Spec {
  const [rowStart, rows] = slice ?? [0, shape[0]!];
  const cols = shape.slice(1).reduce((a, b) => a * b, 1);
  const up = values(rows * rank), down = values(rank * cols);
  tensors[names.up] = { dtype: "F16", shape: [rows, rank], values: up };
  tensors[names.down] = { dtype: "F16", shape: kernel.length ? [rank, cols / (kernel[0]! * kernel[1]!), ...kernel] : [rank, cols], values: down };
  if (names.alpha && alpha !== undefined) tensors[names.alpha] = { dtype: "F16", shape: [], values: [alpha] };
  return { key, rowStart, rows, cols, rank, up: up.map(f16), down: down.map(f16), c: ratio * (alpha ?? rank) / rank };
}

function f16(x: number): number {
  return viaF16(x);
}

/** Compares the output with the specs (rows of each key), and every other tensor with the base. */
function check(basePath: string, outPath: string, specs: Spec[], round: (x: number) => number = (x) => x): void {
  const base = readModel(basePath), out = readModel(outPath);
  const expected = new Map<string, Float32Array>();
  for (const s of specs) {
    const w = expected.get(s.key) ?? Float32Array.from(base.tensors.get(s.key)!.values);
    let delta = deltaF32(s.up, s.down, s.rows, s.rank, s.cols);
    if (s.up2) {
      const q = deltaF32(s.up2, s.down2!, s.rows, s.rank, s.cols);
      delta = delta.map((p, i) => Math.fround(p * q[i]!));
    }
    const slice = w.subarray(s.rowStart * s.cols, (s.rowStart + s.rows) * s.cols);
    slice.set(addScaled(slice, delta, s.c));
    expected.set(s.key, w);
  }
  for (const [key, t] of out.tensors) {
    const want = expected.get(key);
    if (!want) {
      assert.ok(Buffer.from(t.bytes).equals(Buffer.from(base.tensors.get(key)!.bytes)), `${key} must be copied as is`);
      continue;
    }
    for (let i = 0; i < want.length; i++) assert.ok(Object.is(t.values[i], round(want[i]!)), `${key}[${i}]: ${t.values[i]} ≠ ${round(want[i]!)}`);
  }
  for (const key of expected.keys()) assert.ok(out.tensors.has(key), key);
}

const bf16Value = (x: number) => {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, bf16FromF32(x) << 16, true);
  return dv.getFloat32(0, true);
};

describe("lora: bake formats and architectures", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-lora-fmt-");
  after(() => tmp.cleanup());

  describe("SD 2.x: OpenCLIP q/k/v are row slices of in_proj_weight", () => {
    const base = join(tmp.path, "sd21.safetensors");
    const lora = join(tmp.path, "sd21-lora.safetensors");
    const specs: Spec[] = [];
    before(async () => {
      await writeBase(base, "sd21", 32);
      const shapes = readModel(base).tensors;
      const t: Record<string, TestTensor> = {};
      const te = (layer: number, part: string) => `lora_te_text_model_encoder_layers_${layer}_${part}`;
      const kohya = (n: string) => ({ up: `${n}.lora_up.weight`, down: `${n}.lora_down.weight`, alpha: `${n}.alpha` });
      const rp = (l: number, k: string) => `cond_stage_model.model.transformer.resblocks.${l}.${k}`;
      const inProj = shapes.get(rp(0, "attn.in_proj_weight"))!.shape; // [3d, d]
      const d = inProj[1]!;
      assert.equal(inProj[0], 3 * d);
      for (const layer of [0, 5]) {
        ["q", "k", "v"].forEach((x, i) => specs.push(addModule(t, kohya(te(layer, `self_attn_${x}_proj`)), rp(layer, "attn.in_proj_weight"), inProj, 4, [i * d, d], 0.8, 2)));
        specs.push(addModule(t, kohya(te(layer, "self_attn_out_proj")), rp(layer, "attn.out_proj.weight"), shapes.get(rp(layer, "attn.out_proj.weight"))!.shape, 4, undefined, 0.8, 2));
        specs.push(addModule(t, kohya(te(layer, "mlp_fc1")), rp(layer, "mlp.c_fc.weight"), shapes.get(rp(layer, "mlp.c_fc.weight"))!.shape, 4, undefined, 0.8, 2));
        specs.push(addModule(t, kohya(te(layer, "mlp_fc2")), rp(layer, "mlp.c_proj.weight"), shapes.get(rp(layer, "mlp.c_proj.weight"))!.shape, 4, undefined, 0.8, 2));
      }
      const u = (k: string) => `model.diffusion_model.${k}`;
      specs.push(addModule(t, kohya("lora_unet_down_blocks_0_attentions_0_proj_in"), u("input_blocks.1.1.proj_in.weight"), shapes.get(u("input_blocks.1.1.proj_in.weight"))!.shape, 4, undefined, 1.5, 4));
      const up = shapes.get(u("output_blocks.2.1.conv.weight"))!.shape;
      specs.push(addModule(t, kohya("lora_unet_up_blocks_0_upsamplers_0_conv"), u("output_blocks.2.1.conv.weight"), up, 4, undefined, 1.5, 4, [3, 3]));
      const res = shapes.get(u("middle_block.2.out_layers.3.weight"))!.shape;
      specs.push(addModule(t, kohya("lora_unet_mid_block_resnets_1_conv2"), u("middle_block.2.out_layers.3.weight"), res, 4, undefined, 1.5, 4, [3, 3]));
      // a text-encoder ratio of 0.8 for the text modules, 1.5 for the UNet ones
      writeModel(lora, t);
    });
    for (const engine of ENGINES) {
      it(`q, k and v land on their thirds of in_proj_weight; out_proj, c_fc, c_proj, UNet linears and 3×3 convs on theirs (${engine})`, async () => {
        const out = join(tmp.fresh("sd21"), "out.safetensors");
        const r = await bake({ model: base, loras: [{ path: lora, ratio: 1.5, te: 0.8 }], out, engine, recipeMetadata: false });
        assert.equal(r.loras[0]!.matched, specs.length);
        check(base, out, specs);
      });
    }
  });

  describe("SDXL: kohya SGM names, lora_te1 (CLIP-L) and lora_te2 (OpenCLIP bigG in_proj slices)", () => {
    const base = join(tmp.path, "sdxl.safetensors");
    const lora = join(tmp.path, "sdxl-lora.safetensors");
    before(async () => {
      await writeBase(base, "sdxl", 32);
      writeLora(lora, loraEntries("lora_sdxl_kohya_r32", 32), 5, () => 16);
    });
    for (const engine of ENGINES) {
      it(`all 986 modules match; spot checks on the UNet, te1 and te2's q/k/v thirds, all in fp16 (${engine})`, async () => {
        const out = join(tmp.fresh("sdxl"), "out.safetensors");
        const r = await bake({ model: base, loras: [{ path: lora, ratio: 0.5 }], out, engine, recipeMetadata: false });
        assert.equal(r.loras[0]!.modules, 986);
        assert.equal(r.loras[0]!.matched, 986);
        const l = readModel(lora).tensors;
        const spec = (name: string, key: string, slice?: [number, number]): Spec => {
          const up = l.get(`${name}.lora_up.weight`)!, down = l.get(`${name}.lora_down.weight`)!;
          const rank = down.shape[0]!;
          return { key, rowStart: slice?.[0] ?? 0, rows: up.shape[0]!, cols: down.values.length / rank, rank, up: up.values, down: down.values, c: 0.5 * 16 / rank };
        };
        const bigG = "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight";
        const base16 = readModel(base).tensors, out16 = readModel(out).tensors;
        const d = base16.get(bigG)!.shape[1]!;
        const specs = [
          spec("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"),
          spec("lora_unet_output_blocks_5_1_proj_out", "model.diffusion_model.output_blocks.5.1.proj_out.weight"),
          spec("lora_te1_text_model_encoder_layers_2_mlp_fc2", "conditioner.embedders.0.transformer.text_model.encoder.layers.2.mlp.fc2.weight"),
          spec("lora_te2_text_model_encoder_layers_3_self_attn_q_proj", bigG, [0, d]),
          spec("lora_te2_text_model_encoder_layers_3_self_attn_k_proj", bigG, [d, d]),
          spec("lora_te2_text_model_encoder_layers_3_self_attn_v_proj", bigG, [2 * d, d]),
        ];
        const expected = new Map<string, Float32Array>();
        for (const s of specs) {
          const w = expected.get(s.key) ?? Float32Array.from(base16.get(s.key)!.values);
          const slice = w.subarray(s.rowStart * s.cols, (s.rowStart + s.rows) * s.cols);
          slice.set(addScaled(slice, deltaF32(s.up, s.down, s.rows, s.rank, s.cols), s.c));
          expected.set(s.key, w);
        }
        for (const [key, want] of expected) {
          const got = out16.get(key)!;
          assert.equal(got.dtype, "F16");
          for (let i = 0; i < want.length; i++) assert.ok(Object.is(got.values[i], viaF16(want[i]!)), `${key}[${i}]`);
        }
      });
    }
  });

  describe("SD 1.x: PEFT and diffusers names, LyCORIS LoHa", () => {
    const base = join(tmp.path, "sd15.safetensors");
    const peft = join(tmp.path, "peft.safetensors");
    const loha = join(tmp.path, "loha.safetensors");
    const peftSpecs: Spec[] = [], lohaSpecs: Spec[] = [];
    before(async () => {
      await writeBase(base, "sd15", 32);
      const shapes = readModel(base).tensors;
      const u = (k: string) => `model.diffusion_model.${k}`;
      const shape = (k: string) => shapes.get(k)!.shape;
      const t: Record<string, TestTensor> = {};
      const peftNames = (n: string) => ({ up: `${n}.lora_B.weight`, down: `${n}.lora_A.weight` });
      const k1 = u("input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight");
      peftSpecs.push(addModule(t, peftNames("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"), k1, shape(k1), 8, undefined, 0.9));
      const k2 = "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.v_proj.weight";
      peftSpecs.push(addModule(t, peftNames("text_encoder.text_model.encoder.layers.3.self_attn.v_proj"), k2, shape(k2), 8, undefined, 0.9));
      const k3 = u("output_blocks.5.1.transformer_blocks.0.attn1.to_out.0.weight");
      peftSpecs.push(addModule(t, { up: "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn1.processor.to_out_lora.up.weight", down: "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn1.processor.to_out_lora.down.weight" }, k3, shape(k3), 8, undefined, 0.9));
      const k4 = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight";
      peftSpecs.push(addModule(t, { up: "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight", down: "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight" }, k4, shape(k4), 8, undefined, 0.9));
      const k5 = u("middle_block.1.proj_out.weight"); // a 1×1 conv in SD 1.x, a linear LoRA from diffusers
      peftSpecs.push(addModule(t, peftNames("unet.mid_block.attentions.0.proj_out"), k5, shape(k5), 8, undefined, 0.9));
      writeModel(peft, t);

      const h: Record<string, TestTensor> = {};
      const lohaModule = (name: string, key: string, rank: number, alpha: number) => {
        const s = shape(key);
        const rows = s[0]!, cols = s.slice(1).reduce((a, b) => a * b, 1);
        const [w1a, w1b, w2a, w2b] = [values(rows * rank), values(rank * cols), values(rows * rank), values(rank * cols)];
        h[`${name}.hada_w1_a`] = { dtype: "F16", shape: [rows, rank], values: w1a };
        h[`${name}.hada_w1_b`] = { dtype: "F16", shape: [rank, cols], values: w1b };
        h[`${name}.hada_w2_a`] = { dtype: "F16", shape: [rows, rank], values: w2a };
        h[`${name}.hada_w2_b`] = { dtype: "F16", shape: [rank, cols], values: w2b };
        h[`${name}.alpha`] = { dtype: "F16", shape: [], values: [alpha] };
        lohaSpecs.push({ key, rowStart: 0, rows, cols, rank, up: w1a.map(f16), down: w1b.map(f16), up2: w2a.map(f16), down2: w2b.map(f16), c: 0.75 * alpha / rank });
      };
      lohaModule("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", u("input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"), 4, 2);
      lohaModule("lora_unet_down_blocks_0_resnets_0_conv1", u("input_blocks.1.0.in_layers.2.weight"), 4, 1); // 3×3 conv
      lohaModule("lora_te_text_model_encoder_layers_11_self_attn_out_proj", "cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.out_proj.weight", 6, 3);
      writeModel(loha, h);
    });
    for (const engine of ENGINES) {
      it(`PEFT lora_A/lora_B, diffusers .lora.down/.lora_linear_layer/processor names (no alpha: scale 1) (${engine})`, async () => {
        const out = join(tmp.fresh("peft"), "out.safetensors");
        const r = await bake({ model: base, loras: [{ path: peft, ratio: 0.9 }], out, engine, recipeMetadata: false });
        assert.equal(r.loras[0]!.matched, 5);
        check(base, out, peftSpecs);
      });
      it(`LoHa: (w1a·w1b) ⊙ (w2a·w2b) · ratio · alpha/rank, linear and 3×3 conv, one rounding for the product (${engine})`, async () => {
        const out = join(tmp.fresh("loha"), "out.safetensors");
        await bake({ model: base, loras: [{ path: loha, ratio: 0.75 }], out, engine, recipeMetadata: false });
        check(base, out, lohaSpecs);
      });
    }
  });

  describe("LyCORIS LoKr: ΔW = w1 ⊗ w2 (torch.kron layout), full or decomposed factors, 3×3 convs", () => {
    const base = join(tmp.path, "sd15-lokr.safetensors");
    const lokr = join(tmp.path, "lokr.safetensors");
    const expected = new Map<string, { rows: number; cols: number; delta: Float32Array; c: number }>();
    before(async () => {
      await writeBase(base, "sd15", 32);
      const shapes = readModel(base).tensors;
      const t: Record<string, TestTensor> = {};
      const put = (name: string, shape: number[]) => {
        const v = values(shape.reduce((a, b) => a * b, 1));
        t[name] = { dtype: "F16", shape, values: v };
        return v.map(f16);
      };
      /** kron written out by its definition: [i1·c + i2, (j1·d + j2)·K + s] = w1[i1, j1] · w2[i2, (j2·K + s)]. */
      const kron = (w1: ArrayLike<number>, a: number, b: number, w2: ArrayLike<number>, c: number, d: number, k: number) => {
        const cols = b * d * k, out = new Float32Array(a * c * cols);
        for (let i1 = 0; i1 < a; i1++) for (let i2 = 0; i2 < c; i2++) for (let j1 = 0; j1 < b; j1++) for (let j2 = 0; j2 < d; j2++) for (let s = 0; s < k; s++) {
          out[(i1 * c + i2) * cols + (j1 * d + j2) * k + s] = Math.fround(w1[i1 * b + j1]! * w2[i2 * d * k + j2 * k + s]!);
        }
        return out;
      };
      // linear, w1 full [2, 4], w2 = w2_a [rows/2, 3] · w2_b [3, cols/4], alpha 1.5 → scale 0.5
      const k1 = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.ff.net.2.weight";
      const [r1, c1] = shapes.get(k1)!.shape as [number, number];
      const n1 = "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_ff_net_2";
      const w1 = put(`${n1}.lokr_w1`, [2, 4]);
      const w2 = deltaF32(put(`${n1}.lokr_w2_a`, [r1 / 2, 3]), put(`${n1}.lokr_w2_b`, [3, c1 / 4]), r1 / 2, 3, c1 / 4);
      t[`${n1}.alpha`] = { dtype: "F16", shape: [], values: [1.5] };
      expected.set(k1, { rows: r1, cols: c1, delta: kron(w1, 2, 4, w2, r1 / 2, c1 / 4, 1), c: 0.8 * 1.5 / 3 });
      // 3×3 conv, w1 = w1_a [2, 2] · w1_b [2, 2], w2 full [out/2, in/2, 3, 3], alpha 4 → scale 2
      const k2 = "model.diffusion_model.output_blocks.4.0.out_layers.3.weight";
      const s2 = shapes.get(k2)!.shape as [number, number, number, number];
      const n2 = "lora_unet_up_blocks_1_resnets_1_conv2";
      const w1b = deltaF32(put(`${n2}.lokr_w1_a`, [2, 2]), put(`${n2}.lokr_w1_b`, [2, 2]), 2, 2, 2);
      const w2c = put(`${n2}.lokr_w2`, [s2[0] / 2, s2[1] / 2, 3, 3]);
      t[`${n2}.alpha`] = { dtype: "F16", shape: [], values: [4] };
      expected.set(k2, { rows: s2[0], cols: s2[1] * 9, delta: kron(w1b, 2, 2, w2c, s2[0] / 2, s2[1] / 2, 9), c: 0.8 * 4 / 2 });
      // both full, alpha present: scale 1 (no rank)
      const k3 = "cond_stage_model.transformer.text_model.encoder.layers.4.self_attn.k_proj.weight";
      const [r3, c3] = shapes.get(k3)!.shape as [number, number];
      const n3 = "lora_te_text_model_encoder_layers_4_self_attn_k_proj";
      const v1 = put(`${n3}.lokr_w1`, [4, 2]), v2 = put(`${n3}.lokr_w2`, [r3 / 4, c3 / 2]);
      t[`${n3}.alpha`] = { dtype: "F16", shape: [], values: [7] };
      expected.set(k3, { rows: r3, cols: c3, delta: kron(v1, 4, 2, v2, r3 / 4, c3 / 2, 1), c: 0.8 });
      writeModel(lokr, t);
    });
    for (const engine of ENGINES) {
      it(`linear and conv LoKr modules, bit for bit in fp32 (${engine})`, async () => {
        const out = join(tmp.fresh("lokr"), "out.safetensors");
        const r = await bake({ model: base, loras: [{ path: lokr, ratio: 0.8 }], out, engine, recipeMetadata: false });
        assert.equal(r.loras[0]!.matched, 3);
        const b = readModel(base).tensors, o = readModel(out).tensors;
        for (const [key, e] of expected) {
          const want = addScaled(b.get(key)!.values, e.delta, e.c);
          const got = o.get(key)!.values;
          for (let i = 0; i < want.length; i++) assert.ok(Object.is(got[i], want[i]), `${key}[${i}]: ${got[i]} ≠ ${want[i]}`);
        }
        for (const [key, t] of o) if (!expected.has(key)) assert.ok(Buffer.from(t.bytes).equals(Buffer.from(b.get(key)!.bytes)), key);
      });
    }
  });

  describe("FLUX.1: kohya BFL names and ai-toolkit diffusers names", () => {
    const base = join(tmp.path, "flux.safetensors");
    const kohya = join(tmp.path, "flux-kohya.safetensors");
    const ait = join(tmp.path, "flux-ait.safetensors");
    const kSpecs: Spec[] = [], aSpecs: Spec[] = [];
    before(async () => {
      await writeBase(base, "flux1_dev", 64);
      const shapes = readModel(base).tensors;
      const shape = (k: string) => shapes.get(k)!.shape;
      const t: Record<string, TestTensor> = {};
      const kn = (n: string) => ({ up: `${n}.lora_up.weight`, down: `${n}.lora_down.weight`, alpha: `${n}.alpha` });
      for (const [n, key] of [
        ["lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv.weight"],
        ["lora_unet_double_blocks_0_txt_mod_lin", "double_blocks.0.txt_mod.lin.weight"],
        ["lora_unet_single_blocks_1_linear1", "single_blocks.1.linear1.weight"],
        ["lora_unet_single_blocks_1_linear2", "single_blocks.1.linear2.weight"],
      ] as const) kSpecs.push(addModule(t, kn(n), key, shape(key), 4, undefined, 1.2, 2));
      writeModel(kohya, t);

      const a: Record<string, TestTensor> = {};
      const pn = (n: string) => ({ up: `transformer.${n}.lora_B.weight`, down: `transformer.${n}.lora_A.weight` });
      const qkv = "double_blocks.0.img_attn.qkv.weight", h = shape(qkv)[1]!;
      ["q", "k", "v"].forEach((x, i) => aSpecs.push(addModule(a, pn(`transformer_blocks.0.attn.to_${x}`), qkv, shape(qkv), 4, [i * h, h], 0.6)));
      const tqkv = "double_blocks.0.txt_attn.qkv.weight";
      aSpecs.push(addModule(a, pn("transformer_blocks.0.attn.add_k_proj"), tqkv, shape(tqkv), 4, [h, h], 0.6));
      aSpecs.push(addModule(a, pn("transformer_blocks.0.attn.to_out.0"), "double_blocks.0.img_attn.proj.weight", shape("double_blocks.0.img_attn.proj.weight"), 4, undefined, 0.6));
      aSpecs.push(addModule(a, pn("transformer_blocks.0.ff_context.net.2"), "double_blocks.0.txt_mlp.2.weight", shape("double_blocks.0.txt_mlp.2.weight"), 4, undefined, 0.6));
      const l1 = "single_blocks.2.linear1.weight", rows1 = shape(l1)[0]!;
      aSpecs.push(addModule(a, pn("single_transformer_blocks.2.attn.to_v"), l1, shape(l1), 4, [2 * h, h], 0.6));
      aSpecs.push(addModule(a, pn("single_transformer_blocks.2.proj_mlp"), l1, shape(l1), 4, [3 * h, rows1 - 3 * h], 0.6));
      aSpecs.push(addModule(a, pn("single_transformer_blocks.2.proj_out"), "single_blocks.2.linear2.weight", shape("single_blocks.2.linear2.weight"), 4, undefined, 0.6));
      aSpecs.push(addModule(a, pn("single_transformer_blocks.2.norm.linear"), "single_blocks.2.modulation.lin.weight", shape("single_blocks.2.modulation.lin.weight"), 4, undefined, 0.6));
      aSpecs.push(addModule(a, pn("x_embedder"), "img_in.weight", shape("img_in.weight"), 4, undefined, 0.6));
      writeModel(ait, a);
    });
    for (const engine of ENGINES) {
      it(`both layouts land on the BFL tensors, two LoRAs in a row, bf16 rounded once (${engine})`, async () => {
        const out = join(tmp.fresh("flux"), "out.safetensors");
        const r = await bake({ model: base, loras: [{ path: kohya, ratio: 1.2 }, { path: ait, ratio: 0.6 }], out, engine, recipeMetadata: false });
        assert.deepEqual(r.loras.map((l) => [l.architecture, l.matched]), [["flux", 4], ["flux", 11]]);
        check(base, out, [...kSpecs, ...aSpecs], bf16Value);
      });
    }
  });
});
