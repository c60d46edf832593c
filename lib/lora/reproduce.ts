/**
 * Rebuilding a baked model from the bake record it carries (`tensormerge_lora_bake`, written by
 * `bake()`): the checkpoint and every LoRA found by sha256 in the model folders (files named as
 * recorded are hashed first, as `reproduce` finds a recipe's ingredients), the bake run again
 * with the recorded ratios, text-encoder ratios, LoRA block weights and dtype, and the output's
 * other metadata copied, so the rebuilt file is the same bytes.
 */
import { basename, extname, resolve } from "node:path";
import { OUTPUT_DTYPES, type OutputDtype } from "../dtypes";
import { MergeError } from "../errors";
import { sha256File } from "../library/hash";
import type { MergeProgress } from "../merge";
import type { ModelFile } from "../model";
import { ModelFinder } from "../recipes/finder";
import type { ReproduceOptions } from "../recipes/reproduce";
import { BAKE_METADATA_KEY, bake, type BakeReport } from "./bake";

/** What `bake()` records (lib/lora/bake.ts `bakeMetadata`). */
export interface BakeRecord {
  model: { name: string; sha256: string };
  loras: { name: string; sha256: string; ratio: number; te: number }[];
  loraBlocks?: string | number[];
  dtype: OutputDtype | "same";
}

export interface BakeReproduction {
  kind: "bake";
  source: string;
  out: string;
  record: BakeRecord;
  /** The files found for the checkpoint and the LoRAs, in the record's order. */
  found: { model: string; loras: string[] };
  identical: boolean | null;
  sourceSha256: string | null;
  outSha256: string | null;
  /** The bake's report (null in a dry run). */
  bake: BakeReport | null;
}

/** reproduce()'s options, with the bake's own progress events (one pass, no recipe phases). */
export type BakeReproduceOptions = Omit<ReproduceOptions, "openModel" | "onProgress"> & {
  onProgress?: (progress: MergeProgress) => void;
};

const SHA256 = /^[0-9a-f]{64}$/;

/** The bake record of a model's metadata, undefined when it has none; RECIPE_INVALID when it is malformed. */
export function bakeRecordOf(metadata: Record<string, string>, path: string): BakeRecord | undefined {
  const text = metadata[BAKE_METADATA_KEY];
  if (text === undefined) return undefined;
  const bad = (what: string) => new MergeError("RECIPE_INVALID", `${path}: cannot reproduce: its ${BAKE_METADATA_KEY} ${what}`, { path });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad("is not JSON");
  }
  const isObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === "object" && !Array.isArray(x);
  const file = (x: unknown, what: string) => {
    if (!isObject(x) || typeof x.name !== "string" || typeof x.sha256 !== "string" || !SHA256.test(x.sha256)) throw bad(`has no name and sha256 for ${what}`);
    return { name: x.name, sha256: x.sha256 };
  };
  const finite = (x: unknown, what: string) => {
    if (typeof x !== "number" || !Number.isFinite(x)) throw bad(`has no finite ${what}`);
    return x;
  };
  if (!isObject(v)) throw bad("is not an object");
  if (!Array.isArray(v.loras) || v.loras.length === 0) throw bad("lists no LoRA");
  const loras = v.loras.map((l: unknown, i: number) => ({ ...file(l, `LoRA ${i + 1}`), ratio: finite((l as Record<string, unknown>).ratio, `ratio for LoRA ${i + 1}`), te: finite((l as Record<string, unknown>).te, `te for LoRA ${i + 1}`) }));
  const blocks = v.loraBlocks;
  if (blocks !== undefined && typeof blocks !== "string" && !(Array.isArray(blocks) && blocks.every((b) => typeof b === "number" && Number.isFinite(b)))) throw bad("has loraBlocks that are neither text nor numbers");
  const dtype = v.dtype;
  if (dtype !== "same" && !(OUTPUT_DTYPES as readonly unknown[]).includes(dtype)) throw bad(`has an unknown dtype ${JSON.stringify(dtype)}`);
  return { model: file(v.model, "the model"), loras, ...(blocks !== undefined ? { loraBlocks: blocks as string | number[] } : {}), dtype: dtype as OutputDtype | "same" };
}

/**
 * Rebuilds a baked model (`model` is the opened source file) and compares the bytes. A
 * checkpoint or LoRA in no model folder is MODEL_NOT_FOUND naming it and its sha256.
 */
export async function reproduceBake(model: ModelFile, record: BakeRecord, options: BakeReproduceOptions): Promise<BakeReproduction> {
  const source = resolve(model.path);
  const finder = new ModelFinder({
    ...(options.modelDirs ? { modelDirs: options.modelDirs } : {}),
    hashCache: options.hashCache ?? null,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const find = async (f: { name: string; sha256: string }, what: string): Promise<string> => {
    const path = await finder.byHash(f.sha256, f.name);
    if (path) return path;
    throw new MergeError("MODEL_NOT_FOUND", `${source}: ${what} ${f.name} (sha256 ${f.sha256}) is in none of the model folders (${finder.dirs.join(", ") || "none"}); put the file in a model folder (--model-dir DIR)`, { path: f.name });
  };
  const found = { model: await find(record.model, "the checkpoint"), loras: [] as string[] };
  for (const [i, l] of record.loras.entries()) found.loras.push(await find(l, `LoRA ${i + 1}`));
  const ckpt = extname(source).toLowerCase() === ".ckpt";
  const out = resolve(options.out ?? `${basename(source, extname(source))}.reproduced.${ckpt ? "ckpt" : "safetensors"}`);
  if (out === source) throw new MergeError("INPUT_IS_TARGET", `${out} is the model being rebuilt; choose another output`, { path: out });
  const base = { kind: "bake" as const, source, out, record, found };
  if (options.dryRun) return { ...base, identical: null, sourceSha256: null, outSha256: null, bake: null };
  // The output's other metadata as it is (user metadata, `format`); bake() writes the record again.
  const metadata = Object.fromEntries(Object.entries(model.metadata).filter(([k]) => k !== BAKE_METADATA_KEY));
  const report = await bake({
    model: found.model,
    modelName: record.model.name,
    loras: record.loras.map((l, i) => ({ path: found.loras[i]!, ratio: l.ratio, te: l.te, name: l.name })),
    ...(record.loraBlocks !== undefined ? { loraBlocks: record.loraBlocks } : {}),
    dtype: record.dtype,
    out,
    metadata,
    overwrite: options.overwrite === true,
    ...(options.engine ? { engine: options.engine } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.isa ? { isa: options.isa } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const [a, b] = [await sha256File(source), await sha256File(out)];
  return { ...base, identical: a.sha256 === b.sha256, sourceSha256: a.sha256, outSha256: b.sha256, bake: report };
}
