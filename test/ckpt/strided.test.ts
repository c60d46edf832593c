/**
 * Non-contiguous .ckpt tensors (transposed, sliced with a step, permuted, expanded), saved by
 * real torch.save: read as torch.load reads them, merged on both engines, and checked against
 * torch's own computation of the merge formula.
 */
import { strict as assert } from "node:assert";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { isMergeError } from "../../lib/errors";
import { openModel } from "../../lib/formats";
import { materialiseSideFile, sideModelOf } from "../../lib/formats/ckpt/strided";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { inputReadReport } from "../../lib/recipes/reads";
import { runRecipe } from "../../lib/recipes/run";
import { ENGINES } from "../helpers/engines";
import { readModel } from "../helpers/models";
import { PY_DUMP, requireTorch, runPython, tempDir, type PyManifestEntry } from "./helpers";

const M = 0.3;

/** a.ckpt and b.ckpt with the same keys and shapes, views in either; ref/ has torch's expected merge; a.ref/ A's tensors. */
const PY_MAKE = PY_DUMP + String.raw`
import collections, os, sys
out, M = sys.argv[1], float(sys.argv[2])
torch.manual_seed(7)

def views():
    base = torch.randn(37, 23)
    share = torch.randn(5, 6)
    d = collections.OrderedDict()
    d["t32"] = base.t()                                   # stride (1, 23)
    d["slice"] = torch.randn(6, 10)[:, ::2]                # stride (10, 2)
    d["perm"] = torch.randn(2, 3, 4, 5).permute(0, 2, 3, 1)  # 4-D conv, channels last
    d["expand"] = torch.randn(3, 1).expand(3, 6)           # stride (1, 0)
    d["t16"] = torch.randn(9, 7).half().t()
    d["bf"] = torch.randn(8, 12).bfloat16()[1:7:2, ::3]
    d["ints"] = torch.arange(12).reshape(3, 4).t()         # int64: copied from A as is
    d["big"] = torch.randn(700, 900).t()                   # 2.5 MB: several blocks
    d["plain"] = torch.randn(4, 4)
    d["share"] = share
    d["shareT"] = share.t()                                # the same storage, contiguous and not
    return d

def contiguous_like(d):
    # B: the same shapes, other values, every tensor contiguous except "plain" (transposed).
    e = collections.OrderedDict((k, torch.randn(v.shape).to(v.dtype) if v.is_floating_point() else v.clone() + 100) for k, v in d.items())
    e["plain"] = torch.randn(4, 4).t()
    return e

a = views()
b = contiguous_like(a)
assert not a["t32"].is_contiguous() and not a["perm"].is_contiguous() and a["expand"].stride() == (1, 0)
torch.save({"state_dict": a}, f"{out}/a.ckpt")
torch.save({"state_dict": b}, f"{out}/b.ckpt")
p0, p1 = torch.tensor(1 - M, dtype=torch.float32), torch.tensor(M, dtype=torch.float32)
expected = collections.OrderedDict()
for k, x in a.items():
    if x.is_floating_point():
        expected[k] = (x.float() * p0 + b[k].float() * p1).to(x.dtype)
    else:
        expected[k] = x
for name, sd in (("ref", expected), ("a.ref", a)):
    os.mkdir(f"{out}/{name}")
    dump(sd, f"{out}/{name}")
print("ok")
`;

function manifest(dir: string): PyManifestEntry[] {
  return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as PyManifestEntry[];
}

describe("ckpt: non-contiguous tensors (real torch.save)", function () {
  this.timeout(180_000);
  let tmp: ReturnType<typeof tempDir>;
  before(function () {
    requireTorch(this);
    tmp = tempDir("tm-strided-");
    runPython(PY_MAKE, [tmp.dir, String(M)]);
  });
  after(() => tmp?.cleanup());

  it("describes each view by its strides and copies it contiguously, byte for byte as torch.contiguous(), in small bounded blocks", async () => {
    const model = await openModel(join(tmp.dir, "a.ckpt"));
    const side = sideModelOf(model)!;
    assert.deepEqual(side.tensors.map((t) => t.name), ["t32", "slice", "perm", "expand", "t16", "bf", "ints", "big", "shareT"]);
    assert.ok(!model.byName.get("share")!.strided && !model.byName.get("plain")!.strided);
    assert.ok(model.notes.some((n) => n.startsWith("9 tensor(s) are non-contiguous")), model.notes.join("; "));
    const path = join(tmp.dir, "side.bin");
    // Blocks and windows far smaller than the tensors: every path of the gather runs.
    await materialiseSideFile(side, path, undefined, { blockBytes: 256, windowBytes: 40 });
    const bytes = readFileSync(path);
    assert.equal(bytes.length, side.size);
    for (const r of manifest(join(tmp.dir, "a.ref"))) {
      const t = side.byName.get(r.name);
      if (!t) continue;
      const expected = readFileSync(join(tmp.dir, "a.ref", r.file));
      assert.ok(bytes.subarray(t.offset, t.offset + t.byteLength).equals(expected), `${r.name} differs from torch's contiguous copy`);
    }
  });

  it("a cancelled copy stops with ABORTED and closes its files", async () => {
    const side = sideModelOf(await openModel(join(tmp.dir, "a.ckpt")))!;
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 30);
    // Tiny blocks make the copy take about a second, so the abort lands mid-copy.
    await assert.rejects(materialiseSideFile(side, join(tmp.dir, "cancelled.bin"), controller.signal, { blockBytes: 64, windowBytes: 64 }), (e: unknown) => isMergeError(e, "ABORTED"));
    assert.equal(fds(), before);
  });

  const outputs: Buffer[] = [];
  for (const engine of ENGINES) {
    it(`merges them (weighted sum) exactly as torch computes A·(1−M) + B·M in float32 (${engine})`, async () => {
      const out = join(tmp.dir, `merged-${engine}.safetensors`);
      await merge({ a: join(tmp.dir, "a.ckpt"), b: join(tmp.dir, "b.ckpt"), method: "weighted-sum", multiplier: M, out, engine, recipeMetadata: false });
      const result = readModel(out);
      const ref = manifest(join(tmp.dir, "ref"));
      assert.deepEqual(result.order, ref.map((r) => r.name));
      for (const r of ref) {
        const got = result.tensors.get(r.name)!;
        assert.deepEqual(got.shape, r.shape, `${r.name} shape`);
        assert.ok(Buffer.from(got.bytes).equals(readFileSync(join(tmp.dir, "ref", r.file))), `${r.name} differs from torch's merge`);
      }
      assert.deepEqual(readdirSync(tmp.dir).filter((n) => n.includes(".tensormerge-")), [], "the side file is removed");
      outputs.push(readFileSync(out));
    });
  }

  it("both engines write identical bytes", function () {
    if (outputs.length < 2) this.skip();
    assert.ok(outputs[0]!.equals(outputs[1]!));
  });

  it("a recipe run reads them too; the read counter counts only the input files", async () => {
    const outDir = join(tmp.dir, "run");
    const report = await runRecipe(parseRecipe(`x = ${join(tmp.dir, "a.ckpt")} + ${join(tmp.dir, "b.ckpt")}, ${M}, safetensors\n`), { outDir, createOutDirs: true, recipeMetadata: false });
    const result = readModel(report.outputs[0]!.path);
    for (const r of manifest(join(tmp.dir, "ref"))) {
      assert.ok(Buffer.from(result.tensors.get(r.name)!.bytes).equals(readFileSync(join(tmp.dir, "ref", r.file))), `${r.name} differs from torch's merge`);
    }
    assert.deepEqual(inputReadReport(report.plan!).map((r) => r.path), [join(tmp.dir, "a.ckpt"), join(tmp.dir, "b.ckpt")]);
    assert.deepEqual(readdirSync(outDir).filter((n) => n.startsWith(".")), []);
  });

  it("a dry run's disk estimate counts their contiguous copies, as the merge's free-space check does (merge and runRecipe)", async () => {
    // Independent sizes: the merged file written above, and torch's contiguous bytes of A's views.
    const written = readFileSync(join(tmp.dir, "merged-js.safetensors")).length;
    // A's views, and B's two (its transposed "plain", and "ints": clone() keeps A's strides);
    // B's have A's shapes and dtypes, so A's contiguous bytes give their sizes too.
    const views = ["t32", "slice", "perm", "expand", "t16", "bf", "ints", "big", "shareT", "plain", "ints"];
    const bytesOf = new Map(manifest(join(tmp.dir, "a.ref")).map((r) => [r.name, readFileSync(join(tmp.dir, "a.ref", r.file)).length]));
    const sideBytes = views.reduce((s, n) => s + bytesOf.get(n)!, 0);
    const a = join(tmp.dir, "a.ckpt"), b = join(tmp.dir, "b.ckpt");
    const planned = await merge({ a, b, method: "weighted-sum", multiplier: M, out: join(tmp.dir, "dry.safetensors"), recipeMetadata: false, dryRun: true });
    assert.deepEqual(planned.disk!.map((d) => d.needed), [written + sideBytes]);
    const run = await runRecipe(parseRecipe(`x = ${a} + ${b}, ${M}, safetensors\n`), { outDir: join(tmp.dir, "dry-run"), recipeMetadata: false, dryRun: true });
    assert.deepEqual(run.disk.map((d) => d.needed), [written + sideBytes]);
  });

  it("a .ckpt output of them loads in torch with the merged values", async () => {
    const out = join(tmp.dir, "merged.ckpt");
    await merge({ a: join(tmp.dir, "a.ckpt"), b: join(tmp.dir, "b.ckpt"), method: "weighted-sum", multiplier: M, out, recipeMetadata: false });
    const check = runPython(PY_DUMP + String.raw`
import sys
got = torch.load(sys.argv[1], weights_only=True)["state_dict"]
os_ref = sys.argv[2]
import json
ref = json.load(open(os_ref + "/manifest.json"))
bad = []
for r in ref:
    x = got[r["name"]].contiguous()
    if x.dtype == torch.bfloat16:
        x = x.view(torch.int16)
    if x.numpy().tobytes() != open(os_ref + "/" + r["file"], "rb").read():
        bad.append(r["name"])
print("bad:", ",".join(bad))
`, [out, join(tmp.dir, "ref")]);
    assert.equal(check.trim(), "bad:");
  });
});
