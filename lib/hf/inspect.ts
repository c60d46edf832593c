/**
 * `tensormerge inspect ./folder`: a Hugging Face model folder's architecture (family, layers,
 * sizes, from config.json and the keys), dtypes, shards, and the recipe a tensormerge merge put
 * in its shards' metadata.
 */
import { DTYPE_SIZE, type Dtype } from "../dtypes";
import { numelOf } from "../model";
import { formatBytes, parseMetadataValues } from "../library/inspect";
import { formatParams } from "../library/identify";
import { identifyLlm, isLlmLayout, type LlmIdentification } from "./architecture";
import { openHfFolder } from "./folder";

export interface HfInspectReport {
  path: string;
  format: "huggingface-folder";
  /** Bytes of all shards. */
  size: number;
  tensorCount: number;
  params: number;
  /** Null when the tensors are not a transformers decoder (model.layers.N, embed_tokens). */
  llm: LlmIdentification | null;
  shards: { name: string; bytes: number; tensors: number }[];
  dtypes: { dtype: Dtype; tensors: number; bytes: number }[];
  /** The first shard's metadata, JSON values parsed. */
  metadata: Record<string, unknown>;
  notes: string[];
}

export async function inspectHfFolder(path: string): Promise<HfInspectReport> {
  const hf = await openHfFolder(path);
  const byDtype = new Map<Dtype, { dtype: Dtype; tensors: number; bytes: number }>();
  let params = 0;
  for (const t of hf.model.tensors) {
    const e = byDtype.get(t.dtype) ?? { dtype: t.dtype, tensors: 0, bytes: 0 };
    e.tensors++;
    e.bytes += numelOf(t.shape) * DTYPE_SIZE[t.dtype];
    params += numelOf(t.shape);
    byDtype.set(t.dtype, e);
  }
  return {
    path,
    format: "huggingface-folder",
    size: hf.model.size,
    tensorCount: hf.model.tensors.length,
    params,
    llm: isLlmLayout(hf.model) ? identifyLlm(hf.model, hf.config, path) : null,
    shards: hf.shards.map((s) => ({ name: s.path.slice(s.path.lastIndexOf("/") + 1), bytes: s.size, tensors: s.tensors.length })),
    dtypes: [...byDtype.values()].sort((x, y) => y.bytes - x.bytes),
    metadata: parseMetadataValues(hf.shards[0]?.metadata ?? {}),
    notes: hf.notes,
  };
}

export function formatHfInspectReport(r: HfInspectReport): string {
  const id = r.llm;
  const lines = [
    `${"folder".padEnd(14)}${r.path}`,
    `${"format".padEnd(14)}Hugging Face model folder, ${formatBytes(r.size)} in ${r.shards.length} shard${r.shards.length === 1 ? "" : "s"}, ${r.tensorCount} tensors`,
    `${"architecture".padEnd(14)}${id ? `${id.family}${id.architecture ? ` (${id.architecture})` : ""}${id.fromConfig ? "" : ", from the keys (no config.json)"}` : "not a transformers decoder layout"}`,
  ];
  if (id) {
    const sizes = [
      `${id.layers} layers`, id.hiddenSize !== undefined ? `hidden ${id.hiddenSize}` : "", id.heads !== undefined ? `${id.heads} heads` : "",
      id.kvHeads !== undefined && id.kvHeads !== id.heads ? `${id.kvHeads} key-value heads` : "", id.intermediateSize !== undefined ? `intermediate ${id.intermediateSize}` : "",
      id.vocabSize !== undefined ? `vocabulary ${id.vocabSize}` : "", id.tiedEmbeddings ? "tied embeddings" : "",
    ].filter(Boolean);
    lines.push(`${"sizes".padEnd(14)}${sizes.join(", ")}`);
    if (id.torchDtype) lines.push(`${"torch_dtype".padEnd(14)}${id.torchDtype}`);
  }
  lines.push(`${"parameters".padEnd(14)}${formatParams(r.params)} (${r.params.toLocaleString("en-US")})`);
  lines.push("dtypes");
  for (const d of r.dtypes) lines.push(`  ${d.dtype.padEnd(8)}${String(d.tensors).padStart(6)} tensors  ${formatBytes(d.bytes).padStart(10)}`);
  lines.push("shards");
  for (const s of r.shards) lines.push(`  ${s.name.padEnd(36)}${String(s.tensors).padStart(6)} tensors  ${formatBytes(s.bytes).padStart(10)}`);
  const meta = Object.entries(r.metadata);
  lines.push(`metadata${meta.length === 0 ? "      (none)" : ""}`);
  for (const [k, v] of meta) {
    const text = typeof v === "string" ? v : JSON.stringify(v, null, 2);
    lines.push(`  ${k}:${text.includes("\n") ? `\n${text.split("\n").map((l) => `    ${l}`).join("\n")}` : ` ${text}`}`);
  }
  if (r.notes.length) {
    lines.push("notes");
    for (const n of r.notes) lines.push(`  - ${n}`);
  }
  return lines.join("\n") + "\n";
}
