import { strict as assert } from "node:assert";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isMergeError } from "../../lib/errors";
import { configCandidates, configPathFor, copyModelConfig } from "../../lib/library/config";
import { isPrunable, planKeyEdits } from "../../lib/library/edits";
import type { LayoutEntry } from "../../lib/synthetic";
import { tempDir } from "../helpers/models";
import { loadLayout, modelFromLayout, sd3Layout, standaloneVaeLayout } from "./fixtures";

const keysOf = (layout: LayoutEntry[]) => layout.map(([n]) => n);

describe("library: merge key edits", function () {
  this.timeout(60_000);
  const sd15 = modelFromLayout("/m/sd15.safetensors", loadLayout("sd15"));
  const vaePrefixLength = "first_stage_model.".length;

  describe("prune", () => {
    it("turns the official SD 1.5 checkpoint into exactly the community pruned key set", () => {
      const edits = planKeyEdits({ a: sd15, prune: true });
      const kept = sd15.tensors.map((t) => t.name).filter((n) => !edits.discard(n));
      assert.deepEqual(kept.sort(), keysOf(loadLayout("sd15_fp16_pruned")).sort());
      assert.equal(edits.drop.length, 14);
      assert.ok([...edits.dropReason.values()].every((r) => r === "prune"));
    });

    it("drops the whole EMA copy of a non-pruned checkpoint", () => {
      const full = modelFromLayout("/m/full.safetensors", loadLayout("sd15_full_ema"));
      const edits = planKeyEdits({ a: full, prune: true });
      const kept = full.tensors.map((t) => t.name).filter((n) => !edits.discard(n));
      assert.deepEqual(kept.sort(), keysOf(loadLayout("sd15_fp16_pruned")).sort());
      assert.equal(edits.drop.length, 686 + 14);
    });

    it("keeps everything inference needs: position_ids, both SDXL text encoders", () => {
      assert.equal(isPrunable("cond_stage_model.transformer.text_model.embeddings.position_ids"), false);
      const sdxl = modelFromLayout("/m/xl.safetensors", loadLayout("sdxl"));
      assert.deepEqual(planKeyEdits({ a: sdxl, prune: true }).drop, []);
      assert.equal(isPrunable("first_stage_model.loss.logvar"), true);
    });
  });

  describe("discard", () => {
    it("drops keys matching any regular expression, searched anywhere in the key", () => {
      const edits = planKeyEdits({ a: sd15, discard: ["position_ids", "^first_stage_model\\.decoder\\."] });
      const expected = sd15.tensors.map((t) => t.name).filter((n) => n.endsWith("position_ids") || n.startsWith("first_stage_model.decoder."));
      assert.deepEqual(edits.drop, expected);
      assert.equal(expected.length, 1 + 138);
      assert.ok([...edits.dropReason.values()].every((r) => r === "discard"));
      assert.deepEqual(edits.unusedPatterns, []);
    });

    it("reports patterns that match nothing, and refuses invalid ones with INVALID_ARGUMENT", () => {
      assert.deepEqual(planKeyEdits({ a: sd15, discard: "no_such_key" }).unusedPatterns, ["no_such_key"]);
      assert.throws(() => planKeyEdits({ a: sd15, discard: "model_ema.(" }), (e: unknown) => isMergeError(e, "INVALID_ARGUMENT") && e.message.includes("model_ema.("));
    });
  });

  describe("bake in a VAE", () => {
    it("maps a standalone VAE (no prefix) onto A's first_stage_model.* keys, skipping training leftovers", () => {
      const vae = modelFromLayout("/m/vae-ft-mse.safetensors", standaloneVaeLayout());
      const edits = planKeyEdits({ a: sd15, vae });
      const aVae = sd15.tensors.filter((t) => t.name.startsWith("first_stage_model.")).map((t) => t.name);
      assert.equal(aVae.length, 248);
      assert.deepEqual([...edits.fromVae.keys()].sort(), [...aVae].sort());
      for (const [out, t] of edits.fromVae) assert.equal(t.name, out.slice(vaePrefixLength));
      assert.equal(edits.replace.get(aVae[0]!)!.model, vae);
      assert.deepEqual(edits.vae!.skipped.sort(), ["loss.discriminator.main.0.weight", "loss.logvar", "model_ema.decay", "model_ema.num_updates"]);
      assert.deepEqual(edits.vae!.missing, []);
      assert.deepEqual(edits.vae!.ignored, []);
      assert.equal(edits.vae!.sourcePrefix, "");
      assert.deepEqual(edits.drop, []);
    });

    it("reports A's VAE keys the file lacks (kept from A)", () => {
      const vae = modelFromLayout("/m/vae.safetensors", standaloneVaeLayout({ drop: ["decoder.conv_out.bias"], extras: false }));
      const edits = planKeyEdits({ a: sd15, vae });
      assert.deepEqual(edits.vae!.missing, ["first_stage_model.decoder.conv_out.bias"]);
      assert.equal(edits.fromVae.size, 247);
    });

    it("accepts a VAE source whose keys already carry the prefix (a whole checkpoint), ignoring its other keys", () => {
      const source = modelFromLayout("/m/other-checkpoint.safetensors", loadLayout("sd15_fp16_pruned"));
      const edits = planKeyEdits({ a: sd15, vae: source });
      assert.equal(edits.vae!.sourcePrefix, "first_stage_model.");
      assert.equal(edits.fromVae.size, 248);
      for (const [out, t] of edits.fromVae) assert.equal(t.name, out);
      assert.equal(edits.vae!.dtypeChanges, 248); // fp16 VAE into an fp32 model
    });

    it("refuses a VAE of another shape (SHAPE_MISMATCH), a file with no VAE keys and an A without a VAE (INVALID_ARGUMENT)", () => {
      const sd3vae = sd3Layout().filter(([n]) => n.startsWith("first_stage_model.")).map(([n, s, d]): LayoutEntry => [n.slice(vaePrefixLength), s, d]);
      assert.throws(() => planKeyEdits({ a: sd15, vae: modelFromLayout("/m/sd3-vae.safetensors", sd3vae) }), (e: unknown) => isMergeError(e, "SHAPE_MISMATCH") && e.tensor !== undefined);
      const notVae = modelFromLayout("/m/lora.safetensors", [["lora_unet_x.lora_down.weight", [4, 4], "F16"]]);
      assert.throws(() => planKeyEdits({ a: sd15, vae: notVae }), (e: unknown) => isMergeError(e, "INVALID_ARGUMENT"));
      const unetOnly = modelFromLayout("/m/unet.safetensors", loadLayout("sd15").filter(([n]) => n.startsWith("model.diffusion_model.")));
      assert.throws(() => planKeyEdits({ a: unetOnly, vae: modelFromLayout("/m/vae.safetensors", standaloneVaeLayout()) }), (e: unknown) => isMergeError(e, "INVALID_ARGUMENT"));
    });

    it("bakes first, then prunes and discards: a discarded VAE key is not replaced", () => {
      const vae = modelFromLayout("/m/vae.safetensors", standaloneVaeLayout());
      const edits = planKeyEdits({ a: sd15, vae, discard: "^first_stage_model\\.encoder\\.", prune: true });
      assert.equal(edits.fromVae.size, 248 - 106);
      assert.ok([...edits.fromVae.keys()].every((k) => !k.startsWith("first_stage_model.encoder.")));
      assert.equal(edits.drop.length, 106 + 14);
      assert.equal(edits.replace.size, edits.fromVae.size);
    });
  });
});

describe("library: model config copy", () => {
  const tmp = tempDir("tm-config-");
  after(() => tmp.cleanup());
  const p = (n: string) => join(tmp.path, n);

  it("copies the first input's <name>.yaml beside the output, replacing an older one", async () => {
    writeFileSync(p("b.yaml"), "model: b\n");
    writeFileSync(p("c.yaml"), "model: c\n");
    writeFileSync(p("out.yaml"), "old\n");
    const r = await copyModelConfig(configCandidates("abc", { a: p("a.safetensors"), b: p("b.safetensors"), c: p("c.ckpt") }), p("out.safetensors"));
    assert.deepEqual(r, { source: p("b.yaml"), destination: p("out.yaml") });
    assert.equal(readFileSync(p("out.yaml"), "utf8"), "model: b\n");
    assert.ok(readdirSync(tmp.path).every((n) => !n.endsWith(".tmp")));
  });

  it("copies only the chosen model's config, and nothing when it has none", async () => {
    assert.equal((await copyModelConfig(configCandidates("c", { a: p("a.safetensors"), b: p("b.safetensors"), c: p("c.ckpt") }), p("o2.safetensors")))!.source, p("c.yaml"));
    assert.equal(await copyModelConfig(p("a.safetensors"), p("o3.safetensors")), null);
    assert.equal(existsSync(p("o3.yaml")), false);
    assert.deepEqual(configCandidates("none", { a: "x" }), []);
    assert.equal(configPathFor("/m/v2-1_768.ema.safetensors"), "/m/v2-1_768.ema.yaml");
  });
});
