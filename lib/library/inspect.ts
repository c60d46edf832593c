/**
 * `tensormerge inspect`: what a model file holds, from its header: format and sizes,
 * architecture, components, dtypes, and metadata with JSON values (merge recipes such as
 * A1111's `sd_merge_recipe`, ModelSpec fields, training settings) parsed for pretty-printing.
 */
import { DTYPE_SIZE, type Dtype } from "../dtypes";
import { openModel } from "../formats";
import { numelOf, type ModelFile } from "../model";
import type { FileHashes } from "./hash";
import { describeArchitecture, formatParams, identifyModel, type Identification } from "./identify";
import { formatLoraSummary, summarizeLora, type LoraSummary } from "../lora/describe";
import { looksLikeLora, readLoraModel } from "../lora/read";

export interface InspectReport {
  path: string;
  format: string;
  size: number;
  /** Header bytes (safetensors: 8 + JSON length). */
  headerLength: number;
  tensorCount: number;
  identification: Identification;
  /** Per dtype: tensors, elements and bytes. */
  dtypes: { dtype: Dtype; tensors: number; params: number; bytes: number }[];
  /** Metadata values, JSON-parsed where they are JSON objects or arrays, else the string. */
  metadata: Record<string, unknown>;
  notes: string[];
  hashes?: FileHashes;
  /** For a LoRA / LyCORIS file: its format, rank, alpha, target architecture and blocks (lib/lora). */
  lora?: LoraSummary;
}

/** Adds the LoRA summary to the report of a file whose tensors look like a LoRA (a malformed one gets a note). */
export async function withLoraSummary(report: InspectReport, model: ModelFile): Promise<InspectReport> {
  if (!looksLikeLora(model.tensors.map((t) => t.name))) return report;
  try {
    report.lora = summarizeLora(await readLoraModel(model));
  } catch (e) {
    report.notes.push(`looks like a LoRA but cannot be read as one: ${e instanceof Error ? e.message : String(e)}`);
  }
  return report;
}

/** Parses metadata values that hold JSON objects or arrays (recipes); leaves the rest as strings. */
export function parseMetadataValues(metadata: Record<string, string>): Record<string, unknown> {
  // Built from pairs: keys are data, and a key named "__proto__" stays an own property.
  return Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, parsedValue(v)]));
}

function parsedValue(v: string): unknown {
  const t = v.trim();
  if ((t.startsWith("{") && t.endsWith("}")) || (t.startsWith("[") && t.endsWith("]"))) {
    try {
      return JSON.parse(t);
    } catch {
      // not JSON after all: keep the text
    }
  }
  return v;
}

/** Builds the report for an opened model. */
export function inspectOpenedModel(model: ModelFile): InspectReport {
  const byDtype = new Map<Dtype, { dtype: Dtype; tensors: number; params: number; bytes: number }>();
  for (const t of model.tensors) {
    const e = byDtype.get(t.dtype) ?? { dtype: t.dtype, tensors: 0, params: 0, bytes: 0 };
    e.tensors++;
    e.params += numelOf(t.shape);
    e.bytes += numelOf(t.shape) * DTYPE_SIZE[t.dtype];
    byDtype.set(t.dtype, e);
  }
  return {
    path: model.path,
    format: model.format,
    size: model.size,
    headerLength: model.headerLength,
    tensorCount: model.tensors.length,
    identification: identifyModel(model),
    dtypes: [...byDtype.values()].sort((x, y) => y.bytes - x.bytes),
    metadata: parseMetadataValues(model.metadata),
    notes: [...model.notes],
  };
}

/**
 * Reads a model's header and describes it.
 *
 * @example
 * const r = await inspectModel("merged.safetensors");
 * r.identification.architecture; // "sd1"
 * r.metadata.sd_merge_recipe;    // { type: "webui", primary_model_hash: …, … }
 */
export async function inspectModel(path: string): Promise<InspectReport> {
  const model = await openModel(path);
  return withLoraSummary(inspectOpenedModel(model), model);
}

/** 4265146304 → "4.27 GB" (decimal units, as file managers show sizes). */
export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function indent(text: string, pad: string): string {
  return text.split("\n").map((l) => pad + l).join("\n");
}

/** The report as text for a terminal. */
export function formatInspectReport(r: InspectReport): string {
  const id = r.identification;
  const rows: [string, string][] = [
    ["file", r.path],
    ["format", `${r.format}, ${formatBytes(r.size)} (${r.size.toLocaleString("en-US")} bytes; header ${r.headerLength.toLocaleString("en-US")} bytes; ${r.tensorCount} tensors)`],
    ["architecture", `${describeArchitecture(id)}${id.kind !== "checkpoint" ? `, ${id.kind}` : ""}${id.inputChannels !== undefined ? `, ${id.inputChannels} input channels` : ""}${id.contextDim !== undefined ? `, context ${id.contextDim}` : ""}`],
    ["parameters", `${formatParams(id.params)} (${id.params.toLocaleString("en-US")}), ${id.precision}`],
  ];
  if (r.hashes) {
    rows.push(["sha256", r.hashes.sha256]);
    rows.push(["hashes", `AutoV2 ${r.hashes.autov2}, legacy ${r.hashes.legacy}${r.hashes.tensorSha256 ? `, tensor data (AutoV3) ${r.hashes.tensorSha256}` : ""}`]);
  }
  const width = 14;
  const lines = rows.map(([k, v]) => `${k.padEnd(width)}${v}`);
  if (r.lora) lines.push(...formatLoraSummary(r.lora));
  lines.push("components");
  for (const c of id.components) {
    lines.push(`  ${c.label.padEnd(40)}${formatParams(c.params).padStart(10)}  ${String(c.tensors).padStart(5)} tensor${c.tensors === 1 ? " " : "s"}${c.prefix ? `  ${c.prefix}*` : ""}`);
  }
  lines.push("dtypes");
  for (const d of r.dtypes) lines.push(`  ${d.dtype.padEnd(8)}${String(d.tensors).padStart(6)} tensor${d.tensors === 1 ? " " : "s"}  ${formatBytes(d.bytes).padStart(10)}`);
  const meta = Object.entries(r.metadata);
  lines.push(`metadata${meta.length === 0 ? "      (none)" : ""}`);
  for (const [k, v] of meta) {
    if (typeof v === "string") lines.push(`  ${k}: ${v.length > 400 ? `${v.slice(0, 400)}… (${v.length} characters)` : v}`);
    else lines.push(`  ${k}:\n${indent(JSON.stringify(v, null, 2), "    ")}`);
  }
  const notes = [...id.notes, ...r.notes];
  if (notes.length > 0) {
    lines.push("notes");
    for (const n of notes) lines.push(`  - ${n}`);
  }
  return lines.join("\n") + "\n";
}
