/** merge() with the model library: compatibility refused before any file, references, VAE bake, prune, config copy. */
import { strict as assert } from "node:assert";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { merge } from "../../lib/merge";
import { loadLayout, writeShrunkModel, writeSparseModel, standaloneVaeLayout } from "../library/fixtures";
import { readModel, tempDir } from "../helpers/models";

describe("merge with the model library", function () {
  this.timeout(120_000);
  const dir = tempDir();
  after(() => dir.cleanup());

  it("refuses SD 1.x + SDXL before any file is created", async () => {
    const sd1 = join(dir.path, "sd1.safetensors"), sdxl = join(dir.path, "sdxl.safetensors");
    writeSparseModel(sd1, loadLayout("sd15"));
    writeSparseModel(sdxl, loadLayout("sdxl"));
    const before = readdirSync(dir.path).sort();
    const out = join(dir.path, "never.safetensors");
    await assert.rejects(merge({ a: sd1, b: sdxl, method: "weighted-sum", out }), (e: unknown) => {
      assert.ok(e instanceof MergeError);
      assert.equal(e.code, "ARCHITECTURE_MISMATCH");
      assert.match(e.message, /SD 1.*SDXL/);
      return true;
    });
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(dir.path).sort(), before);
  });

  it("finds models by name, bakes a VAE, prunes, and copies A's config", async () => {
    const models = join(dir.path, "models");
    (await import("node:fs")).mkdirSync(models);
    const layout = loadLayout("sd15_full_ema");
    await writeShrunkModel(join(models, "base.safetensors"), layout, 64, 1);
    await writeShrunkModel(join(models, "style.safetensors"), layout, 64, 2);
    writeFileSync(join(models, "base.yaml"), "model: {target: ldm}\n");
    const vaeLayout = standaloneVaeLayout();
    const vae = join(dir.path, "vae.safetensors");
    await writeShrunkModel(vae, vaeLayout, 64, 3);
    const out = join(dir.path, "mix.safetensors");
    const report = await merge({ a: "base", b: "style", models: [models], method: "weighted-sum", multiplier: 0.5, vae, prune: true, out });
    const got = readModel(out);
    assert.equal([...got.tensors.keys()].some((k) => k.startsWith("model_ema.")), false, "pruned");
    const vaeFile = readModel(vae);
    const [vaeKey, vaeTensor] = [...vaeFile.tensors.entries()].find(([k]) => k.startsWith("decoder."))!;
    assert.deepEqual(got.tensors.get(`first_stage_model.${vaeKey}`)!.bytes, vaeTensor.bytes, "VAE tensor copied as is");
    assert.ok(report.vae && report.vae.replaced > 0);
    assert.deepEqual(report.configs, [join(dir.path, "mix.yaml")]);
    assert.equal(readFileSync(join(dir.path, "mix.yaml"), "utf8"), "model: {target: ldm}\n");
  });
});
