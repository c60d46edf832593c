/**
 * The merge history: one JSON line per output, appended, never rewritten, as the classic tool
 * keeps its `history.tsv` (which records O, A, B, C with name, legacy hash and sha256, the
 * multiplier, method, fp16 flag, format, lane and time). JSON lines rather than TSV so nested
 * inputs (an earlier row, a VAE) keep their structure and `jq` can read them.
 */
import { appendFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { fsError } from "../errors";

export interface HistoryInput {
  name: string;
  path?: string;
  sha256?: string;
  legacy?: string;
  /** An earlier row of the same recipe (1-based). */
  row?: number;
  /** For a row: whether it was written. */
  saved?: boolean;
}

export interface HistoryEntry {
  /** ISO 8601, UTC. */
  time: string;
  /** The recipe file (or its name). */
  recipe: string | null;
  /** 1-based recipe row. */
  row: number;
  name: string;
  method: string;
  multiplier: number;
  dtype: string;
  format: string;
  /** "skipped": the output existed and was left alone. */
  state: "written" | "skipped";
  output: { path: string; name: string; bytes: number; sha256?: string; legacy?: string };
  /** By slot: "a", "b", "c", or for a base + models row "base". */
  inputs: Record<string, HistoryInput>;
  /** A base + models row: its models in order, with their weights. */
  models?: (HistoryInput & { weight?: number })[];
  vae?: HistoryInput;
}

/** Appends entries (one line each) in a single write, so concurrent runs never interleave lines. */
export async function appendHistory(path: string, entries: HistoryEntry[]): Promise<void> {
  if (entries.length === 0) return;
  try {
    await mkdir(dirname(path), { recursive: true });
    await appendFile(path, entries.map((e) => JSON.stringify(e)).join("\n") + "\n", { encoding: "utf8", flag: "a" });
  } catch (e) {
    throw fsError(e, path, "appending to the merge history");
  }
}

/** Reads a history file (for tools and tests). */
export function parseHistory(text: string): HistoryEntry[] {
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as HistoryEntry);
}
