/**
 * TIES, model stock, SLERP and sd-mecha's add-cosine forms against real PyTorch (/usr/bin/python3, torch 1.13 from Debian),
 * with mergekit's algorithms written out in torch/numpy in the script below: argsort top-k,
 * get_mask's sign election, the disjoint mean; model_stock's pairwise cosines; slerp's numpy
 * angle; sd-mecha's add_cosine_a/b as it writes them. Sums run in torch's order there, so the comparison allows fp32 rounding (1e-6 of the
 * tensor's largest value).
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../../lib/merge";
import { PYTHON, requireTorch } from "../../ckpt/helpers";
import { ENGINES } from "../../helpers/engines";
import { tempDir } from "../../helpers/models";
import { W, stored, writeFamily } from "./fixtures";
import { maxRelativeError, tensorOf } from "./reference";

const SCRIPT = String.raw`
import sys, numpy as np, torch
d = sys.argv[1]
load = lambda name: torch.from_numpy(np.fromfile(f"{d}/{name}.bin", dtype=np.float32).copy())
base = load("base"); ms = [load(f"m{i}") for i in (1, 2, 3)]
weights = [1.0, 0.8, 0.6]; densities = [0.2, 0.5, 0.05]; lam = 0.9

def magnitude(t, density):
    k = int(density * t.numel())
    mask = torch.zeros_like(t)
    mask.view(-1)[torch.argsort(t.abs().view(-1), descending=True)[:k]] = 1
    return t * mask

deltas = torch.stack([magnitude(m - base, dens) for m, dens in zip(ms, densities)], dim=0)
w = torch.tensor(weights, dtype=deltas.dtype).unsqueeze(-1)
wd = deltas * w
sign = wd.sign()
majority = (wd.sum(dim=0) >= 0).to(wd.dtype) * 2 - 1
mask = (sign == majority).to(wd.dtype)
mixed = (wd * mask).sum(dim=0)
divisor = (w * mask).sum(dim=0)
divisor[divisor == 0] = 1
(base + lam * (mixed / divisor)).numpy().astype(np.float32).tofile(f"{d}/ties.out")

offsets = [m - base for m in ms]
cos = []
for i in range(3):
    for j in range(i + 1, 3):
        norm = torch.norm(offsets[i]) * torch.norm(offsets[j])
        cos.append(((offsets[i] * offsets[j]).sum() / norm.clamp(min=1e-6)).clamp(-1, 1))
c = torch.stack(cos).mean()
t = (3 * c) / (1 + 2 * c)
(t * (sum(ms) / 3) + (1 - t) * base).numpy().astype(np.float32).tofile(f"{d}/stock.out")

v0 = base.numpy(); v1 = ms[0].numpy(); tt = 0.3
n0 = v0 / np.linalg.norm(v0); n1 = v1 / np.linalg.norm(v1)
dot = np.sum(n0 * n1)
theta = np.arccos(dot); s = np.sin(theta)
res = np.sin(theta - theta * tt) / s * v0 + np.sin(theta * tt) / s * v1
res.astype(np.float32).tofile(f"{d}/slerp.out")

# sd-mecha add_cosine_a / add_cosine_b on the [64, 80] tensor (columns along dim 0)
F = torch.nn.functional
a = base.view(64, 80); b = ms[0].view(64, 80); alpha = 0.1
def generic(sim):
    k = 1 - torch.clamp(sim - alpha, 0, 1)
    return (1 - k) * a + k * b
sim_a = F.cosine_similarity(F.normalize(a, dim=0), F.normalize(b, dim=0), dim=0)
generic(sim_a).numpy().astype(np.float32).tofile(f"{d}/cosa.out")
sim_b = (F.cosine_similarity(a, b, dim=0) + torch.sum(a * b) / (torch.norm(a) * torch.norm(b))) / 2.0
generic(sim_b).numpy().astype(np.float32).tofile(f"{d}/cosb.out")
`;

describe("many-model methods against PyTorch (mergekit's algorithms)", function () {
  this.timeout(120000);
  let dir: ReturnType<typeof tempDir>;
  let paths: string[];
  before(function () {
    requireTorch(this);
    dir = tempDir("tm-many-torch-");
    paths = writeFamily(dir.path, 3);
    [0, 1, 2, 3].forEach((m) => writeFileSync(join(dir.path, `${m === 0 ? "base" : `m${m}`}.bin`), Buffer.from(new Float32Array(stored(W, m)).buffer)));
    const r = spawnSync(PYTHON, ["-c", SCRIPT, dir.path], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  });
  after(() => dir?.cleanup());
  const torchOut = (name: string) => Array.from(new Float32Array(new Uint8Array(readFileSync(join(dir.path, `${name}.out`))).buffer));

  for (const engine of ENGINES) {
    it(`${engine}: ties, model-stock and slerp agree with torch within fp32 rounding`, async () => {
      const ties = join(dir.path, `ties-${engine}.safetensors`);
      await merge({ recipeMetadata: false, engine, method: "ties", base: paths[0]!, models: paths.slice(1), modelWeights: [1, 0.8, 0.6], modelParams: [{ density: 0.2 }, { density: 0.5 }, { density: 0.05 }], multiplier: 0.9, out: ties });
      assert.ok(maxRelativeError(tensorOf(ties, W), torchOut("ties")) < 1e-6, "ties");
      const stock = join(dir.path, `stock-${engine}.safetensors`);
      await merge({ recipeMetadata: false, engine, method: "model-stock", base: paths[0]!, models: paths.slice(1), out: stock });
      assert.ok(maxRelativeError(tensorOf(stock, W), torchOut("stock")) < 1e-6, "model-stock");
      const slerp = join(dir.path, `slerp-${engine}.safetensors`);
      await merge({ recipeMetadata: false, engine, method: "slerp", a: paths[0]!, b: paths[1]!, multiplier: 0.3, out: slerp });
      assert.ok(maxRelativeError(tensorOf(slerp, W), torchOut("slerp")) < 1e-6, "slerp");
      for (const [method, name] of [["add-cosine-a", "cosa"], ["add-cosine-b", "cosb"]] as const) {
        const out = join(dir.path, `${name}-${engine}.safetensors`);
        await merge({ recipeMetadata: false, engine, method, a: paths[0]!, b: paths[1]!, multiplier: 0.1, out });
        assert.ok(maxRelativeError(tensorOf(out, W), torchOut(name)) < 1e-6, method);
      }
    });
  }
});
