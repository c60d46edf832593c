/**
 * fp8 models end to end: a small Flux model with the real ComfyUI fp8 layout (every tensor
 * F8_E4M3 under `model.diffusion_model.`) is identified as Flux, merges in both engines to fp8
 * and to fp16, and the results equal a reference computed here: the independent fp8 reference
 * of test/dtypes/fp8-reference.ts for fp8 outputs, and real PyTorch (Debian's torch, which has
 * no float8 dtypes: codes are widened by their formula in Python, the math and the fp16
 * rounding are torch's) for fp16 outputs. Scaled fp8 weights whose scale is not one number are
 * refused, naming the tensor (per-tensor scales are merged through: test/merge/scaled-fp8.test.ts).
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { isMergeError } from "../../lib/errors";
import { openModel } from "../../lib/formats";
import { identifyModel } from "../../lib/library/identify";
import { merge } from "../../lib/merge";
import type { LayoutEntry } from "../../lib/synthetic";
import { requireTorch, runPython } from "../ckpt/helpers";
import { E4M3, E5M2, f32Bits, f32FromBits, refF32BitsToFp8, refFp8ToF32Bits, type Fp8Format } from "../dtypes/fp8-reference";
import { ENGINES } from "../helpers/engines";
import { readModel, tempDir, writeModel } from "../helpers/models";
import { layoutsDir, writeShrunkModel } from "../library/fixtures";

function fluxFp8Layout(): LayoutEntry[] {
  const plain = join(layoutsDir(), "flux1_dev_comfy_fp8.json");
  const text = existsSync(plain) ? readFileSync(plain, "utf8") : gunzipSync(readFileSync(`${plain}.gz`)).toString("utf8");
  return JSON.parse(text) as LayoutEntry[];
}

const FORMAT: Record<string, Fp8Format> = { F8_E4M3: E4M3, F8_E5M2: E5M2 };

/** Element i of a tensor widened to an fp32 value, independently of lib/. */
function widen(dtype: string, bytes: Uint8Array, i: number): number {
  const f = FORMAT[dtype];
  if (f) return f32FromBits(refFp8ToF32Bits(f, bytes[i]!));
  if (dtype === "BF16") return f32FromBits((bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16);
  throw new Error(`widen: ${dtype}`);
}

/** Python: weighted sum of two safetensors files with torch, fp16 bytes per tensor in order. */
const PY_WEIGHTED_SUM = String.raw`
import json, struct, sys, torch, numpy as np
def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
def e4m3(c):  # float8_e4m3fn by its definition
    s = -1.0 if c & 0x80 else 1.0
    e, m = (c >> 3) & 15, c & 7
    if e == 15 and m == 7: return float("nan")
    return s * (m / 8) * 2.0 ** -6 if e == 0 else s * (1 + m / 8) * 2.0 ** (e - 7)
lut = np.array([e4m3(c) for c in range(256)], dtype=np.float32)
def values(t):
    dtype, shape, raw = t
    assert dtype == "F8_E4M3", dtype
    return torch.from_numpy(lut[np.frombuffer(raw, dtype=np.uint8)].copy())
a, b = read(sys.argv[1]), read(sys.argv[2])
m = float(sys.argv[3])
p0, p1 = torch.tensor(1 - m, dtype=torch.float32), torch.tensor(m, dtype=torch.float32)
out = open(sys.argv[4], "wb")
for k in a:
    r = values(a[k]) * p0 + values(b[k]) * p1
    out.write(r.half().numpy().tobytes())
`;

describe("fp8 models: Flux identification and merges", function () {
  this.timeout(300_000);
  const tmp = tempDir("tm-fp8-merge-");
  after(() => tmp.cleanup());
  const a = join(tmp.path, "flux-a.safetensors"), b = join(tmp.path, "flux-b.safetensors"), bf = join(tmp.path, "flux-b-bf16.safetensors");
  const layout = fluxFp8Layout();
  before(async () => {
    await writeShrunkModel(a, layout, 128, 1);
    await writeShrunkModel(b, layout, 128, 2);
    await writeShrunkModel(bf, layout.map(([n, s]) => [n, s, "BF16"]), 128, 3);
  });

  it("the ComfyUI fp8 Flux layout (all F8_E4M3) is identified as FLUX.1 dev, fp8_e4m3", async () => {
    assert.ok(layout.length > 700 && layout.every(([n, , d]) => n.startsWith("model.diffusion_model.") && d === "F8_E4M3"));
    const id = identifyModel(await openModel(a));
    assert.equal(id.architecture, "flux");
    assert.equal(id.variant, "dev");
    assert.equal(id.precision, "fp8_e4m3");
  });

  for (const engine of ENGINES) {
    for (const [label, other, out, m] of [
      ["fp8 + fp8 → fp8-e4m3 (same as A)", b, "same", 0.4],
      ["fp8 + bf16 → fp8-e5m2", bf, "fp8-e5m2", 0.3],
    ] as const) {
      it(`${engine}: weighted sum ${label} equals the reference element by element`, async () => {
        const o = join(tmp.path, `ws-${engine}-${out}.safetensors`);
        await merge({ recipeMetadata: false, a, b: other, method: "weighted-sum", multiplier: m, dtype: out, out: o, engine });
        const ma = readModel(a), mb = readModel(other), mo = readModel(o);
        const outFormat = out === "same" ? E4M3 : E5M2;
        const p0 = Math.fround(1 - m), p1 = Math.fround(m);
        let checked = 0;
        for (const [name, t] of mo.tensors) {
          assert.equal(t.dtype, outFormat.name, name);
          const ta = ma.tensors.get(name)!, tb = mb.tensors.get(name)!;
          for (let i = 0; i < t.bytes.length; i++) {
            const r = Math.fround(Math.fround(widen(ta.dtype, ta.bytes, i) * p0) + Math.fround(widen(tb.dtype, tb.bytes, i) * p1));
            const want = refF32BitsToFp8(outFormat, f32Bits(r));
            if (t.bytes[i] !== want) assert.fail(`${name}[${i}]: got 0x${t.bytes[i]!.toString(16)}, expected 0x${want.toString(16)}`);
            checked++;
          }
        }
        assert.ok(checked > 500_000);
        assert.equal(identifyModel(await openModel(o)).architecture, "flux");
      });
    }

    it(`${engine}: weighted sum fp8 + fp8 → fp16 equals PyTorch`, async function () {
      requireTorch(this);
      const o = join(tmp.path, `ws-${engine}-fp16.safetensors`);
      await merge({ recipeMetadata: false, a, b, method: "weighted-sum", multiplier: 0.4, dtype: "fp16", out: o, engine });
      const expectedPath = join(tmp.path, `torch-${engine}.bin`);
      runPython(PY_WEIGHTED_SUM, [a, b, "0.4", expectedPath]);
      const expected = readFileSync(expectedPath);
      const mo = readModel(o);
      let at = 0;
      for (const name of Object.keys(JSON.parse(readFileSync(a).subarray(8, 8 + Number(readFileSync(a).readBigUInt64LE(0))).toString("utf8")))) {
        if (name === "__metadata__") continue;
        const t = mo.tensors.get(name)!;
        assert.equal(t.dtype, "F16");
        const want = expected.subarray(at, at + t.bytes.length);
        assert.ok(Buffer.from(t.bytes).equals(want), `${name} differs from torch`);
        at += t.bytes.length;
      }
      assert.equal(at, expected.length);
    });
  }

  it("the CLI takes --dtype fp8-e4m3 and a JSON recipe takes \"dtype\": \"fp8-e4m3\"; an unsaved fp8 row feeds the next one rounded to fp8", () => {
    const cli = (args: string[]) => spawnSync(process.execPath, [join(__dirname, "../../lib/cli/main.js"), ...args], { encoding: "utf8" });
    const direct = join(tmp.path, "cli-fp8.safetensors");
    const r1 = cli(["merge", "--a", bf, "--b", b, "--multiplier", "0.25", "--dtype", "fp8-e4m3", "--out", direct, "--quiet", "--no-metadata"]);
    assert.equal(r1.status, 0, r1.stderr);
    assert.ok([...readModel(direct).tensors.values()].every((t) => t.dtype === "F8_E4M3"));
    // the same row unsaved, feeding a second row; and the second row run from the saved file
    const recipe = (first: string, save: boolean) => ({
      format: "tensormerge-recipe", version: 1,
      rows: [
        { name: "first", method: "weighted-sum", a: first, b, multiplier: 0.25, dtype: "fp8-e4m3", save, format: "safetensors" },
        { name: "second", method: "weighted-sum", a: "first", b: a, multiplier: 0.5, dtype: "fp16", format: "safetensors" },
      ],
    });
    const chained = join(tmp.path, "chained"), split = join(tmp.path, "split");
    writeFileSync(join(tmp.path, "chained.json"), JSON.stringify(recipe(bf, false)));
    writeFileSync(join(tmp.path, "second.json"), JSON.stringify({ ...recipe(bf, false), rows: [{ ...recipe(bf, false).rows[1], a: direct }] }));
    const r2 = cli(["run", join(tmp.path, "chained.json"), "--out-dir", chained, "--quiet", "--no-metadata", "--no-history"]);
    assert.equal(r2.status, 0, r2.stderr);
    const r3 = cli(["run", join(tmp.path, "second.json"), "--out-dir", split, "--quiet", "--no-metadata", "--no-history"]);
    assert.equal(r3.status, 0, r3.stderr);
    assert.ok(readFileSync(join(chained, "second.safetensors")).equals(readFileSync(join(split, "second.safetensors"))));
    assert.ok(!existsSync(join(chained, "first.safetensors")));
  });

  describe("scaled fp8 (a weight with a companion scale tensor)", () => {
    const scaled = join(tmp.path, "scaled.safetensors"), plain = join(tmp.path, "plain.safetensors"), blocky = join(tmp.path, "block-scaled.safetensors");
    before(() => {
      const codes = Uint8Array.from({ length: 64 }, (_, i) => (i * 5) & 0x7e);
      writeModel(scaled, {
        "model.diffusion_model.img_in.weight": { dtype: "F8_E4M3", shape: [8, 8], raw: codes },
        "model.diffusion_model.img_in.scale_weight": { dtype: "F32", shape: [], values: [0.0125] },
        "model.diffusion_model.img_in.bias": { dtype: "BF16", shape: [8], values: new Array(8).fill(0.5) },
      });
      // DeepSeek-style block scales: one per 4×4 block, not merged through
      writeModel(blocky, {
        "model.diffusion_model.img_in.weight": { dtype: "F8_E4M3", shape: [8, 8], raw: codes },
        "model.diffusion_model.img_in.weight_scale_inv": { dtype: "F32", shape: [2, 2], values: [0.5, 0.25, 0.125, 1] },
        "model.diffusion_model.img_in.bias": { dtype: "BF16", shape: [8], values: new Array(8).fill(0.5) },
      });
      writeModel(plain, {
        "model.diffusion_model.img_in.weight": { dtype: "F8_E4M3", shape: [8, 8], raw: codes },
        "model.diffusion_model.img_in.bias": { dtype: "BF16", shape: [8], values: new Array(8).fill(0.25) },
      });
    });
    const isScaledRefusal = (e: unknown) => isMergeError(e, "DTYPE_UNSUPPORTED") && e.tensor === "model.diffusion_model.img_in.weight" && e.message.includes("weight_scale_inv") && e.message.includes("4 values");

    for (const engine of ENGINES) {
      it(`${engine}: merging one with block scales is refused (DTYPE_UNSUPPORTED, naming the weight and its scale), and nothing is written`, async () => {
        const o = join(tmp.path, `scaled-${engine}.safetensors`);
        await assert.rejects(merge({ a: blocky, b: plain, method: "weighted-sum", multiplier: 0.5, out: o, engine }), isScaledRefusal);
        await assert.rejects(merge({ a: plain, b: blocky, method: "weighted-sum", multiplier: 0.5, out: o, engine }), isScaledRefusal);
        await assert.rejects(merge({ a: blocky, method: "no-interpolation", dtype: "fp16", out: o, engine }), isScaledRefusal);
        assert.ok(!existsSync(o));
      });

      it(`${engine}: copying one as it is (no-interpolation, same dtype) keeps codes and scale`, async () => {
        const o = join(tmp.path, `scaled-copy-${engine}.safetensors`);
        await merge({ recipeMetadata: false, a: scaled, method: "no-interpolation", out: o, engine });
        const src = readModel(scaled), dst = readModel(o);
        for (const [name, t] of src.tensors) assert.ok(Buffer.from(dst.tensors.get(name)!.bytes).equals(Buffer.from(t.bytes)), name);
      });
    }
  });
});
