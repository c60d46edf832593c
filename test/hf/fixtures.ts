/**
 * Small Hugging Face folders with the real key structure of Llama-2-7B, Mistral-7B and
 * Qwen2.5-7B (../shared/layouts, gzipped copies in test/fixtures/layouts), shapes shrunk and
 * layers cut, written with the tests' own safetensors writer (test/helpers/models.ts), sharded
 * like transformers (keys sorted within each shard, an index json), with a config.json of the
 * family's real fields and tokenizer files.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gunzipSync } from "node:zlib";
import { bf16FromF32, decodeValues, encodeValues, numel, randomValues, writeModel, type TestDtype, type TestTensor } from "../helpers/models";

export type Family = "llama" | "mistral" | "qwen2";

const LAYOUT_FILE: Record<Family, string> = { llama: "llama2_7b", mistral: "mistral_7b", qwen2: "qwen2_5_7b" };
/** Real dimension → shrunk one (vocabularies 32000 → 32, 152064 → 40; hidden 16; 4 heads of 4; 2 kv heads). */
const SHRINK: Record<number, number> = { 32000: 32, 152064: 40, 4096: 16, 3584: 16, 14336: 24, 11008: 24, 18944: 24, 1024: 8, 512: 8, 64: 2 };
const SIZES: Record<Family, { vocab: number; kvHeads: number }> = { llama: { vocab: 32, kvHeads: 4 }, mistral: { vocab: 32, kvHeads: 2 }, qwen2: { vocab: 40, kvHeads: 2 } };

function layoutsFile(name: string): string {
  const dirs = [resolve(__dirname, "..", "..", "..", "test", "fixtures", "layouts"), resolve(__dirname, "..", "fixtures", "layouts")];
  for (const d of dirs) if (existsSync(join(d, `${name}.gz`))) return gunzipSync(readFileSync(join(d, `${name}.gz`))).toString("utf8");
  throw new Error(`layout ${name} not found in ${dirs.join(", ")}`);
}

/** The family's real keys in state-dict order (embedding, layers, norm, lm_head), shapes shrunk, `layers` layers. */
export function llmLayout(family: Family, layers: number): { name: string; shape: number[] }[] {
  const entries = JSON.parse(layoutsFile(`${LAYOUT_FILE[family]}.json`)) as [string, number[], string][];
  const layerOf = (n: string) => Number(/^model\.layers\.(\d+)\./.exec(n)?.[1] ?? -1);
  const kept = entries.filter(([n]) => layerOf(n) < layers);
  const rank = (n: string) => (n.startsWith("model.embed_tokens") ? -1 : layerOf(n) >= 0 ? layerOf(n) : n === "model.norm.weight" ? 1e6 : 1e6 + 1);
  kept.sort((x, y) => rank(x[0]) - rank(y[0]) || (x[0] < y[0] ? -1 : 1));
  return kept.map(([name, shape]) => ({ name, shape: shape.map((d) => SHRINK[d] ?? (() => { throw new Error(`no shrink for ${d} in ${name}`); })()) }));
}

export function llmConfig(family: Family, layers: number, dtype: TestDtype, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const torch = dtype === "BF16" ? "bfloat16" : dtype === "F16" ? "float16" : "float32";
  const arch = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" }[family];
  return {
    architectures: [arch], attention_dropout: 0.0, bos_token_id: 1, eos_token_id: 2, hidden_act: "silu",
    hidden_size: 16, initializer_range: 0.02, intermediate_size: 24, max_position_embeddings: 4096,
    model_type: family, num_attention_heads: 4, num_hidden_layers: layers, num_key_value_heads: SIZES[family].kvHeads,
    rms_norm_eps: 1e-5, rope_theta: 10000.0, tie_word_embeddings: false, torch_dtype: torch,
    transformers_version: "4.40.0", use_cache: true, vocab_size: SIZES[family].vocab, ...extra,
  };
}

export interface LlmFolderSpec {
  family: Family;
  layers: number;
  seed: number;
  dtype?: TestDtype;
  /** Shards (1: model.safetensors, no index). */
  shards?: number;
  config?: Record<string, unknown>;
  /** Tokenizer files carry this text (to tell sources apart). */
  tokenizerTag?: string;
}

/** Every tensor's values as stored (after rounding to the dtype), by name, in state-dict order. */
export type StoredTensors = Map<string, { shape: number[]; dtype: TestDtype; values: number[] }>;

export function writeLlmFolder(dir: string, spec: LlmFolderSpec): StoredTensors {
  mkdirSync(dir, { recursive: true });
  const dtype = spec.dtype ?? "BF16";
  const layout = llmLayout(spec.family, spec.layers);
  const stored: StoredTensors = new Map();
  const tensors: Record<string, TestTensor>[] = [];
  const shardCount = spec.shards ?? 1;
  const perShard = Math.ceil(layout.length / shardCount);
  layout.forEach((e, i) => {
    const raw = encodeValues(dtype, randomValues(numel(e.shape), spec.seed * 7919 + i + 1));
    stored.set(e.name, { shape: e.shape, dtype, values: decodeValues(dtype, raw) });
    const s = Math.floor(i / perShard);
    (tensors[s] ??= {})[e.name] = { dtype, shape: e.shape, raw };
  });
  const names = tensors.map((_, s) => (shardCount === 1 ? "model.safetensors" : `model-${String(s + 1).padStart(5, "0")}-of-${String(shardCount).padStart(5, "0")}.safetensors`));
  const weightMap: Record<string, string> = {};
  let total = 0;
  tensors.forEach((group, s) => {
    const sorted = Object.fromEntries(Object.entries(group).sort(([x], [y]) => (x < y ? -1 : 1))); // on disk: by key within a shard
    writeModel(join(dir, names[s]!), sorted, { format: "pt" });
    for (const [n, t] of Object.entries(group)) {
      weightMap[n] = names[s]!;
      total += t.raw!.length;
    }
  });
  if (shardCount > 1) {
    const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([x], [y]) => (x < y ? -1 : 1)));
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: sortedMap }, null, 2));
  }
  writeFileSync(join(dir, "config.json"), JSON.stringify(llmConfig(spec.family, spec.layers, dtype, spec.config), null, 2));
  const tag = spec.tokenizerTag ?? `tokenizer of seed ${spec.seed}`;
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({ version: "1.0", tag }));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ model_max_length: 4096, tag }));
  writeFileSync(join(dir, "special_tokens_map.json"), JSON.stringify({ bos_token: "<s>", tag }));
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, tag }));
  return stored;
}

/** The highest layer index of a key, or -1. */
export function layerOf(name: string): number {
  return Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? -1);
}

const f = Math.fround;
/** The weighted-sum kernel as the engines define it (lib/native/job.ts), each step rounded to fp32. */
export const weightedSumF32 = (a: number, b: number, m: number) => f(f(a * f(1 - m)) + f(b * f(m)));

/** x rounded to bf16 as stored, read back as a number. */
export function toBf16(x: number): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setUint32(0, bf16FromF32(x) << 16);
  return v.getFloat32(0);
}
