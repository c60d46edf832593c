/** inspect / list recognise LoRAs; the bake command line; the bake record in the metadata. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { bake, BAKE_METADATA_KEY } from "../../lib/lora/bake";
import { inspectModel } from "../../lib/library/inspect";
import { listModels } from "../../lib/library/scan";
import { randomValues, readModel, tempDir, writeModel, type TestTensor } from "../helpers/models";
import { loraEntries, writeBase, writeLora } from "./fixtures";

const CLI = join(__dirname, "../../lib/cli/main.js");
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: process.env });

describe("lora: inspect, list, CLI and metadata", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-lora-cli-");
  const loras = join(tmp.path, "loras");
  const base = join(tmp.path, "sd15.safetensors");
  const small = join(tmp.fresh("small"), "small.safetensors");
  before(async () => {
    await writeBase(base, "sd15", 32);
    writeLora(small, loraEntries("lora_sd15_kohya_r32", 32), 9, () => 8, { ss_network_dim: "16", ss_network_alpha: "8" });
    // Full-width modules (real SD 1.x / SDXL / FLUX widths), a few each: what the architecture is told from.
    const f16 = (shape: number[]): TestTensor => ({ dtype: "F16", shape, values: randomValues(shape.reduce((a, b) => a * b, 1), shape[0]!) });
    require("node:fs").mkdirSync(loras);
    writeModel(join(loras, "sd1.safetensors"), {
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": f16([4, 768]),
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": f16([320, 4]),
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": { dtype: "F16", shape: [], values: [2] },
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": f16([4, 768]),
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": f16([768, 4]),
    });
    writeModel(join(loras, "sd2.safetensors"), {
      "unet.up_blocks.3.attentions.1.transformer_blocks.0.attn2.to_k.lora_A.weight": f16([8, 1024]),
      "unet.up_blocks.3.attentions.1.transformer_blocks.0.attn2.to_k.lora_B.weight": f16([320, 8]),
    });
    writeModel(join(loras, "xl.safetensors"), {
      "lora_te1_text_model_encoder_layers_0_mlp_fc1.hada_w1_a": f16([3072, 2]), "lora_te1_text_model_encoder_layers_0_mlp_fc1.hada_w1_b": f16([2, 768]),
      "lora_te1_text_model_encoder_layers_0_mlp_fc1.hada_w2_a": f16([3072, 2]), "lora_te1_text_model_encoder_layers_0_mlp_fc1.hada_w2_b": f16([2, 768]),
    });
    writeModel(join(loras, "flux.safetensors"), {
      "transformer.single_transformer_blocks.7.proj_out.lora_A.weight": f16([4, 15360]),
      "transformer.single_transformer_blocks.7.proj_out.lora_B.weight": f16([3072, 4]),
    });
  });
  after(() => tmp.cleanup());

  it("inspect: naming, algorithm, rank, alpha, target architecture, blocks and kohya's training metadata", async () => {
    const r = await inspectModel(small);
    assert.equal(r.lora?.naming, "kohya");
    assert.deepEqual(r.lora?.ranks, [16]);
    assert.deepEqual(r.lora?.alphas, [8]);
    assert.equal(r.lora?.modules, 264);
    assert.equal(r.lora?.textEncoderModules, 72);
    assert.deepEqual(r.lora?.blocks, ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]);
    assert.equal(r.lora?.training.ss_network_dim, "16");
    const arch = async (f: string) => (await inspectModel(join(loras, f))).lora?.architecture;
    assert.equal(await arch("sd1.safetensors"), "sd1");
    assert.equal(await arch("sd2.safetensors"), "sd2");
    assert.equal(await arch("xl.safetensors"), "sdxl");
    assert.equal(await arch("flux.safetensors"), "flux");
    assert.deepEqual((await inspectModel(join(loras, "xl.safetensors"))).lora?.algorithms, { loha: 1 });
    const text = cli("inspect", small);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /lora {10}kohya naming, 264 modules \(lora 264\)/);
    assert.match(text.stdout, /rank {8}16; alpha 8/);
  });

  it("list: a LoRA's own architecture and rank", async () => {
    const entries = await listModels([loras], { hash: false });
    const byName = new Map(entries.map((e) => [e.name, e]));
    assert.equal(byName.get("sd2")?.architecture, "sd2");
    assert.deepEqual(byName.get("sd2")?.lora?.ranks, [8]);
    assert.equal(byName.get("flux")?.kind, "lora");
    const table = cli("list", loras, "--no-hash");
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /sd1 \(lora r4\)/);
  });

  it("bake on the command line: FILE:RATIO:TE, --json, --no-metadata; a refusal exits 1 with its code", () => {
    const out = join(tmp.fresh("cli"), "baked.safetensors");
    const r = cli("bake", "--model", base, "--lora", `${small}:0.5:0.25`, "--dtype", "fp16", "--out", out, "--json", "--no-metadata", "--engine", "js");
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.tensorsBaked, 264);
    assert.deepEqual([report.loras[0].ratio, report.loras[0].te], [0.5, 0.25]);
    assert.deepEqual(readModel(out).metadata, { format: "pt" });
    const again = cli("bake", "--model", base, "--lora", small, "--out", out);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /OUTPUT_EXISTS/);
    const wrong = cli("bake", "--model", base, "--lora", join(loras, "xl.safetensors"), "--out", join(tmp.fresh("cli"), "x.safetensors"));
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /ARCHITECTURE_MISMATCH/);
  });

  it("LoRA block weights (17 values): BASE 0 leaves the text encoder, IN01 1 and OUT11 0.5 scale their blocks, 0 leaves a block", async () => {
    const dir = tmp.fresh("lbw");
    const weights = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5];
    const lbw = join(dir, "lbw.safetensors"), full = join(dir, "full.safetensors"), half = join(dir, "half.safetensors");
    await bake({ model: base, loras: [small], loraBlocks: weights.join(","), out: lbw, recipeMetadata: false });
    await bake({ model: base, loras: [small], out: full, recipeMetadata: false });
    await bake({ model: base, loras: [{ path: small, ratio: 0.5 }], out: half, recipeMetadata: false });
    const [b, l, f, h] = [base, lbw, full, half].map((p) => readModel(p).tensors);
    let in01 = 0, out11 = 0, untouched = 0;
    for (const [key, t] of l!) {
      const same = (m: typeof b) => Buffer.from(t.bytes).equals(Buffer.from(m!.get(key)!.bytes));
      if (key.startsWith("model.diffusion_model.input_blocks.1.")) {
        if (!same(b)) in01++;
        assert.ok(same(f), key);
      } else if (key.startsWith("model.diffusion_model.output_blocks.11.")) {
        if (!same(b)) out11++;
        assert.ok(same(h), key);
      } else {
        assert.ok(same(b), key);
        if (!same(f)) untouched++;
      }
    }
    assert.equal(in01, 12); // one transformer: proj_in, proj_out, attn1 and attn2 q/k/v/out, ff 0 and 2
    assert.equal(out11, 12);
    assert.ok(untouched >= 200, `tensors a full bake changes but block weight 0 leaves: ${untouched}`);
    await assert.rejects(bake({ model: base, loras: [small], loraBlocks: "1,1,1", out: join(dir, "x.safetensors"), recipeMetadata: false }), /17 \(BASE, IN01/);
  });

  it("the output records the model and every LoRA by sha256, with ratios (bake() and the metadata key)", async () => {
    const out = join(tmp.fresh("meta"), "baked.safetensors");
    await bake({ model: base, loras: [{ path: small, ratio: 0.3 }], te: 2, out, metadata: { note: "x" } });
    const meta = readModel(out).metadata;
    assert.equal(meta.note, "x");
    const record = JSON.parse(meta[BAKE_METADATA_KEY]!);
    const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
    assert.deepEqual(record, { model: { name: "sd15.safetensors", sha256: sha(base) }, loras: [{ name: "small.safetensors", sha256: sha(small), ratio: 0.3, te: 0.6 }], dtype: "same" });
    assert.ok(existsSync(out));
  });
});
