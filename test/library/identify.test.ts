import { strict as assert } from "node:assert";
import { join } from "node:path";
import { openModel } from "../../lib/formats";
import { identifyModel, type ArchitectureId } from "../../lib/library/identify";
import type { LayoutEntry } from "../../lib/synthetic";
import { tempDir } from "../helpers/models";
import {
  LAYOUT_NAMES, fluxLayout, loadLayout, loadSummary, modelFromLayout, pix2pixLayout, refinerLayout, sd2InpaintingLayout, sd3Layout,
  standaloneVaeLayout, writeShrunkModel, writeSparseModel, type LayoutName,
} from "./fixtures";

const EXPECTED: Record<LayoutName, ArchitectureId> = {
  sd15: "sd1", sd15_full_ema: "sd1", sd15_inpainting: "sd1-inpainting", sd15_fp16_pruned: "sd1", sd21: "sd2", sdxl: "sdxl",
};

/** summary.json's component names → ours. */
const COMPONENT_NAMES: Record<string, string> = {
  unet: "unet", unet_ema: "ema", vae: "vae", text_encoder: "text_encoder", text_encoder_1_clip_l: "text_encoder",
  text_encoder_2_clip_g: "text_encoder_2", other: "other",
};

function idOf(layout: LayoutEntry[]) {
  return identifyModel(modelFromLayout("mem.safetensors", layout));
}

describe("library: identification", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-identify-");
  after(() => tmp.cleanup());
  const summary = loadSummary();

  describe("full-size real headers (sparse files)", () => {
    for (const name of LAYOUT_NAMES) {
      it(`${name} is ${EXPECTED[name]}, with the layout summary's components and parameter counts`, async () => {
        const path = join(tmp.path, `${name}.safetensors`);
        writeSparseModel(path, loadLayout(name), { format: "pt" });
        const id = identifyModel(await openModel(path));
        const s = summary[name];
        assert.equal(id.architecture, EXPECTED[name]);
        assert.equal(id.kind, "checkpoint");
        assert.equal(id.tensors, s.tensors);
        assert.equal(id.params, s.params);
        assert.deepEqual(Object.keys(id.dtypes).sort(), [...s.dtypes].sort());
        const ours = Object.fromEntries(id.components.map((c) => [c.id, { tensors: c.tensors, params: c.params }]));
        const theirs = Object.fromEntries(Object.entries(s.components).map(([k, v]) => [COMPONENT_NAMES[k] ?? k, { tensors: v.tensors, params: v.params }]));
        assert.deepEqual(ours, theirs);
      });
    }

    it("reports input channels, context width and precision", async () => {
      const sdxl = idOf(loadLayout("sdxl"));
      assert.equal(sdxl.contextDim, 2048);
      assert.equal(sdxl.precision, "fp16");
      assert.equal(idOf(loadLayout("sd15")).precision, "fp32");
      assert.equal(idOf(loadLayout("sd21")).contextDim, 1024);
      assert.equal(idOf(loadLayout("sd15_inpainting")).inputChannels, 9);
    });

    it("notes the EMA copy and SD 2.x's missing prediction type", () => {
      assert.ok(idOf(loadLayout("sd15_full_ema")).notes.some((n) => n.includes("EMA")));
      assert.ok(idOf(loadLayout("sd21")).notes.some((n) => n.includes("yaml")));
      assert.deepEqual(idOf(loadLayout("sd15")).notes, []);
    });
  });

  describe("shrunken models with real data (structure decides, not sizes)", () => {
    for (const name of LAYOUT_NAMES) {
      it(`${name} shrunk 32× is still ${EXPECTED[name]}`, async () => {
        const path = join(tmp.path, `${name}-small.safetensors`);
        await writeShrunkModel(path, loadLayout(name), 32, 7);
        assert.equal(identifyModel(await openModel(path)).architecture, EXPECTED[name]);
      });
    }
  });

  describe("architectures without a layout file (documented key patterns)", () => {
    it("SDXL refiner: label_emb with 2560 inputs, 12 input blocks, OpenCLIP bigG only", () => {
      const id = idOf(refinerLayout());
      assert.equal(id.architecture, "sdxl-refiner");
      assert.equal(id.contextDim, 1280);
      assert.deepEqual(id.components.map((c) => c.id), ["unet", "text_encoder", "vae"]);
      assert.match(id.components[1]!.label, /bigG/);
    });

    it("SD 3: joint_blocks, three text encoders", () => {
      const id = idOf(sd3Layout());
      assert.equal(id.architecture, "sd3");
      assert.equal(id.variant, "medium");
      assert.equal(id.inputChannels, 16);
      assert.deepEqual(id.components.map((c) => c.id), ["unet", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"]);
    });

    it("FLUX.1 dev and schnell, bare and with the checkpoint prefix", () => {
      const dev = idOf(fluxLayout("dev"));
      assert.equal(dev.architecture, "flux");
      assert.equal(dev.variant, "dev");
      assert.equal(dev.kind, "unet");
      assert.equal(dev.components.length, 1);
      assert.equal(dev.components[0]!.tensors, fluxLayout("dev").length);
      const schnell = idOf(fluxLayout("schnell", "model.diffusion_model."));
      assert.equal(schnell.architecture, "flux");
      assert.equal(schnell.variant, "schnell");
    });

    it("InstructPix2Pix: SD 1.x with 8 input channels", () => {
      assert.equal(idOf(pix2pixLayout()).architecture, "sd1-instruct-pix2pix");
    });

    it("SD 2.x inpainting is sd2 with the inpainting variant", () => {
      const id = idOf(sd2InpaintingLayout());
      assert.equal(id.architecture, "sd2");
      assert.equal(id.variant, "inpainting");
      assert.equal(id.label, "SD 2.x inpainting");
    });

    it("a UNet-only SDXL file is sdxl, kind unet", () => {
      const id = idOf(loadLayout("sdxl").filter(([n]) => n.startsWith("model.diffusion_model.")));
      assert.equal(id.architecture, "sdxl");
      assert.equal(id.kind, "unet");
    });

    it("a standalone VAE, a LoRA and random keys are unknown, with their kind", () => {
      const vae = idOf(standaloneVaeLayout({ extras: false }));
      assert.equal(vae.architecture, "unknown");
      assert.equal(vae.kind, "vae");
      const lora = idOf([["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", [8, 320], "F16"], ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", [320, 8], "F16"]]);
      assert.equal(lora.architecture, "unknown");
      assert.equal(lora.kind, "lora");
      const other = idOf([["weight", [3, 3], "F32"], ["bias", [3], "F32"]]);
      assert.equal(other.architecture, "unknown");
      assert.equal(other.kind, "other");
      assert.equal(other.params, 12);
    });
  });
});
