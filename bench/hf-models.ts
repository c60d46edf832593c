/**
 * Mistral-7B-size Hugging Face folders for the language-model bench (bench/hf-llm.ts): the real
 * Mistral-7B-v0.1 keys, shapes and shard split (../shared/layouts/mistral_7b.json and its
 * `.index.json` when present, else built from the published config: 32 layers, hidden 4096,
 * intermediate 14336, 32 heads, 8 KV heads, vocabulary 32000, split at 10 GB as the real repo's
 * `max_shard_size` did), bf16, random data, `config.json` the published one.
 *
 * lib/synthetic.ts encodes element by element (about 50 M elements/s): 2 × 7.2 G elements would
 * take most of the bench's disk window. Here each tensor is filled from a 64 Ki-entry table of bf16
 * normal quantiles indexed by a seeded xorshift (two elements per 32-bit draw), written in 32 MiB
 * chunks while the next chunk is generated. The statistics are those of N(0, 0.02) weights and
 * norm scales near 1, which is all slerp's norms and TIES's magnitudes need.
 *
 * A folder is reused when its index (written last) lists every tensor; shards are written under a
 * temporary name and renamed.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir, open, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { f32BitsToBf16, f32ToBits } from "../lib/dtypes";
import { layoutSafetensors } from "../lib/formats/safetensors";
import { shrinkLayout, seededRandom, type LayoutEntry } from "../lib/synthetic";

/** The published Mistral-7B-v0.1 config.json (huggingface.co/mistralai/Mistral-7B-v0.1). */
export const MISTRAL_7B_CONFIG = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.34.0.dev0",
  use_cache: true,
  vocab_size: 32000,
};

export interface HfLayout {
  /** Every tensor, in the order written (sorted by key, as safetensors writes one dtype). */
  tensors: LayoutEntry[];
  /** Shard file name → its tensors, in order. */
  shards: { name: string; tensors: LayoutEntry[] }[];
  config: Record<string, unknown>;
  source: string;
}

/** The keys and shapes of the published config, sorted by key (the fallback without ../shared/layouts). */
export function mistralTensorsFromConfig(config = MISTRAL_7B_CONFIG): LayoutEntry[] {
  const h = config.hidden_size, i = config.intermediate_size, v = config.vocab_size;
  const kv = (h / config.num_attention_heads) * config.num_key_value_heads;
  const out: LayoutEntry[] = [["lm_head.weight", [v, h], "BF16"], ["model.embed_tokens.weight", [v, h], "BF16"], ["model.norm.weight", [h], "BF16"]];
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    out.push(
      [`${p}input_layernorm.weight`, [h], "BF16"], [`${p}mlp.down_proj.weight`, [h, i], "BF16"], [`${p}mlp.gate_proj.weight`, [i, h], "BF16"],
      [`${p}mlp.up_proj.weight`, [i, h], "BF16"], [`${p}post_attention_layernorm.weight`, [h], "BF16"], [`${p}self_attn.k_proj.weight`, [kv, h], "BF16"],
      [`${p}self_attn.o_proj.weight`, [h, h], "BF16"], [`${p}self_attn.q_proj.weight`, [h, h], "BF16"], [`${p}self_attn.v_proj.weight`, [kv, h], "BF16"],
    );
  }
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** State-dict order (embedding, layers by number, norm, lm_head): the order the real shards split in. */
function stateDictRank(name: string): [number, number, string] {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  if (m) return [1, Number(m[1]), name];
  return [name.startsWith("model.embed_tokens") ? 0 : name.startsWith("model.norm") ? 2 : 3, 0, name];
}

/** Splits in state-dict order at `maxBytes` (transformers' sharding), each shard's tensors sorted by key. */
function splitLikeTransformers(tensors: LayoutEntry[], maxBytes: number): Map<string, string> {
  const ordered = [...tensors].sort((x, y) => {
    const [a, b] = [stateDictRank(x[0]), stateDictRank(y[0])];
    return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : 1);
  });
  const groups: string[][] = [[]];
  let size = 0;
  for (const [name, shape] of ordered) {
    const bytes = shape.reduce((n, d) => n * d, 2);
    if (size + bytes > maxBytes && groups.at(-1)!.length > 0) {
      groups.push([]);
      size = 0;
    }
    groups.at(-1)!.push(name);
    size += bytes;
  }
  const shardOf = new Map<string, string>();
  groups.forEach((g, k) => g.forEach((name) => shardOf.set(name, `model-${String(k + 1).padStart(5, "0")}-of-${String(groups.length).padStart(5, "0")}.safetensors`)));
  return shardOf;
}

/**
 * The Mistral-7B layout, shrunk by `shrink` (every dimension above 16 divided, config sizes
 * alike, so a 1/8 model is 1/64 of the bytes with the same keys, shards and head structure).
 */
export function mistral7bLayout(layoutsDir: string, shrink = 1): HfLayout {
  const layoutFile = join(layoutsDir, "mistral_7b.json");
  const indexFile = join(layoutsDir, "mistral_7b.index.json");
  let tensors: LayoutEntry[];
  let shardOf: Map<string, string>;
  let source: string;
  if (existsSync(layoutFile) && existsSync(indexFile)) {
    tensors = JSON.parse(readFileSync(layoutFile, "utf8")) as LayoutEntry[];
    shardOf = new Map(Object.entries((JSON.parse(readFileSync(indexFile, "utf8")) as { weight_map: Record<string, string> }).weight_map));
    source = layoutFile;
  } else {
    tensors = mistralTensorsFromConfig();
    shardOf = splitLikeTransformers(tensors, 10e9);
    source = "the published Mistral-7B-v0.1 config (../shared/layouts not found)";
  }
  tensors = shrinkLayout(tensors, shrink);
  const names = [...new Set(tensors.map(([n]) => shardOf.get(n) ?? ""))].sort();
  if (names.includes("")) throw new Error(`${indexFile}: a tensor of the layout has no shard`);
  const shards = names.map((name) => ({ name, tensors: tensors.filter(([n]) => shardOf.get(n) === name) }));
  const div = (d: number) => (shrink > 1 && d > 16 ? Math.max(16, Math.ceil(d / shrink)) : d);
  const config = { ...MISTRAL_7B_CONFIG, hidden_size: div(4096), intermediate_size: div(14336), vocab_size: div(32000) };
  return { tensors, shards, config, source };
}

/** 65536 bf16 bit patterns of N(mean, std) quantiles: a uniform 16-bit index draws a normal value. */
function normalTable(mean: number, std: number): Uint16Array {
  const table = new Uint16Array(65536);
  // Box-Muller from a fixed generator, sorted: the table is the empirical quantile function.
  const random = seededRandom(0x5eed);
  const values = new Float32Array(65536);
  for (let k = 0; k < 65536; k += 2) {
    const u = Math.max(random(), 1e-12), v = random();
    const r = Math.sqrt(-2 * Math.log(u));
    values[k] = mean + std * r * Math.cos(2 * Math.PI * v);
    values[k + 1] = mean + std * r * Math.sin(2 * Math.PI * v);
  }
  values.sort();
  for (let k = 0; k < 65536; k++) table[k] = f32BitsToBf16(f32ToBits(values[k]!));
  return table;
}

const WEIGHTS = normalTable(0, 0.02);
const NORM_SCALES = normalTable(1, 0.02);
const CHUNK_ELEMENTS = 16 * 1024 * 1024;

/** Fills `out` from the table with a xorshift32 state; returns the next state. */
function fillFromTable(out: Uint16Array, n: number, table: Uint16Array, state: number): number {
  let x = state | 0 || 1;
  let k = 0;
  for (; k + 1 < n; k += 2) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[k] = table[x & 0xffff]!;
    out[k + 1] = table[(x >>> 16) & 0xffff]!;
  }
  if (k < n) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[k] = table[x & 0xffff]!;
  }
  return x;
}

/** Writes one bf16 shard; returns its size. Two chunk buffers: one is written while the next fills. */
async function writeShard(path: string, tensors: LayoutEntry[], seed: number): Promise<number> {
  const plan = layoutSafetensors(tensors.map(([name, shape, dtype]) => ({ name, shape, dtype })), { format: "pt" });
  const temp = `${path}.partial-${process.pid}`;
  const handle = await open(temp, "w");
  try {
    await handle.write(plan.header, 0, plan.header.length, 0);
    let position = plan.header.length;
    const buffers = [new Uint16Array(CHUNK_ELEMENTS), new Uint16Array(CHUNK_ELEMENTS)];
    let pending: Promise<unknown> = Promise.resolve();
    let which = 0;
    let state = (seed * 0x9e3779b1) | 1;
    for (const [name, shape, dtype] of tensors) {
      if (dtype !== "BF16") throw new Error(`${name}: the bench generator writes BF16 only, got ${dtype}`);
      const table = /norm\.weight$/.test(name) ? NORM_SCALES : WEIGHTS;
      const n = shape.reduce((a, d) => a * d, 1);
      for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
        const count = Math.min(CHUNK_ELEMENTS, n - start);
        const buffer = buffers[which]!;
        state = fillFromTable(buffer, count, table, state);
        await pending;
        const at = position;
        pending = handle.write(new Uint8Array(buffer.buffer, 0, count * 2), 0, count * 2, at);
        position += count * 2;
        which ^= 1;
      }
    }
    await pending;
    if (position !== plan.size) throw new Error(`${path}: wrote ${position} bytes, the header plans ${plan.size}`);
    await handle.sync();
  } catch (e) {
    await handle.close();
    await rm(temp, { force: true });
    throw e;
  }
  await handle.close();
  await rename(temp, path);
  return plan.size;
}

export interface GeneratedFolder {
  dir: string;
  shardPaths: string[];
  bytes: number;
  seconds: number;
  reused: boolean;
}

/** Writes (or reuses) a folder: shards, config.json, then the index (its presence marks the folder complete). */
export async function ensureHfFolder(dir: string, layout: HfLayout, seed: number): Promise<GeneratedFolder> {
  const index = join(dir, "model.safetensors.index.json");
  const shardPaths = layout.shards.map((s) => join(dir, s.name));
  if (existsSync(index)) {
    const parsed = JSON.parse(readFileSync(index, "utf8")) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    if (Object.keys(parsed.weight_map).length === layout.tensors.length && shardPaths.every((p) => existsSync(p))) {
      return { dir, shardPaths, bytes: shardPaths.reduce((n, p) => n + statSync(p).size, 0), seconds: 0, reused: true };
    }
  }
  const started = Date.now();
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  let bytes = 0;
  let dataBytes = 0;
  for (const [k, shard] of layout.shards.entries()) {
    const size = await writeShard(join(dir, shard.name), shard.tensors, seed * 100 + k);
    bytes += size;
    dataBytes += shard.tensors.reduce((n, [, shape]) => n + shape.reduce((a, d) => a * d, 2), 0);
  }
  await writeFile(join(dir, "config.json"), JSON.stringify(layout.config, null, 2) + "\n");
  const weightMap = Object.fromEntries(layout.shards.flatMap((s) => s.tensors.map(([n]) => [n, s.name] as const)).sort(([a], [b]) => (a < b ? -1 : 1)));
  await writeFile(index, JSON.stringify({ metadata: { total_size: dataBytes }, weight_map: weightMap }, null, 2) + "\n");
  return { dir, shardPaths, bytes, seconds: (Date.now() - started) / 1000, reused: false };
}

