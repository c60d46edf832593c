/**
 * End to end through merge(): .ckpt inputs, .ckpt and .safetensors outputs on every engine, and
 * a ckpt → safetensors → ckpt round trip that keeps every tensor (checked by real PyTorch too
 * when it is installed).
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { openModel } from "../../lib/formats";
import { merge } from "../../lib/merge";
import type { ModelFile } from "../../lib/model";
import { ENGINES } from "../helpers/engines";
import { PY_DUMP, TORCH_DTYPE, readTensorBytes, runPython, tempDir, testBytes, torchAvailable, writeCkpt, type CkptTensor, type PyManifestEntry } from "./helpers";

function model(seed: number): CkptTensor[] {
  const spec: [string, CkptTensor["dtype"], number[]][] = [
    ["model.diffusion_model.input_blocks.0.0.weight", "F32", [8, 4, 3, 3]],
    ["model.diffusion_model.input_blocks.0.0.bias", "F16", [8]],
    ["cond_stage_model.transformer.text_model.embeddings.position_ids", "I64", [1, 77]],
    ["first_stage_model.decoder.conv_in.weight", "BF16", [4, 2, 3, 3]],
    ["model_ema.decay", "F32", []],
  ];
  return spec.map(([name, dtype, shape], i) => ({ name, dtype, shape, data: testBytes(dtype, shape.reduce((p, d) => p * d, 1), seed * 100 + i) }));
}

function bytesOf(m: ModelFile): Map<string, Buffer> {
  return new Map(m.tensors.map((t) => [t.name, readTensorBytes(m.path, t)]));
}

describe("merge with .ckpt inputs and outputs", function () {
  this.timeout(120_000);
  const tmp = tempDir();
  after(() => tmp.cleanup());
  const a = join(tmp.dir, "a.ckpt");
  const b = join(tmp.dir, "b.ckpt");
  const ta = model(1);
  const tb = model(2);
  before(() => {
    writeCkpt(a, ta);
    writeCkpt(b, tb);
  });

  for (const engine of ENGINES) {
    it(`weighted sum of two .ckpt into .ckpt and .safetensors gives the same tensors (${engine})`, async () => {
      const outCkpt = join(tmp.dir, `ws-${engine}.ckpt`);
      const outSt = join(tmp.dir, `ws-${engine}.safetensors`);
      await merge({ a, b, method: "weighted-sum", multiplier: 0.3, out: outCkpt, engine });
      await merge({ a, b, method: "weighted-sum", multiplier: 0.3, out: outSt, engine });
      const [mc, ms] = [await openModel(outCkpt), await openModel(outSt)];
      assert.equal(mc.format, "ckpt");
      assert.deepEqual(mc.tensors.map((t) => [t.name, t.dtype, t.shape]), ms.tensors.map((t) => [t.name, t.dtype, t.shape]));
      const [bc, bs] = [bytesOf(mc), bytesOf(ms)];
      for (const [name, bytes] of bc) assert.ok(bytes.equals(bs.get(name)!), `${name} differs between the .ckpt and .safetensors outputs`);
      // The merge really happened: one F32 value computed the engines' way (fp32, no fusion).
      const w = ta[0]!.name;
      const av = Buffer.from(ta[0]!.data).readFloatLE(4), bv = Buffer.from(tb[0]!.data).readFloatLE(4);
      const f = Math.fround;
      assert.equal(bc.get(w)!.readFloatLE(4), f(f(av * f(1 - 0.3)) + f(bv * f(0.3))));
      // Integer tensors are copied from A, never interpolated.
      assert.ok(bc.get(ta[2]!.name)!.equals(Buffer.from(ta[2]!.data)));
    });

    it(`ckpt → safetensors → ckpt keeps every tensor (${engine})`, async () => {
      const st = join(tmp.dir, `rt-${engine}.safetensors`);
      const back = join(tmp.dir, `rt-${engine}.ckpt`);
      await merge({ a, method: "no-interpolation", out: st, engine });
      await merge({ a: st, method: "no-interpolation", out: back, engine });
      const m = await openModel(back);
      assert.deepEqual(m.tensors.map((t) => [t.name, t.dtype, t.shape]), ta.map((t) => [t.name, t.dtype, t.shape]));
      const bytes = bytesOf(m);
      for (const t of ta) assert.ok(bytes.get(t.name)!.equals(Buffer.from(t.data)), `${t.name} changed in the round trip`);
    });
  }

  describe("with files from real PyTorch", () => {
    const PY_SAVE = PY_DUMP + String.raw`
import collections, os, sys
torch.manual_seed(1)
base = torch.randn(6, 4)
sd = collections.OrderedDict()
sd["w"] = base
sd["tied"] = base
sd["row"] = base[3]
sd["h"] = torch.randn(3, 5).half()
sd["bf"] = torch.randn(7).bfloat16()
sd["ids"] = torch.arange(77).unsqueeze(0)
sd["s"] = torch.tensor(0.25)
torch.save({"state_dict": sd, "global_step": 10}, sys.argv[1])
os.mkdir(sys.argv[1] + ".ref")
dump(sd, sys.argv[1] + ".ref")
`;
    const PY_LOAD = PY_DUMP + String.raw`
import os, sys
obj = torch.load(sys.argv[1], weights_only=True)
os.mkdir(sys.argv[1] + ".ref")
dump(obj["state_dict"], sys.argv[1] + ".ref")
with open(sys.argv[1] + ".ref/top.json", "w") as f:
    json.dump(list(obj.keys()), f)
`;

    before(function () {
      if (!torchAvailable() && !process.env.CI) {
        console.log("      skipped: PyTorch is not importable by /usr/bin/python3");
        this.skip();
      }
    });

    for (const engine of ENGINES) {
      it(`torch.save → safetensors → ckpt loads in torch with identical tensors (${engine})`, async () => {
        const src = join(tmp.dir, `torch-src-${engine}.ckpt`);
        const st = join(tmp.dir, `torch-rt-${engine}.safetensors`);
        const back = join(tmp.dir, `torch-rt-${engine}.ckpt`);
        runPython(PY_SAVE, [src]);
        await merge({ a: src, method: "no-interpolation", out: st, engine });
        await merge({ a: st, method: "no-interpolation", out: back, engine });
        runPython(PY_LOAD, [back]);
        const ref = JSON.parse(readFileSync(`${src}.ref/manifest.json`, "utf8")) as PyManifestEntry[];
        const got = JSON.parse(readFileSync(`${back}.ref/manifest.json`, "utf8")) as PyManifestEntry[];
        assert.deepEqual(got.map((g) => [g.name, g.dtype, g.shape]), ref.map((r) => [r.name, r.dtype, r.shape]));
        assert.deepEqual(JSON.parse(readFileSync(`${back}.ref/top.json`, "utf8")), ["state_dict"], "the classic layout: only state_dict");
        for (const [i, r] of ref.entries()) {
          assert.ok(readFileSync(`${back}.ref/${got[i]!.file}`).equals(readFileSync(`${src}.ref/${r.file}`)), `${r.name} differs after the round trip`);
          assert.ok(TORCH_DTYPE[r.dtype]);
        }
      });
    }
  });
});
