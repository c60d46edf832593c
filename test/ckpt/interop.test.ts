/**
 * Interop with real PyTorch (/usr/bin/python3 + Debian's python3-torch): files saved by
 * torch.save read back byte-identical, and files we write load in torch.load(weights_only=True)
 * with identical tensors.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { isMergeError } from "../../lib/errors";
import { openModel } from "../../lib/formats";
import type { Dtype } from "../../lib/dtypes";
import { PY_DUMP, TORCH_DTYPE, readTensorBytes, requireTorch, runPython, tempDir, testBytes, writeCkpt, type CkptTensor, type PyManifestEntry } from "./helpers";

/** torch.save in several shapes; each case also gets <case>.ref/ with the expected tensors. */
const PY_SAVE = PY_DUMP + String.raw`
import collections, os, sys
out = sys.argv[1]
torch.manual_seed(0)
cases = {}

m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
cases["module"] = (m.state_dict(), None, {})  # OrderedDict with _metadata (BUILD)

sd = {"w": torch.randn(3, 5), "b": torch.randn(5)}
cases["wrapper"] = ({"state_dict": sd, "epoch": 7, "global_step": 1234, "hparams": {"lr": 1e-4, "name": "x"}}, sd, {})

d = collections.OrderedDict()
d["f32"] = torch.randn(2, 3)
d["f16"] = torch.randn(4, 4).half()
d["bf16"] = torch.randn(3, 2, 2).bfloat16()
d["f64"] = torch.randn(5).double()
d["i64"] = torch.arange(-5, 5)
d["i32"] = torch.arange(7, dtype=torch.int32) * -3
d["i16"] = torch.arange(9, dtype=torch.int16) * 1000
d["i8"] = torch.arange(-4, 4, dtype=torch.int8)
d["u8"] = torch.arange(250, 256, dtype=torch.uint8)
d["bool"] = torch.rand(6) > 0.5
d["scalar"] = torch.tensor(3.5)
d["empty"] = torch.zeros(0, 4)
d["5d"] = torch.randn(2, 1, 3, 1, 2)
d["big_int"] = torch.tensor([2**40 + 3, -(2**50)])
cases["dtypes"] = (d, None, {})

base = torch.randn(6, 4)
d = collections.OrderedDict()
d["base"] = base
d["alias"] = base
d["row"] = base[2]
d["rows"] = base[1:4]
d["flat"] = base.view(-1)
d["tail"] = base.view(-1)[5:17]
d["col1"] = base[:, 1:2][3:4]  # 1x1 view: a size-1 dim may have any stride
d["other"] = torch.randn(3)
cases["shared"] = ({"state_dict": d}, d, {})

d = {"p": torch.nn.Parameter(torch.randn(3, 3)), "q": torch.nn.Parameter(torch.randn(2), requires_grad=False)}
cases["params"] = (d, None, {})

d = collections.OrderedDict((f"layer.{i}.weight", torch.full((i % 5 + 1,), float(i))) for i in range(1200))
cases["many"] = (d, None, {})

d = collections.OrderedDict()
d["a"] = torch.randn(3, 2)
d["h"] = torch.randn(4).half()
d["view"] = d["a"][1]
cases["legacy"] = ({"state_dict": d, "epoch": 1}, d, {"_use_new_zipfile_serialization": False})

x = torch.randn(3, 4)
cases["transposed"] = ({"ok": x, "t": x.t()}, None, {})

for name, (obj, sd, kw) in cases.items():
    torch.save(obj, f"{out}/{name}.ckpt", **kw)
    ref = f"{out}/{name}.ref"
    os.mkdir(ref)
    dump(sd if sd is not None else obj, ref)
print("ok")
`;

/** Loads each listed file with weights_only=True and dumps its state dict. */
const PY_LOAD = PY_DUMP + String.raw`
import sys, os
for path in sys.argv[1:]:
    obj = torch.load(path, weights_only=True)
    assert type(obj) is dict and "state_dict" in obj, type(obj)
    ref = path + ".ref"
    os.mkdir(ref)
    dump(obj["state_dict"], ref)
    with open(ref + "/top.json", "w") as f:
        json.dump({k: (v if k == "__metadata__" else type(v).__name__) for k, v in obj.items()}, f)
print("ok")
`;

function manifest(dir: string): PyManifestEntry[] {
  return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as PyManifestEntry[];
}

describe("ckpt interop with PyTorch", function () {
  this.timeout(180_000);
  let tmp: ReturnType<typeof tempDir>;

  before(function () {
    requireTorch(this);
    tmp = tempDir();
    runPython(PY_SAVE, [tmp.dir]);
  });
  after(() => tmp?.cleanup());

  async function expectSameAsTorch(name: string): Promise<void> {
    const path = join(tmp.dir, `${name}.ckpt`);
    const model = await openModel(path);
    const ref = manifest(join(tmp.dir, `${name}.ref`));
    assert.deepEqual(model.tensors.map((t) => t.name), ref.map((r) => r.name), "tensor order is the state dict's key order");
    for (const r of ref) {
      const t = model.byName.get(r.name)!;
      assert.equal(t.dtype, TORCH_DTYPE[r.dtype], `${r.name} dtype`);
      assert.deepEqual(t.shape, r.shape, `${r.name} shape`);
      const expected = readFileSync(join(tmp.dir, `${name}.ref`, r.file));
      assert.ok(readTensorBytes(path, t).equals(expected), `${r.name} bytes differ from torch's`);
    }
    assert.equal(model.format, "ckpt");
  }

  it("reads an nn.Module state_dict (OrderedDict with _metadata)", () => expectSameAsTorch("module"));
  it("reads a state_dict wrapper and reports the other top-level entries", async () => {
    await expectSameAsTorch("wrapper");
    const model = await openModel(join(tmp.dir, "wrapper.ckpt"));
    assert.ok(model.notes.some((n) => n.includes('"epoch"') && n.includes('"global_step"') && n.includes('"hparams"')), model.notes.join("; "));
  });
  it("reads every dtype, scalars, empty and 5-d tensors, 64-bit integers", () => expectSameAsTorch("dtypes"));
  it("reads shared storages and views with storage offsets", async () => {
    await expectSameAsTorch("shared");
    const model = await openModel(join(tmp.dir, "shared.ckpt"));
    const base = model.byName.get("base")!;
    assert.equal(model.byName.get("alias")!.offset, base.offset);
    assert.equal(model.byName.get("row")!.offset, base.offset + 2 * 4 * 4);
    assert.equal(model.byName.get("tail")!.offset, base.offset + 5 * 4);
    assert.equal(base.offset % 64, 0, "torch aligns records to 64 bytes");
  });
  it("reads nn.Parameter entries", () => expectSameAsTorch("params"));
  it("reads 1200 tensors (batched SETITEMS, 4-byte memo indices)", () => expectSameAsTorch("many"));
  it("reads the legacy (pre-1.6) format", async () => {
    await expectSameAsTorch("legacy");
    const model = await openModel(join(tmp.dir, "legacy.ckpt"));
    assert.ok(model.notes.some((n) => n.includes("legacy")));
  });
  it("reads a non-contiguous (transposed) view as a strided view of its storage (test/ckpt/strided.test.ts merges them)", async () => {
    const model = await openModel(join(tmp.dir, "transposed.ckpt"));
    const ok = model.byName.get("ok")!, t = model.byName.get("t")!;
    assert.equal(ok.strided, undefined);
    assert.deepEqual(t.shape, [4, 3]);
    assert.deepEqual(t.strided, { storageOffset: ok.offset, storageElements: 12, elementOffset: 0, stride: [1, 4] });
  });

  describe("files we write", () => {
    const dtypes: Dtype[] = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"];
    const tensors: CkptTensor[] = [];
    dtypes.forEach((dtype, i) => {
      const shape = [[3, 5], [7], [2, 3, 4], [1, 1, 6, 2], [], [0, 3], [2, 2, 2, 2, 3]][i % 7]!;
      const numel = shape.reduce((p, d) => p * d, 1);
      tensors.push({ name: `model.t${i}.${dtype.toLowerCase()}`, dtype, shape, data: testBytes(dtype, numel, i + 1) });
    });

    function checkLoaded(path: string, metadata?: Record<string, string>): void {
      const ref = manifest(`${path}.ref`);
      assert.deepEqual(ref.map((r) => r.name), tensors.map((t) => t.name));
      for (const [i, r] of ref.entries()) {
        const t = tensors[i]!;
        assert.equal(TORCH_DTYPE[r.dtype], t.dtype, `${t.name} dtype`);
        assert.deepEqual(r.shape, t.shape, `${t.name} shape`);
        assert.ok(readFileSync(join(`${path}.ref`, r.file)).equals(Buffer.from(t.data)), `${t.name} bytes differ after torch.load`);
      }
      const top = JSON.parse(readFileSync(join(`${path}.ref`, "top.json"), "utf8")) as Record<string, unknown>;
      if (metadata) assert.deepEqual(top.__metadata__, metadata);
      else assert.deepEqual(Object.keys(top), ["state_dict"]);
    }

    it("load in torch.load(weights_only=True) with identical tensors (plain, zip64, with metadata)", async () => {
      const plain = join(tmp.dir, "ours.ckpt");
      const z64 = join(tmp.dir, "ours-zip64.ckpt");
      const meta = join(tmp.dir, "ours-meta.ckpt");
      const metadata = { "tensormerge.recipe": "weighted-sum 0.35" };
      writeCkpt(plain, tensors, { format: "pt" }); // safetensors' format key is not written to a .ckpt
      writeCkpt(z64, tensors, {}, { forceZip64: true });
      writeCkpt(meta, tensors, metadata);
      runPython(PY_LOAD, [plain, z64, meta]);
      checkLoaded(plain);
      checkLoaded(z64);
      checkLoaded(meta, metadata);
      // And our reader agrees with itself.
      for (const p of [plain, z64, meta]) {
        const model = await openModel(p);
        assert.deepEqual(model.tensors.map((t) => [t.name, t.dtype, t.shape]), tensors.map((t) => [t.name, t.dtype, t.shape]));
        model.tensors.forEach((t, i) => assert.ok(readTensorBytes(p, t).equals(Buffer.from(tensors[i]!.data))));
        assert.deepEqual(model.metadata, p === meta ? metadata : {});
      }
    });

    it("have correct CRC-32s and 64-byte aligned records (checked by Python's zipfile); torch itself ignores CRCs", () => {
      const good = join(tmp.dir, "crc-good.ckpt");
      const bad = join(tmp.dir, "crc-bad.ckpt");
      writeCkpt(good, tensors);
      writeCkpt(bad, tensors, {}, {}, true);
      const out = runPython(String.raw`
import sys, zipfile, torch
for p in sys.argv[1:]:
    z = zipfile.ZipFile(p)
    offsets = []
    for info in z.infolist():
        with open(p, "rb") as f:
            f.seek(info.header_offset + 26)
            n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        offsets.append((info.header_offset + 30 + n + m) % 64)
    try:
        torch.load(p, weights_only=True)
        loads = "loads"
    except Exception as e:
        loads = "refuses"
    print(p.split("/")[-1], z.testzip(), set(offsets), loads)
`, [good, bad]);
      const lines = out.trim().split("\n");
      assert.equal(lines[0], "crc-good.ckpt None {0} loads");
      assert.match(lines[1]!, /^crc-bad\.ckpt archive\/data\/0 \{0\} (loads|refuses)$/);
      // PyTorch builds miniz with MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS: it loads a wrong CRC.
      console.log(`      torch.load with a wrong tensor CRC: ${lines[1]!.split(" ").pop()}`);
    });
  });
});
