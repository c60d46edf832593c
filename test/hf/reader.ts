/**
 * An independent reader of Hugging Face output folders for the tests: the index and the shards
 * read by hand (test/helpers/models.ts readModel, a JSON.parse of the header), never by lib/.
 * Checks what transformers' loader relies on: every shard the index names exists and holds
 * exactly the tensors mapped to it, total_size is the sum of the tensor data, shards are complete
 * safetensors files (header + data = file size, data contiguous), names follow
 * model-0000k-of-0000N.safetensors.
 */
import { strict as assert } from "node:assert";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { readModel, type ReadTensor } from "../helpers/models";

export interface ReadFolder {
  tensors: Map<string, ReadTensor>;
  shards: { name: string; size: number; tensors: string[]; dataBytes: number; metadata: Record<string, string> }[];
  index?: { metadata: { total_size: number }; weight_map: Record<string, string> };
  config?: Record<string, unknown>;
  files: string[];
}

function checkShardFile(path: string): void {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
  const ranges = Object.entries(header).filter(([k]) => k !== "__metadata__").map(([, v]) => v.data_offsets).sort((x, y) => x[0] - y[0]);
  let at = 0;
  for (const [b, e] of ranges) {
    assert.equal(b, at, `${path}: data not contiguous`);
    at = e;
  }
  assert.equal(8 + n + at, buf.length, `${path}: header + data must be the file size`);
  assert.equal((8 + n) % 8, 0, `${path}: data should start 8-byte aligned`);
}

export function readHfFolder(dir: string): ReadFolder {
  const files = readdirSync(dir).sort();
  const indexPath = join(dir, "model.safetensors.index.json");
  const out: ReadFolder = { tensors: new Map(), shards: [], files };
  if (existsSync(join(dir, "config.json"))) out.config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  let shardNames: string[];
  if (existsSync(indexPath)) {
    out.index = JSON.parse(readFileSync(indexPath, "utf8"));
    shardNames = [...new Set(Object.values(out.index!.weight_map))].sort();
    const count = shardNames.length;
    shardNames.forEach((name, i) => assert.equal(name, `model-${String(i + 1).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.safetensors`));
    assert.deepEqual(files.filter((f) => f.endsWith(".safetensors")), shardNames, "the folder's shards are the index's");
  } else {
    shardNames = ["model.safetensors"];
    assert.deepEqual(files.filter((f) => f.endsWith(".safetensors")), shardNames);
  }
  let total = 0;
  for (const name of shardNames) {
    const path = join(dir, name);
    checkShardFile(path);
    const m = readModel(path);
    let dataBytes = 0;
    for (const t of m.order) {
      assert.ok(!out.tensors.has(t), `${t} in two shards`);
      out.tensors.set(t, m.tensors.get(t)!);
      dataBytes += m.tensors.get(t)!.bytes.length;
      if (out.index) assert.equal(out.index.weight_map[t], name, `index puts ${t} in ${out.index.weight_map[t]}, it is in ${name}`);
    }
    total += dataBytes;
    out.shards.push({ name, size: statSync(path).size, tensors: m.order, dataBytes, metadata: m.metadata });
  }
  if (out.index) {
    assert.equal(out.index.metadata.total_size, total, "total_size is the tensor data bytes");
    assert.equal(Object.keys(out.index.weight_map).length, out.tensors.size, "the index maps every tensor, once");
  }
  return out;
}
