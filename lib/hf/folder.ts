/**
 * Hugging Face model folders as inputs: `model.safetensors`, or shards
 * `model-00001-of-0000N.safetensors` listed by `model.safetensors.index.json`
 * (`{ "metadata": { "total_size": N }, "weight_map": { tensor: shard file } }`, the layout
 * transformers' `save_pretrained` writes), plus `config.json`.
 *
 * A sharded folder is ONE logical model (a ModelFile whose `parts` say which shard holds each
 * tensor); the planner reads every tensor from its own shard, so each shard is one job input.
 *
 * The index is untrusted like a header: a JSON object of bounded size, every file name a plain
 * name inside the folder (no path separators, no "..") ending in .safetensors, every mapped
 * tensor present in the shard it names, no tensor in two shards, no shard tensor the index
 * leaves out, and `total_size` a non-negative integer. A `total_size` that differs from the
 * shards' data bytes is a note, not an error: the published Llama-2 indexes carry the size of
 * the `.bin` checkpoints (F32 `inv_freq` buffers), 4,096 bytes more than their safetensors.
 */
import { open, readdir, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { MergeError, fsError } from "../errors";
import { openModel } from "../formats";
import type { ModelFile, TensorInfo } from "../model";

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";
export const CONFIG_FILE = "config.json";
/** transformers' shard names: model-00001-of-00003.safetensors. */
export const SHARD_NAME = /^model-(\d{5})-of-(\d{5})\.safetensors$/;
/** Far above any real index (Llama-3-405B's is about 100 KB) or config. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;

/** A Hugging Face model folder, opened: the logical model plus what the folder says about it. */
export interface HfModel {
  folder: string;
  /** All tensors, as one model (`parts` set when there is more than one file). */
  model: ModelFile;
  /** The safetensors files, in index order (one for `model.safetensors`). */
  shards: ModelFile[];
  /** The parsed `config.json`, or undefined when the folder has none. */
  config: Record<string, unknown> | undefined;
  /** The index's `total_size`, when sharded. */
  totalSize?: number;
  notes: string[];
}

function invalid(path: string, message: string, tensor?: string): MergeError {
  return new MergeError("MODEL_FOLDER_INVALID", `${path}: ${message}`, tensor === undefined ? { path } : { path, tensor });
}

/** Whether `path` is a folder (false for a file or a missing path). */
export async function isModelFolder(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

/** Reads a small JSON file that must hold an object; undefined when the file does not exist. */
export async function readJsonObject(path: string, what: string): Promise<Record<string, unknown> | undefined> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw fsError(e, path, `opening ${what}`);
  }
  let text: string;
  try {
    const size = (await handle.stat()).size;
    if (size > MAX_JSON_BYTES) throw invalid(path, `${what} is ${size} bytes, more than the ${MAX_JSON_BYTES}-byte limit`);
    const buf = Buffer.alloc(size);
    const { bytesRead } = await handle.read(buf, 0, size, 0);
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, bytesRead));
    } catch {
      throw invalid(path, `${what} is not valid UTF-8`);
    }
  } catch (e) {
    if (e instanceof MergeError) throw e;
    throw fsError(e, path, `reading ${what}`);
  } finally {
    await handle.close();
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw invalid(path, `${what} is not valid JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw invalid(path, `${what} must be a JSON object`);
  return parsed as Record<string, unknown>;
}

/** A shard name from the index: a plain file name in the folder, never a path out of it. */
function checkShardName(indexPath: string, name: unknown, tensor: string): string {
  if (typeof name !== "string" || name === "") throw invalid(indexPath, `weight_map["${tensor}"] must be a file name, got ${JSON.stringify(name)}`, tensor);
  if (name.includes("/") || name.includes("\\") || name === "." || name === ".." || name.includes("\0")) {
    throw invalid(indexPath, `weight_map["${tensor}"] = ${JSON.stringify(name)} is not a plain file name inside the folder`, tensor);
  }
  if (!name.endsWith(".safetensors")) throw invalid(indexPath, `weight_map["${tensor}"] = ${JSON.stringify(name)} is not a .safetensors file`, tensor);
  return name;
}

/** The index, validated: shard names in first-seen order, and the shard of every tensor. */
export function parseIndex(indexPath: string, index: Record<string, unknown>): { shards: string[]; shardOf: Map<string, string>; totalSize?: number } {
  const map = Object.hasOwn(index, "weight_map") ? index.weight_map : undefined;
  if (map === null || typeof map !== "object" || Array.isArray(map)) throw invalid(indexPath, "weight_map must be an object of tensor name → shard file");
  const metadata = Object.hasOwn(index, "metadata") ? index.metadata : undefined;
  let totalSize: number | undefined;
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== "object" || Array.isArray(metadata)) throw invalid(indexPath, "metadata must be an object");
    const t = Object.hasOwn(metadata, "total_size") ? (metadata as Record<string, unknown>).total_size : undefined;
    if (t !== undefined) {
      if (typeof t !== "number" || !Number.isSafeInteger(t) || t < 0) throw invalid(indexPath, `metadata.total_size must be a non-negative integer, got ${JSON.stringify(t)}`);
      totalSize = t;
    }
  }
  const shardOf = new Map<string, string>();
  const shards: string[] = [];
  for (const [tensor, name] of Object.entries(map as Record<string, unknown>)) {
    const shard = checkShardName(indexPath, name, tensor);
    if (!shards.includes(shard)) shards.push(shard);
    shardOf.set(tensor, shard);
  }
  if (shardOf.size === 0) throw invalid(indexPath, "weight_map lists no tensors");
  shards.sort(); // transformers numbers them: file order is index order
  return { shards, shardOf, ...(totalSize !== undefined ? { totalSize } : {}) };
}

/** One logical model over several files: tensors in shard order, each read from its own shard. */
export function combineParts(path: string, files: ModelFile[], entries: { tensor: TensorInfo; file: ModelFile }[]): ModelFile {
  const tensors = entries.map((e) => e.tensor);
  const fileOf = new Map(entries.map((e) => [e.tensor.name, e.file]));
  return {
    path,
    format: "safetensors",
    size: files.reduce((s, f) => s + f.size, 0),
    tensors,
    byName: new Map(tensors.map((t) => [t.name, t])),
    metadata: files[0]?.metadata ?? {},
    headerLength: files.reduce((s, f) => s + f.headerLength, 0),
    notes: [],
    parts: { files, fileOf },
  };
}

/**
 * Opens a Hugging Face model folder (headers only, no tensor data).
 *
 * @example
 * const hf = await openHfFolder("./Mistral-7B-v0.1");
 * hf.shards.length;              // 2
 * hf.model.byName.has("lm_head.weight"); // true
 */
export async function openHfFolder(folder: string): Promise<HfModel> {
  const dir = resolve(folder);
  const names = await readdir(dir).catch((e) => { throw fsError(e, folder, "listing the model folder"); });
  const config = await readJsonObject(join(dir, CONFIG_FILE), CONFIG_FILE);
  const notes: string[] = [];
  if (!config) notes.push(`${folder} has no ${CONFIG_FILE}: the architecture is judged from the tensor names alone`);
  const indexPath = join(dir, INDEX_FILE);
  const index = await readJsonObject(indexPath, INDEX_FILE);
  if (!index) {
    if (names.includes(SINGLE_FILE)) {
      const model = await openModel(join(dir, SINGLE_FILE));
      return { folder, model: { ...model, path: folder, parts: { files: [model], fileOf: new Map(model.tensors.map((t) => [t.name, model])) } }, shards: [model], config, notes };
    }
    const shardFiles = names.filter((n) => SHARD_NAME.test(n));
    if (shardFiles.length) throw invalid(folder, `has shards (${shardFiles[0]} …) but no ${INDEX_FILE}: the index says which shard holds each tensor`);
    if (names.some((n) => n.endsWith(".bin"))) throw invalid(folder, "holds PyTorch .bin weights only; tensormerge reads Hugging Face folders of safetensors (model.safetensors or sharded with an index)");
    throw invalid(folder, `is not a Hugging Face model folder: no ${SINGLE_FILE} and no ${INDEX_FILE}`);
  }
  const { shards: shardNames, shardOf, totalSize } = parseIndex(indexPath, index);
  const shards: ModelFile[] = [];
  for (const name of shardNames) {
    if (!names.includes(name)) throw invalid(indexPath, `lists shard ${name}, which is not in the folder (an incomplete download?)`);
    shards.push(await openModel(join(dir, name)));
  }
  const entries: { tensor: TensorInfo; file: ModelFile }[] = [];
  const seenIn = new Map<string, string>();
  let dataBytes = 0;
  shards.forEach((shard, i) => {
    const name = shardNames[i]!;
    for (const t of shard.tensors) {
      const earlier = seenIn.get(t.name);
      if (earlier !== undefined) throw new MergeError("DUPLICATE_TENSOR", `${folder}: tensor "${t.name}" is in two shards, ${earlier} and ${name}`, { path: folder, tensor: t.name });
      seenIn.set(t.name, name);
      const mapped = shardOf.get(t.name);
      if (mapped === undefined) throw invalid(indexPath, `does not list tensor "${t.name}" of ${name}`, t.name);
      if (mapped !== name) throw invalid(indexPath, `puts tensor "${t.name}" in ${mapped}, but it is in ${name}`, t.name);
      entries.push({ tensor: t, file: shard });
      dataBytes += t.byteLength;
    }
  });
  for (const [tensor, shard] of shardOf) {
    if (!seenIn.has(tensor)) throw invalid(indexPath, `lists tensor "${tensor}" in ${shard}, which does not hold it`, tensor);
  }
  if (totalSize !== undefined && totalSize !== dataBytes) {
    notes.push(`${INDEX_FILE}: metadata.total_size is ${totalSize}, the shards hold ${dataBytes} bytes of tensor data (some published indexes carry the .bin checkpoint's size)`);
  }
  const model = combineParts(folder, shards, entries);
  // Scaled fp8 scales, read per shard, keep their tensor names in the folder's one model.
  const scales = shards.flatMap((s) => [...(s.fp8Scales ?? new Map())]);
  if (scales.length) model.fp8Scales = new Map(scales);
  return { folder, model, shards, config, ...(totalSize !== undefined ? { totalSize } : {}), notes };
}

/** "model-00002-of-00003.safetensors". */
export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, "0");
  return count === 1 ? SINGLE_FILE : `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}

export function folderLabel(folder: string): string {
  return basename(resolve(folder));
}
