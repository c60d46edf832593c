import { basename } from "node:path";
import { strict as assert } from "node:assert";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { isMergeError } from "../../lib/errors";
import { openModel } from "../../lib/formats";
import { assertCompatible, checkCompatibility } from "../../lib/library/compat";
import type { ModelFile } from "../../lib/model";
import type { LayoutEntry } from "../../lib/synthetic";
import { tempDir } from "../helpers/models";
import { loadLayout, modelFromLayout, pix2pixLayout, refinerLayout, writeSparseModel, type LayoutName } from "./fixtures";

const INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight";

describe("library: compatibility", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-compat-");
  after(() => tmp.cleanup());
  const opened = new Map<string, ModelFile>();

  /** The real full-size header, opened from a sparse file. */
  async function real(name: LayoutName): Promise<ModelFile> {
    if (!opened.has(name)) {
      const path = join(tmp.path, `${name}.safetensors`);
      writeSparseModel(path, loadLayout(name));
      opened.set(name, await openModel(path));
    }
    return opened.get(name)!;
  }
  const mem = (name: string, layout: LayoutEntry[]) => modelFromLayout(join(tmp.path, `${name}.safetensors`), layout);

  it("refuses SD 1.x + SDXL with ARCHITECTURE_MISMATCH naming both, before anything is written", async () => {
    const a = await real("sd15");
    const b = await real("sdxl");
    const before = readdirSync(tmp.path).length;
    const report = checkCompatibility([a, b]);
    assert.equal(report.compatible, false);
    assert.equal(report.code, "ARCHITECTURE_MISMATCH");
    assert.deepEqual(report.models.map((m) => m.architecture), ["sd1", "sdxl"]);
    assert.throws(() => assertCompatible([a, b]), (e: unknown) => {
      assert.ok(isMergeError(e, "ARCHITECTURE_MISMATCH"));
      assert.equal(e.message, `A (${basename(a.path)}) is SD 1.x (sd1), B (${basename(b.path)}) is SDXL (sdxl): models of different architectures cannot be merged`);
      assert.equal(e.path, b.path);
      return true;
    });
    assert.equal(readdirSync(tmp.path).length, before);
  });

  it("refuses SD 1.x + SD 2.x and SDXL + SDXL refiner, with the caller's labels", async () => {
    const sd2 = await real("sd21");
    const sd1 = await real("sd15");
    const xl = await real("sdxl");
    assert.throws(() => assertCompatible([sd2, sd1]), /A \(sd21\.safetensors\) is SD 2\.x \(sd2\), B \(sd15\.safetensors\) is SD 1\.x \(sd1\)/);
    const refiner = mem("refiner", refinerLayout());
    assert.throws(() => assertCompatible([xl, xl, refiner], { labels: ["O1", "B", "C"] }), (e: unknown) => {
      assert.ok(isMergeError(e, "ARCHITECTURE_MISMATCH"));
      assert.match(e.message, /^O1 is SDXL \(sdxl\), C is SDXL refiner \(sdxl-refiner\)/);
      return true;
    });
  });
  it("accepts the same architecture in another precision, counting the keys only in one model", async () => {
    const a = await real("sd15");
    const b = await real("sd15_fp16_pruned");
    const r = assertCompatible([a, b]);
    assert.equal(r.compatible, true);
    assert.equal(r.keyDifferences[0]!.missing.count, 14); // scheduler buffers + EMA counters
    assert.equal(r.keyDifferences[0]!.extra.count, 0);
    assert.ok(r.keyDifferences[0]!.missing.sample.includes("alphas_cumprod"));
    assert.equal(r.sharedKeys, 1131);
    assert.deepEqual(r.shapeMismatches, []);
  });

  it("accepts the EMA checkpoint with the pruned one (686 EMA keys only in A)", async () => {
    const r = assertCompatible([await real("sd15_full_ema"), await real("sd15")]);
    assert.equal(r.keyDifferences[0]!.missing.count, 686);
  });

  it("recognises the inpainting exception: A inpainting (9 channels), B and C normal", async () => {
    const a = await real("sd15_inpainting");
    const b = await real("sd15");
    const r = assertCompatible([a, b, b]);
    assert.equal(r.compatible, true);
    assert.equal(r.shapeMismatches.length, 2);
    assert.ok(r.shapeMismatches.every((s) => s.tensor === INPUT_CONV && s.kind === "input-channels" && !s.fatal));
    assert.deepEqual(r.shapeMismatches[0]!.a, [320, 9, 3, 3]);
  });

  it("instruct-pix2pix as A with a normal B is accepted; the other way round is SHAPE_MISMATCH", async () => {
    const p2p = mem("p2p", pix2pixLayout());
    const sd = await real("sd15");
    assert.equal(assertCompatible([p2p, sd]).compatible, true);
    assert.throws(() => assertCompatible([sd, p2p]), (e: unknown) => {
      assert.ok(isMergeError(e, "SHAPE_MISMATCH"));
      assert.equal(e.tensor, INPUT_CONV);
      assert.match(e.message, /A must be the one with more input channels/);
      return true;
    });
  });

  it("a normal A with an inpainting B is SHAPE_MISMATCH, as in the classic tool", async () => {
    const normal = await real("sd15");
    const inpainting = await real("sd15_inpainting");
    assert.throws(() => assertCompatible([normal, inpainting]), (e: unknown) => isMergeError(e, "SHAPE_MISMATCH"));
  });

  it("names a shape mismatch inside one architecture, with both shapes", () => {
    const layout = loadLayout("sd15");
    const changed = layout.map(([n, s, d]): LayoutEntry => (n === "model.diffusion_model.out.2.weight" ? [n, [8, 320, 3, 3], d] : [n, s, d]));
    const r = checkCompatibility([mem("a", layout), mem("b", changed)]);
    assert.equal(r.code, "SHAPE_MISMATCH");
    assert.deepEqual(r.shapeMismatches.map((s) => [s.tensor, s.a, s.other, s.fatal]), [["model.diffusion_model.out.2.weight", [4, 320, 3, 3], [8, 320, 3, 3], true]]);
    assert.throws(() => assertCompatible([mem("a", layout), mem("b", changed)]), (e: unknown) => {
      assert.ok(isMergeError(e, "SHAPE_MISMATCH"));
      assert.equal(e.tensor, "model.diffusion_model.out.2.weight");
      assert.ok(e.message.includes("[4, 320, 3, 3]") && e.message.includes("[8, 320, 3, 3]"));
      return true;
    });
  });

  it("a buffer of another shape is only a warning (it is copied from A)", () => {
    const layout = loadLayout("sd15");
    const changed = layout.map(([n, s, d]): LayoutEntry => (n.endsWith("position_ids") ? [n, [1, 76], d] : [n, s, d]));
    const r = assertCompatible([mem("a", layout), mem("b", changed)]);
    assert.equal(r.shapeMismatches[0]!.kind, "buffer");
    assert.ok(r.warnings.some((w) => w.includes("position_ids")));
  });

  it("unknown architectures merge when their structure matches, and are refused when it does not", () => {
    const x: LayoutEntry[] = [["enc.weight", [4, 4], "F32"], ["enc.bias", [4], "F32"], ["dec.weight", [4, 4], "F32"]];
    const y: LayoutEntry[] = [["enc.weight", [4, 4], "F16"], ["enc.bias", [4], "F16"], ["head.weight", [2, 4], "F16"]];
    const z: LayoutEntry[] = [["other.weight", [4, 4], "F32"], ["another.weight", [4], "F32"]];
    assert.equal(assertCompatible([mem("x", x), mem("y", y)]).compatible, true);
    assert.throws(() => assertCompatible([mem("x", x), mem("z", z)]), (e: unknown) => isMergeError(e, "ARCHITECTURE_MISMATCH"));
    assert.throws(() => assertCompatible([mem("sd", loadLayout("sd15")), mem("z", z)]), (e: unknown) => isMergeError(e, "ARCHITECTURE_MISMATCH"));
  });
});
