/**
 * What a language model folder is, from `config.json` and the tensor names (transformers
 * layout): family, hidden size, layers, attention heads, vocabulary. And whether several can
 * be merged: the same family and sizes, refused before anything is written, naming the field.
 *
 * Families (transformers `model_type`): llama, mistral, qwen2, gemma / gemma2, phi3, and any
 * other decoder whose layers are `model.layers.N.*` (identified as such, compared by sizes).
 * Key tells, used when a folder has no config.json: phi3 fuses `qkv_proj` and `gate_up_proj`;
 * qwen2 has biases on q/k/v; gemma ties the output to the embedding (no `lm_head`); llama and
 * mistral have the same keys (only the config tells them apart).
 */
import { MergeError } from "../errors";
import type { ModelFile } from "../model";

export const LLM_FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "phi3"] as const;

/** Layer index of a transformers decoder key: 12 for "model.layers.12.mlp.up_proj.weight". */
export const LAYER_KEY = /^model\.layers\.(\d+)\./;

export interface LlmIdentification {
  /** transformers `model_type` ("llama", "mistral", …), or a guess from the keys. */
  family: string;
  /** Whether `family` comes from config.json (else from the keys). */
  fromConfig: boolean;
  /** config.json `architectures[0]` ("MistralForCausalLM"). */
  architecture?: string;
  hiddenSize?: number;
  layers: number;
  heads?: number;
  kvHeads?: number;
  intermediateSize?: number;
  vocabSize?: number;
  /** config.json `torch_dtype`. */
  torchDtype?: string;
  /** The output layer is the embedding (no `lm_head.weight`). */
  tiedEmbeddings: boolean;
}

/** The config fields compared between models, in the order a mismatch is reported. */
export const COMPARED_FIELDS = [
  ["model_type", "family"],
  ["hidden_size", "hiddenSize"],
  ["num_hidden_layers", "layers"],
  ["num_attention_heads", "heads"],
  ["num_key_value_heads", "kvHeads"],
  ["intermediate_size", "intermediateSize"],
  ["vocab_size", "vocabSize"],
] as const;

function positiveInt(config: Record<string, unknown> | undefined, field: string, path: string): number | undefined {
  if (!config || !Object.hasOwn(config, field)) return undefined;
  const v = config[field];
  if (v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
    throw new MergeError("MODEL_FOLDER_INVALID", `${path}: config.json ${field} must be a positive integer, got ${JSON.stringify(v)}`, { path });
  }
  return v;
}

function stringField(config: Record<string, unknown> | undefined, field: string, path: string): string | undefined {
  if (!config || !Object.hasOwn(config, field) || config[field] === null) return undefined;
  const v = config[field];
  if (typeof v !== "string") throw new MergeError("MODEL_FOLDER_INVALID", `${path}: config.json ${field} must be a string, got ${JSON.stringify(v)}`, { path });
  return v;
}

/** Number of decoder layers from the keys: one more than the highest `model.layers.N`. */
export function layerCountOf(model: Pick<ModelFile, "tensors">): number {
  let max = -1;
  for (const t of model.tensors) {
    const m = LAYER_KEY.exec(t.name);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max + 1;
}

function familyFromKeys(model: ModelFile): string {
  const has = (suffix: string) => model.byName.has(`model.layers.0.${suffix}`);
  if (has("self_attn.qkv_proj.weight") && has("mlp.gate_up_proj.weight")) return "phi3";
  if (has("self_attn.q_proj.bias")) return "qwen2";
  if (!model.byName.has("lm_head.weight") && has("pre_feedforward_layernorm.weight")) return "gemma2";
  if (!model.byName.has("lm_head.weight") && has("mlp.gate_proj.weight")) return "gemma";
  if (has("self_attn.q_proj.weight")) return "llama";
  return "unknown";
}

/**
 * Identifies a language model from its config.json (when there is one) and its tensors; the
 * config's sizes are cross-checked against the tensors that carry them.
 */
export function identifyLlm(model: ModelFile, config: Record<string, unknown> | undefined, path = model.path): LlmIdentification {
  const modelType = stringField(config, "model_type", path);
  const archs = config && Object.hasOwn(config, "architectures") ? config.architectures : undefined;
  if (archs !== undefined && archs !== null && (!Array.isArray(archs) || !archs.every((a) => typeof a === "string"))) {
    throw new MergeError("MODEL_FOLDER_INVALID", `${path}: config.json architectures must be a list of strings`, { path });
  }
  const keyLayers = layerCountOf(model);
  const layers = positiveInt(config, "num_hidden_layers", path) ?? keyLayers;
  if (config && keyLayers !== layers) {
    throw new MergeError("MODEL_FOLDER_INVALID", `${path}: config.json num_hidden_layers is ${layers} but the weights have ${keyLayers} layers (model.layers.0 … ${keyLayers - 1})`, { path });
  }
  const embed = model.byName.get("model.embed_tokens.weight");
  const hiddenSize = positiveInt(config, "hidden_size", path) ?? embed?.shape[1];
  const vocabSize = positiveInt(config, "vocab_size", path) ?? embed?.shape[0];
  if (embed && embed.shape.length === 2) {
    if (hiddenSize !== undefined && embed.shape[1] !== hiddenSize) throw new MergeError("MODEL_FOLDER_INVALID", `${path}: config.json hidden_size is ${hiddenSize} but model.embed_tokens.weight is [${embed.shape.join(", ")}]`, { path, tensor: embed.name });
    if (vocabSize !== undefined && embed.shape[0] !== vocabSize) throw new MergeError("MODEL_FOLDER_INVALID", `${path}: config.json vocab_size is ${vocabSize} but model.embed_tokens.weight has ${embed.shape[0]} rows`, { path, tensor: embed.name });
  }
  const heads = positiveInt(config, "num_attention_heads", path);
  const kvHeads = positiveInt(config, "num_key_value_heads", path) ?? heads;
  const intermediateSize = positiveInt(config, "intermediate_size", path);
  const torchDtype = stringField(config, "torch_dtype", path) ?? stringField(config, "dtype", path);
  const architecture = Array.isArray(archs) && archs.length ? (archs[0] as string) : undefined;
  return {
    family: modelType ?? familyFromKeys(model),
    fromConfig: modelType !== undefined,
    ...(architecture ? { architecture } : {}),
    ...(hiddenSize !== undefined ? { hiddenSize } : {}),
    layers,
    ...(heads !== undefined ? { heads } : {}),
    ...(kvHeads !== undefined ? { kvHeads } : {}),
    ...(intermediateSize !== undefined ? { intermediateSize } : {}),
    ...(vocabSize !== undefined ? { vocabSize } : {}),
    ...(torchDtype !== undefined ? { torchDtype } : {}),
    tiedEmbeddings: !model.byName.has("lm_head.weight"),
  };
}

/** Whether a folder's tensors look like a transformers decoder (what lib/hf merges). */
export function isLlmLayout(model: Pick<ModelFile, "tensors">): boolean {
  return layerCountOf(model) > 0 && model.tensors.some((t) => t.name === "model.embed_tokens.weight");
}

/**
 * Refuses (ARCHITECTURE_MISMATCH) models that cannot be merged, before anything is written:
 * the first field that differs from the first model's, named as config.json names it. A
 * vocabulary mismatch says so plainly (no tokenizer union: mergekit's `tokenizer_source: union`
 * is refused). `ignoreLayers`: a passthrough of slices takes layers from models of any depth.
 */
export function assertLlmCompatible(models: readonly { label: string; id: LlmIdentification }[], ignoreLayers = false): void {
  const [first, ...rest] = models;
  if (!first) return;
  for (const other of rest) {
    for (const [field, key] of COMPARED_FIELDS) {
      if (ignoreLayers && key === "layers") continue;
      const a = first.id[key], b = other.id[key];
      if (a === undefined || b === undefined || a === b) continue;
      if (key === "family" && (!first.id.fromConfig || !other.id.fromConfig)) continue; // a guess from keys is no evidence
      if (key === "vocabSize") {
        throw new MergeError("ARCHITECTURE_MISMATCH", `vocab_size differs: ${first.label} has ${a} tokens, ${other.label} has ${b}. Models with different vocabularies cannot be merged tensor by tensor (their embedding rows mean different tokens); tensormerge does not build a tokenizer union`, { path: other.label });
      }
      throw new MergeError("ARCHITECTURE_MISMATCH", `${field} differs: ${a} in ${first.label}, ${b} in ${other.label}`, { path: other.label });
    }
  }
}
