/**
 * Names are data: tensors and metadata keys named like Object.prototype members (`__proto__`,
 * `constructor`, `toString`, …) survive reading, merging on both engines and writing, in
 * safetensors and .ckpt, and files with a name twice are refused with DUPLICATE_TENSOR.
 *
 * Inputs are written here from hand-assembled JSON text (the test helper's writer builds an
 * object, which is the very mistake under test) or by torch.save; outputs are read back by
 * Python's json + struct and by torch.load, never by the library alone.
 */
import { strict as assert } from "node:assert";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { openModel } from "../../lib/formats";
import { layoutSafetensors, readSafetensors } from "../../lib/formats/safetensors";
import { inspectOpenedModel } from "../../lib/library/inspect";
import { merge } from "../../lib/merge";
import { requirePython, requireTorch, runPython } from "../ckpt/helpers";
import { ENGINES } from "../helpers/engines";
import { tempDir } from "../helpers/models";

/** Object.prototype's members, and a normal name for company. */
export const HOSTILE = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "__defineGetter__", "__lookupSetter__"];
const NAMES = [...HOSTILE, "model.normal.weight"];

/** A safetensors file of F32 tensors, its header JSON written key by key. */
function writeSafetensorsText(path: string, tensors: [string, number[]][], metadata: [string, string][] = [], pad = 0): void {
  const members: string[] = [];
  if (metadata.length > 0) members.push(`"__metadata__":{${metadata.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`);
  let offset = 0;
  const data: Buffer[] = [];
  for (const [name, values] of tensors) {
    const bytes = Buffer.alloc(values.length * 4);
    values.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
    members.push(`${JSON.stringify(name)}:{"dtype":"F32","shape":[${values.length}],"data_offsets":[${offset},${offset + bytes.length}]}`);
    offset += bytes.length;
    data.push(bytes);
  }
  const json = Buffer.from(`{${members.join(",")}}${" ".repeat(pad)}`);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...data]));
}

/**
 * Python reads each file: a safetensors file with json + struct (keys in order, duplicates
 * kept, metadata as pairs), a .ckpt with torch.load (state-dict names in order, the top-level
 * __metadata__ dict as pairs).
 */
const PY_READ = String.raw`
import json, struct, sys
def safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    pairs = json.loads(buf[8:8 + n].decode("utf-8"), object_pairs_hook=lambda p: p)
    meta, tensors, end = [], [], 8 + n
    for k, v in pairs:
        if k == "__metadata__":
            meta = v
            continue
        e = dict(v)
        b, stop = e["data_offsets"]
        assert e["dtype"] == "F32", e
        raw = buf[8 + n + b:8 + n + stop]
        tensors.append([k, e["shape"], list(struct.unpack("<%df" % (len(raw) // 4), raw))])
        end = max(end, 8 + n + stop)
    return {"metadata": meta, "tensors": tensors, "size": len(buf), "end": end}
def ckpt(path):
    import torch
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj["state_dict"] if "state_dict" in obj else obj
    meta = obj.get("__metadata__", {}) if "state_dict" in obj else {}
    return {"metadata": list(meta.items()), "tensors": [[k, list(t.shape), t.flatten().tolist()] for k, t in sd.items()]}
print(json.dumps([ckpt(p) if p.endswith(".ckpt") else safetensors(p) for p in sys.argv[1:]]))
`;

interface PyFile {
  metadata: [string, string][];
  tensors: [string, number[], number[]][];
  size?: number;
  end?: number;
}

function pyRead(paths: string[]): PyFile[] {
  return JSON.parse(runPython(PY_READ, paths)) as PyFile[];
}

const valuesA = (i: number) => [i + 1, -(i + 1), 2 * i, 0.5];
const valuesB = (i: number) => [3 * (i + 1), i + 1, -2 * i, 1.5];
/** Weighted sum at 0.5, computed here: every value is exact in float32. */
const expected = (i: number) => valuesA(i).map((a, k) => 0.5 * a + 0.5 * valuesB(i)[k]!);

describe("names are data: Object.prototype names as tensors and metadata keys", function () {
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors");
  const metaPairs: [string, string][] = HOSTILE.map((k, i) => [k, `value ${i}`]);
  before(() => {
    writeSafetensorsText(a, NAMES.map((n, i) => [n, valuesA(i)]), metaPairs);
    writeSafetensorsText(b, NAMES.map((n, i) => [n, valuesB(i)]));
  });

  it("the safetensors reader keeps every such tensor and metadata key, as own data", async () => {
    const m = await readSafetensors(a);
    assert.deepEqual(m.tensors.map((t) => t.name), NAMES);
    assert.deepEqual([...m.byName.keys()], NAMES);
    assert.deepEqual(Object.keys(m.metadata), HOSTILE);
    for (const [k, v] of metaPairs) {
      assert.ok(Object.hasOwn(m.metadata, k), k);
      assert.equal(m.metadata[k], v);
    }
    assert.equal(Object.getPrototypeOf(m.metadata), Object.prototype, "the prototype was not replaced");
    const report = inspectOpenedModel(m);
    assert.deepEqual(Object.entries(report.metadata), metaPairs);
  });

  it("a metadata value that is JSON is parsed for inspect under its own key, even __proto__", async () => {
    const p = join(dir.path, "json-meta.safetensors");
    writeSafetensorsText(p, [["w", [1]]], [["__proto__", '{"polluted": true}'], ["toString", "[1, 2]"]]);
    const r = inspectOpenedModel(await openModel(p));
    assert.deepEqual(Object.entries(r.metadata), [["__proto__", { polluted: true }], ["toString", [1, 2]]]);
    assert.equal((r.metadata as { polluted?: unknown }).polluted, undefined);
  });

  it("layoutSafetensors writes such names and metadata keys, which Python's json reads back", function () {
    requirePython(this);
    const entries = NAMES.map((name) => ({ name, dtype: "F32" as const, shape: [4] }));
    const layout = layoutSafetensors(entries, Object.fromEntries(metaPairs));
    const p = join(dir.path, "layout.safetensors");
    writeFileSync(p, Buffer.concat([layout.header, Buffer.alloc(layout.size - layout.header.length)]));
    const [back] = pyRead([p]);
    assert.deepEqual(back!.tensors.map(([n]) => n), NAMES);
    assert.deepEqual(back!.metadata, metaPairs);
    assert.equal(back!.end, back!.size, "data tiles the file exactly");
  });

  it("names that look like integers keep their place in the header", function () {
    requirePython(this);
    const names = ["b", "10", "a", "2"];
    const layout = layoutSafetensors(names.map((name) => ({ name, dtype: "F32" as const, shape: [1] })), { format: "pt" });
    const p = join(dir.path, "int-names.safetensors");
    writeFileSync(p, Buffer.concat([layout.header, Buffer.alloc(layout.size - layout.header.length)]));
    assert.deepEqual(pyRead([p])[0]!.tensors.map(([n]) => n), names);
  });

  describe("merged on each engine, from safetensors and from .ckpt saved by torch.save (zip and legacy)", function () {
    const zip = join(dir.path, "names-zip.ckpt"), legacy = join(dir.path, "names-legacy.ckpt");
    /** Every output, by path, as Python reads it (one Python start for all: torch is slow to import). */
    const read = new Map<string, PyFile>();
    const outputs = (engine: string) => ({
      s: join(dir.path, `out-${engine}.safetensors`),
      c: join(dir.path, `out-${engine}.ckpt`),
      again: join(dir.path, `again-${engine}.safetensors`),
      fromCkpt: [zip, legacy].flatMap((_, k) => [join(dir.path, `ckpt-in-${engine}-${k}.safetensors`), join(dir.path, `ckpt-in-${engine}-${k}.ckpt`)]),
    });
    before(async function () {
      requireTorch(this);
      runPython(String.raw`
import collections, json, sys, torch
names, meta = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sd = collections.OrderedDict((n, torch.tensor([float(i + 1), -(i + 1.0), 2.0 * i, 0.5])) for i, n in enumerate(names))
obj = {"state_dict": sd, "__metadata__": dict(meta)}
torch.save(obj, sys.argv[3])
torch.save(obj, sys.argv[4], _use_new_zipfile_serialization=False)
`, [JSON.stringify(NAMES), JSON.stringify(metaPairs), zip, legacy]);
      const metadata = Object.fromEntries(metaPairs);
      const all: string[] = [];
      for (const engine of ENGINES) {
        const o = outputs(engine);
        const ws = { method: "weighted-sum", multiplier: 0.5, engine } as const;
        await merge({ a, b, out: o.s, ...ws, metadata });
        await merge({ a, b, out: o.c, ...ws, metadata });
        // tensormerge merges its own outputs again.
        await merge({ a: o.s, b: o.c, out: o.again, ...ws, recipeMetadata: false });
        for (const [k, input] of [zip, legacy].entries()) {
          await merge({ a: input, b, out: o.fromCkpt[2 * k]!, ...ws });
          await merge({ a: input, b, out: o.fromCkpt[2 * k + 1]!, ...ws, metadata });
        }
        all.push(o.s, o.c, o.again, ...o.fromCkpt);
      }
      pyRead(all).forEach((f, i) => read.set(all[i]!, f));
    });

    const assertMerged = (path: string) => {
      const f = read.get(path)!;
      assert.deepEqual(f.tensors.map(([n]) => n), NAMES, path);
      f.tensors.forEach(([name, shape, values], i) => {
        assert.deepEqual(shape, [4], `${path}: ${name}`);
        assert.deepEqual(values, expected(i), `${path}: ${name}`);
      });
      if (f.size !== undefined) assert.equal(f.end, f.size, `${path}: data tiles the file`);
      return f;
    };

    for (const engine of ENGINES) {
      it(`${engine}: safetensors and .ckpt outputs hold every tensor and metadata key, and read back`, async () => {
        const o = outputs(engine);
        for (const path of [o.s, o.c]) {
          const f = assertMerged(path);
          for (const [k, v] of metaPairs) assert.deepEqual(f.metadata.filter(([x]) => x === k), [[k, v]], `${path}: ${k}`);
          assert.deepEqual((await openModel(path)).tensors.map((t) => t.name), NAMES);
        }
        assertMerged(o.again);
      });
    }

    it("the .ckpt reader keeps every state-dict name and __metadata__ key", async () => {
      for (const p of [zip, legacy]) {
        const m = await openModel(p);
        assert.deepEqual(m.tensors.map((t) => t.name), NAMES, p);
        assert.deepEqual(Object.entries(m.metadata), metaPairs, p);
      }
    });

    for (const engine of ENGINES) {
      it(`${engine}: .ckpt inputs merge into safetensors and .ckpt with every name`, () => {
        for (const path of outputs(engine).fromCkpt) {
          const f = assertMerged(path);
          if (path.endsWith(".ckpt")) assert.deepEqual(f.metadata, metaPairs);
        }
      });
    }
  });
});

describe("safetensors: a tensor name twice is DUPLICATE_TENSOR", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const entry = (begin: number) => `{"dtype":"F32","shape":[1],"data_offsets":[${begin},${begin + 4}]}`;
  const craft = (name: string, json: string, dataBytes: number) => {
    const p = join(dir.path, name);
    const text = Buffer.from(json);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    writeFileSync(p, Buffer.concat([len, text, Buffer.alloc(dataBytes)]));
    return p;
  };
  const rejects = async (p: string, code: string, tensor?: string) => {
    await assert.rejects(readSafetensors(p), (e: unknown) => {
      assert.ok(e instanceof MergeError, String(e));
      assert.equal(e.code, code, e.message);
      assert.equal(e.tensor, tensor);
      return true;
    });
  };

  it("names the tensor, whether it is written the same way or with escapes", async () => {
    await rejects(craft("dup", `{"w":${entry(0)},"v":${entry(4)},"w":${entry(8)}}`, 12), "DUPLICATE_TENSOR", "w");
    await rejects(craft("escaped", `{"w":${entry(0)},"\\u0077":${entry(4)}}`, 8), "DUPLICATE_TENSOR", "w");
    await rejects(craft("proto", `{"__proto__":${entry(0)},"__proto__":${entry(4)}}`, 8), "DUPLICATE_TENSOR", "__proto__");
  });

  it("a second __metadata__ is HEADER_INVALID", async () => {
    await rejects(craft("meta2", `{"__metadata__":{"a":"1"},"w":${entry(0)},"__metadata__":{"a":"2"}}`, 4), "HEADER_INVALID");
  });

  it("keys that only look alike inside strings and nested objects are not duplicates", async () => {
    // Quotes, commas and braces inside names and metadata values; "w" also appears as a nested key and a value.
    const tricky = ['a","w":{', "w\\", "{,}", 'x"y'];
    const json = `{"__metadata__":{"w":"w","n":"\\",\\"w\\":"},${tricky.map((n, i) => `${JSON.stringify(n)}:${entry(4 * i)}`).join(",")},"w":${entry(16)}}`;
    const m = await readSafetensors(craft("tricky", json, 20));
    assert.deepEqual(m.tensors.map((t) => t.name), [...tricky, "w"]);
  });
});
