/**
 * SD 3.x in the precisions its files come in: small synthetic models with the real SD 3.5 Medium
 * key structure (../shared/layouts/sd35_medium.json, shrunk) stored as bf16, fp16, and fp8
 * (e4m3fn and e5m2 diffusion model with a bf16 VAE, as ComfyUI's fp8 checkpoints are) are
 * identified as SD 3 Medium, show the same blocks whatever the dtype, and merge with block
 * values in both engines. Expected blocks come from test/blocks/rules.ts (the key rules written
 * out independently of lib/blocks); expected merged bytes from the inputs: a block at α = 1 is B's
 * bytes, at α = 0 A's (weighted sum `a·(1−α) + b·α` gives exactly one input's value there,
 * up to the sign of a zero).
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { summarizeBlocks } from "../../lib/blocks";
import type { Dtype } from "../../lib/dtypes";
import { openModel } from "../../lib/formats";
import { identifyModel } from "../../lib/library/identify";
import { merge } from "../../lib/merge";
import type { LayoutEntry } from "../../lib/synthetic";
import { readLayout } from "../blocks/layouts";
import { expectedSd3, two } from "../blocks/rules";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir } from "../helpers/models";
import { writeShrunkModel } from "./fixtures";

const SIZE: Partial<Record<Dtype, number>> = { BF16: 2, F16: 2, F8_E4M3: 1, F8_E5M2: 1 };

/** The layout with the diffusion model in `unet` and every other float tensor in `rest`. */
function sd3Layout(unet: Dtype, rest: Dtype): LayoutEntry[] {
  return readLayout("sd35_medium").map(([name, shape]) => [name, shape, name.startsWith("model.diffusion_model.") ? unet : rest]);
}

/** Element i of two tensors holds the same value: equal bytes, or both a zero of either sign. */
function sameElement(x: Uint8Array, y: Uint8Array, i: number, size: number): boolean {
  let equal = true, zeroX = true, zeroY = true;
  for (let k = 0; k < size; k++) {
    const bx = x[i * size + k]!, by = y[i * size + k]!;
    if (bx !== by) equal = false;
    const mask = k === size - 1 ? 0x7f : 0xff; // little-endian: the sign is in the last byte
    if (bx & mask) zeroX = false;
    if (by & mask) zeroY = false;
  }
  return equal || (zeroX && zeroY);
}

describe("SD 3 in bf16, fp16 and fp8: identification, blocks, block merges", function () {
  this.timeout(300_000);
  const dir = tempDir("tm-sd3-dtypes-");
  after(() => dir.cleanup());

  const variants: [string, Dtype, Dtype, string][] = [
    ["bf16", "BF16", "BF16", "bf16"],
    ["fp16", "F16", "F16", "fp16"],
    ["fp8 e4m3fn + bf16 VAE", "F8_E4M3", "BF16", "mixed"],
    ["fp8 e5m2 + bf16 VAE", "F8_E5M2", "BF16", "mixed"],
  ];
  for (const [label, unet, rest, precision] of variants) {
    describe(label, () => {
      const a = join(dir.path, `${unet}-a.safetensors`), b = join(dir.path, `${unet}-b.safetensors`);
      const layout = sd3Layout(unet, rest);
      before(async () => {
        await writeShrunkModel(a, layout, 64, 1);
        await writeShrunkModel(b, layout, 64, 2);
      });

      it("is SD 3 Medium with 16 latent channels, its dtypes as stored", async () => {
        const model = await openModel(a);
        assert.ok(model.tensors.some((t) => t.name.startsWith("model.diffusion_model.joint_blocks.") && t.dtype === unet));
        const id = identifyModel(model);
        assert.equal(id.architecture, "sd3");
        assert.equal(id.variant, "medium");
        assert.equal(id.inputChannels, 16);
        assert.equal(id.precision, precision);
        assert.deepEqual(id.components.map((c) => c.id), ["unet", "vae"]);
      });

      it("has the blocks of the bf16 layout: CLIP, T5, IN, J00…J23, OUT, every key where the rules put it", async () => {
        const model = await openModel(a);
        const s = summarizeBlocks(model);
        assert.equal(s.architecture, "sd3");
        assert.deepEqual(s.map!.names, ["CLIP", "T5", "IN", ...Array.from({ length: 24 }, (_, i) => `J${two(String(i))}`), "OUT"]);
        for (const t of model.tensors) assert.equal(s.map!.blockOf(t.name), expectedSd3(t.name), t.name);
        const byBlock = new Map(s.blocks.map((x) => [x.block, x.tensors]));
        for (let i = 0; i < 13; i++) assert.equal(byBlock.get(`J${two(String(i))}`), 30);
        for (let i = 13; i < 23; i++) assert.equal(byBlock.get(`J${two(String(i))}`), 24);
        assert.equal(byBlock.get("J23"), 18);
        assert.equal(s.unassigned.length, 244); // the VAE
      });

      const outs: string[] = [];
      for (const engine of ENGINES) {
        it(`merges with block values, keeping the dtypes (${engine})`, async () => {
          const model = await openModel(a);
          const names = summarizeBlocks(model).map!.names;
          const values = names.map((n) => (n === "J05" || n === "OUT" ? 1 : 0));
          const out = join(dir.path, `${unet}-${engine}.safetensors`);
          await merge({ a, b, method: "weighted-sum", blocks: values, out, engine, recipeMetadata: false });
          outs.push(out);
          const A = readModel(a).tensors, B = readModel(b).tensors, O = readModel(out).tensors;
          let fromB = 0;
          for (const [name, t] of O) {
            const block = expectedSd3(name);
            const want = block === "J05" || block === "OUT" ? B.get(name)! : A.get(name)!;
            assert.equal(t.dtype, A.get(name)!.dtype, name);
            const size = SIZE[t.dtype as Dtype]!;
            for (let i = 0; i * size < t.bytes.length; i++) {
              if (!sameElement(t.bytes, want.bytes, i, size)) assert.fail(`${name}[${i}]: not ${want === B.get(name) ? "B" : "A"}'s value`);
            }
            if (want === B.get(name)) fromB++;
          }
          assert.ok(fromB >= 30, `${fromB} tensors from B`);
        });
      }
      it("the engines wrote the same bytes", function () {
        if (outs.length < 2) this.skip();
        assert.ok(readFileSync(outs[0]!).equals(readFileSync(outs[1]!)));
      });
    });
  }
});
