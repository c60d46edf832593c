/** The block value forms: SuperMerger's full lists, sd-meh's list + base, presets, SD lists on SDXL; and the refusals. */
import { strict as assert } from "node:assert";
import { blockValue, FLUX_BLOCKS, parseBlockValues, sd3Blocks, SD_BLOCKS, SDXL_BLOCKS, valueForKey, type BlockMap } from "../../lib/blocks";
import { isMergeError } from "../../lib/errors";

const seq = (n: number, start = 0) => Array.from({ length: n }, (_, i) => (start + i) / 100);
const text = (v: number[]) => v.join(",");

function refused(fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => isMergeError(e, "INVALID_ARGUMENT"));
}

describe("block values: the forms users type", () => {
  it("SuperMerger's 26 values, BASE first", () => {
    const v = parseBlockValues(text(seq(26)), SD_BLOCKS);
    assert.equal(v.form, "list");
    assert.deepEqual(v.values, seq(26));
    assert.equal(blockValue(v, "BASE"), 0);
    assert.equal(blockValue(v, "IN00"), 0.01);
    assert.equal(blockValue(v, "M00"), 0.13);
    assert.equal(blockValue(v, "OUT11"), 0.25);
  });

  it("the issue's example, with spaces and exponents", () => {
    const v = parseBlockValues(" 0.5, 1,1,1,1,1,1,1,1,1,1,1,1 ,0,0,0,0,0,0,0,0,0,0,0,0,5e-1 ", SD_BLOCKS);
    assert.deepEqual(v.values, [0.5, ...new Array(12).fill(1), ...new Array(12).fill(0), 0.5]);
  });

  it("sd-meh's 25 values with a separate base", () => {
    const v = parseBlockValues(text(seq(25, 1)), SD_BLOCKS, { base: 0.7 });
    assert.equal(v.form, "list-with-base");
    assert.deepEqual(v.values, [0.7, ...seq(25, 1)]);
  });

  it("a preset (any case), its BASE replaced by a given base", () => {
    const v = parseBlockValues("grad_v", SD_BLOCKS);
    assert.equal(v.form, "preset");
    assert.equal(v.preset, "GRAD_V");
    assert.equal(blockValue(v, "IN00"), 1);
    assert.equal(blockValue(v, "M00"), 0);
    assert.equal(parseBlockValues("GRAD_V", SD_BLOCKS, { base: 0.3 }).values[0], 0.3);
  });

  it("SDXL: 20 values, 19 + base, and SD lists converted as SuperMerger does (IN09-11, OUT09-11 dropped)", () => {
    assert.deepEqual(parseBlockValues(text(seq(20)), SDXL_BLOCKS).values, seq(20));
    assert.deepEqual(parseBlockValues(text(seq(19, 1)), SDXL_BLOCKS, { base: 0.5 }).values, [0.5, ...seq(19, 1)]);
    // Value k/100 at SD position k: SDXL keeps BASE, IN00..IN08 (positions 0..9), M00..OUT08 (13..22).
    const kept = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22].map((k) => k / 100);
    const from26 = parseBlockValues(text(seq(26)), SDXL_BLOCKS);
    assert.equal(from26.form, "sd-list-on-sdxl");
    assert.deepEqual(from26.values, kept);
    assert.deepEqual(parseBlockValues(text(seq(25, 1)), SDXL_BLOCKS, { base: 0 }).values, kept);
    const grad = parseBlockValues("GRAD_V", SDXL_BLOCKS);
    assert.equal(blockValue(grad, "IN08"), 0.3333333333);
    assert.equal(blockValue(grad, "M00"), 0);
    assert.equal(blockValue(grad, "OUT08"), 0.75); // GRAD_V position 22 (OUT08)
  });

  it("FLUX.1: 61 values (CLIP first) or 60 + base; no presets", () => {
    const v = parseBlockValues(text(seq(61)), FLUX_BLOCKS);
    assert.equal(blockValue(v, "CLIP"), 0);
    assert.equal(blockValue(v, "D00"), 0.03);
    assert.equal(blockValue(v, "S37"), 0.59);
    assert.equal(blockValue(v, "OUT"), 0.6);
    assert.equal(parseBlockValues(text(seq(60, 1)), FLUX_BLOCKS, { base: 1 }).values[0], 1);
    refused(() => parseBlockValues("GRAD_V", FLUX_BLOCKS));
    refused(() => parseBlockValues(text(seq(26)), FLUX_BLOCKS));
  });

  it("SD 3: one value per block of the model's depth", () => {
    const map = sd3Blocks(24);
    assert.equal(parseBlockValues(text(seq(28)), map).values.length, 28);
    refused(() => parseBlockValues(text(seq(26)), map));
  });

  it("a tensor's value: its block's, none for a tensor in no block; values of another map are refused", () => {
    const v = parseBlockValues("GRAD_V", SD_BLOCKS);
    assert.equal(valueForKey(v, SD_BLOCKS, "model.diffusion_model.output_blocks.11.1.proj_out.weight"), 1);
    assert.equal(valueForKey(v, SD_BLOCKS, "model.diffusion_model.time_embed.0.weight"), 1); // IN00
    assert.equal(valueForKey(v, SD_BLOCKS, "first_stage_model.decoder.conv_in.weight"), 0); // BASE
    assert.equal(valueForKey(v, SD_BLOCKS, "betas"), undefined);
    refused(() => valueForKey(v, SDXL_BLOCKS, "model.diffusion_model.out.0.weight"));
  });

  it("numbers given as an array", () => {
    assert.deepEqual(parseBlockValues(seq(20), SDXL_BLOCKS).values, seq(20));
    refused(() => parseBlockValues([...seq(19), Number.NaN], SDXL_BLOCKS));
  });

  describe("refusals are INVALID_ARGUMENT", () => {
    const cases: [string, () => unknown][] = [
      ["a wrong count", () => parseBlockValues(text(seq(7)), SD_BLOCKS)],
      ["25 values without a base", () => parseBlockValues(text(seq(25)), SD_BLOCKS)],
      ["26 values and a base", () => parseBlockValues(text(seq(26)), SD_BLOCKS, { base: 0.5 })],
      ["26 values and a base on SDXL", () => parseBlockValues(text(seq(26)), SDXL_BLOCKS, { base: 0.5 })],
      ["21 values on SDXL", () => parseBlockValues(text(seq(21)), SDXL_BLOCKS)],
      ["a word among numbers", () => parseBlockValues(`${text(seq(25))},R`, SD_BLOCKS)],
      ["an empty value", () => parseBlockValues(`${text(seq(24))},,0`, SD_BLOCKS)],
      ["an empty spec", () => parseBlockValues("  ", SD_BLOCKS)],
      ["an unknown preset", () => parseBlockValues("GRAD_X", SD_BLOCKS)],
      ["a single number", () => parseBlockValues("0.5", SD_BLOCKS)],
      ["a non-finite base", () => parseBlockValues(text(seq(25)), SD_BLOCKS, { base: Number.POSITIVE_INFINITY })],
    ];
    for (const [what, fn] of cases) it(what, () => refused(fn));

    it("the count message names the architecture's count and the accepted forms; unknown presets the nearest names", () => {
      const message = (fn: () => unknown) => {
        try {
          fn();
        } catch (e) {
          return (e as Error).message;
        }
        return "";
      };
      const map: BlockMap = SDXL_BLOCKS;
      const m = message(() => parseBlockValues(text(seq(7)), map, { what: "--blocks" }));
      assert.ok(m.includes("20 values") && m.includes("got 7") && m.includes("preset") && m.includes("--blocks"), m);
      const p = message(() => parseBlockValues("SMOTHSTEP", SD_BLOCKS));
      assert.ok(p.includes("SMOOTHSTEP"), p);
    });
  });
});
