/**
 * Hugging Face model folders as outputs: the merged tensors in shards of at most `shardSize`
 * bytes of tensor data (a tensor is never split; one larger than the limit gets a shard of its
 * own, as transformers does), `model.safetensors.index.json` when there is more than one,
 * `config.json`, the tokenizer and generation files, and a model card.
 *
 * Nothing partial under the final name: everything is written into a hidden temporary folder
 * beside the target (`.<name>.tensormerge-<pid>-<hex>.tmp`, same filesystem), each shard through
 * the board's own temp-file-and-rename, and the folder is renamed to its name only when every
 * file is in place and synced. A failed or cancelled run removes the temporary folder. An
 * existing target is replaced only with `overwrite`, and only when it is a model folder.
 *
 * Streaming: each shard is one pass of the board (its keys only), so the engines hold at most
 * their chunks, never a shard; the inputs are read once in all.
 */
import { copyFile, lstat, mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { executePlan, nonFiniteWarnings, preflight } from "../board";
import { DTYPE_SIZE } from "../dtypes";
import { MergeError, fsError } from "../errors";
import type { MergeProgress } from "../merge";
import { resolveMethod } from "../methods/registry";
import { numelOf } from "../model";
import { STALE_TEMP_SECONDS, diskNeeds, processRuns, tempPathFor } from "../outputs";
import { planBoard, type BoardPlan, type BoardRow, type PlanStats } from "../plan";
import type { InputCache } from "../native/job";
import type { PlannedLayout } from "../plan-layouts";
import { CONFIG_FILE, INDEX_FILE, shardFileName } from "./folder";

/** transformers' default `max_shard_size` ("5GB" = 5·10⁹ bytes). */
export const DEFAULT_SHARD_SIZE = 5_000_000_000;

const UNITS: Record<string, number> = { "": 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 };

/**
 * "5GB" → 5·10⁹, "500MB", "2GiB" → 2³¹, "1000000" → 10⁶. Decimal units as transformers'
 * `convert_file_size_to_int` reads them (KB = 1000), binary ones with "i".
 */
export function parseShardSize(text: string | number, option = "--shard-size"): number {
  if (typeof text === "number") {
    if (!Number.isSafeInteger(text) || text < 1) throw new MergeError("INVALID_ARGUMENT", `${option} must be a positive whole number of bytes, got ${text}`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$/i.exec(text);
  const unit = m ? UNITS[(m[2] ?? "").toUpperCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw new MergeError("INVALID_ARGUMENT", `${option} must be bytes or a size such as 5GB, 500MB, 2GiB; got "${text}"`);
  return bytes;
}

export interface ShardPlan {
  name: string;
  /** Tensor names, in file order. */
  tensors: string[];
  /** Tensor data bytes (the file adds its header). */
  dataBytes: number;
}

/** Splits tensors, in order, into shards of at most `maxBytes` data bytes; a tensor is never split. */
export function shardTensors(entries: readonly { name: string; bytes: number }[], maxBytes: number): ShardPlan[] {
  const groups: { tensors: string[]; dataBytes: number }[] = [];
  let current: { tensors: string[]; dataBytes: number } | undefined;
  for (const e of entries) {
    if (!current || (current.tensors.length > 0 && current.dataBytes + e.bytes > maxBytes)) groups.push((current = { tensors: [], dataBytes: 0 }));
    current.tensors.push(e.name);
    current.dataBytes += e.bytes;
  }
  return groups.map((g, i) => ({ name: shardFileName(i, groups.length), ...g }));
}

export interface HfWriteRequest {
  /** The board; the last row's result is the model. Rows must not have outputs. */
  rows: BoardRow[];
  out: string;
  shardSize: number;
  /** safetensors metadata for every shard (`format: "pt"` is added). */
  metadata?: Record<string, string>;
  /** Written as config.json. */
  config?: Record<string, unknown>;
  /** Files copied into the output folder as they are (tokenizer, generation config). */
  copies?: { from: string; name: string }[];
  /** README.md. */
  card?: string;
  /** Folders and files the output must not be, contain or be inside of. */
  inputs: string[];
  overwrite?: boolean;
  dryRun?: boolean;
  engine: "native" | "js";
  threads?: number;
  isa?: "auto" | "scalar" | "avx2" | "avx512";
  inputCache?: InputCache;
  onProgress?: (p: MergeProgress) => void;
  signal?: AbortSignal;
  /**
   * Several models from one board (a sweep): each variant is the result of its `row`, written
   * as its own folder with its own metadata and card (`out`, `metadata` and `card` above are
   * then unused). Pass k writes shard k of every variant, so the inputs are read once in all.
   * Default: one variant, the last row, into `out`.
   */
  variants?: HfVariant[];
}

export interface HfVariant {
  out: string;
  row: number;
  metadata?: Record<string, string>;
  card?: string;
}

export interface HfWriteReport {
  dryRun: boolean;
  out: string;
  shards: { name: string; tensors: number; bytes: number }[];
  /** Other files written (index, config, tokenizer, card). */
  files: string[];
  bytesRead: number;
  bytesWritten: number;
  engine: "native" | "js";
  isa: string;
  threads: number;
  seconds: number;
  disk?: { dir: string; needed: number; free: number | null }[];
  /** Temporary folders of killed runs into the same target, removed before this one. */
  removedTemps?: string[];
  /** What the last row (the model) did per key. */
  stats: PlanStats;
  warnings: string[];
  /** Every folder written (one unless `variants` were given), in the order asked. */
  outs: string[];
}

/** The rows with one saved copy-row per shard and variant appended (each keeps its shard's keys only). */
function shardedBoard(rows: BoardRow[], shards: ShardPlan[], variants: { row: number; folder: string; metadata: Record<string, string> }[]): BoardPlan {
  const copy = resolveMethod("no-interpolation");
  const shardRows: BoardRow[] = variants.flatMap((v) => shards.map((s) => {
    const keep = new Set(s.tensors);
    return {
      name: `${basename(v.folder)}/${s.name}`, method: copy, inputs: { a: { row: v.row } }, multipliers: [0],
      discard: (name: string) => !keep.has(name),
      outputs: [{ path: join(v.folder, s.name), format: "safetensors" as const, metadata: { format: "pt", ...v.metadata } }],
    };
  }));
  return planBoard({ rows: [...rows, ...shardRows] });
}

/**
 * What each pass writes, for progress lines: each shard is one pass (its keys only), so the bar
 * says "writing shard 2/3 (model-00002-of-00003.safetensors)" instead of "merging, pass 2/3".
 */
export function passLabels(plan: BoardPlan): string[] {
  const names = (p: { outputs: { path: string }[] }) => [...new Set(p.outputs.map((o) => basename(o.path)))];
  const shards = plan.passes.reduce((n, p) => n + names(p).length, 0);
  let first = 0;
  return plan.passes.map((p) => {
    const here = names(p);
    const folders = p.outputs.length / here.length;
    const from = first + 1, to = first + here.length;
    first = to;
    const of = folders > 1 ? ` of ${folders} folders` : "";
    if (shards === 1) return `writing ${here[0]}${of}`;
    return `writing shard${from === to ? ` ${from}` : `s ${from}–${to}`}/${shards} (${here.join(", ")})${of}`;
  });
}

function labelledProgress(plan: BoardPlan, onProgress: (p: MergeProgress) => void): (p: MergeProgress) => void {
  const labels = passLabels(plan);
  return (p) => onProgress(p.phase === "hashing" ? p : { ...p, label: labels[(p.pass ?? 1) - 1] ?? "merging" });
}

/** The merged model's tensors (name, bytes) in order, from a plan where row `row` is saved once. */
function resultEntries(rows: BoardRow[], row: number): { name: string; bytes: number }[] {
  const probe = [...rows];
  probe[row] = { ...probe[row]!, outputs: [{ path: "probe.safetensors", format: "safetensors", metadata: {} }] };
  const plan = planBoard({ rows: probe });
  const layout = plan.passes[0]!.outputs[0]!.layout as PlannedLayout;
  return layout.entries.map((e) => ({ name: e.name, bytes: numelOf(e.shape) * DTYPE_SIZE[e.dtype] }));
}

/**
 * Removes the temporary folders killed runs into `target` left beside it (a kill cannot clean
 * up): `.<name>.tensormerge-<pid>-<hex>.tmp` (and its `.old`), a folder, whose process no
 * longer runs and that nothing touched for a while. Returns the paths removed.
 */
async function removeStaleTempFolders(target: string): Promise<string[]> {
  const dir = dirname(target);
  const name = basename(target).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`^\\.${name}\\.tensormerge-(\\d+)-[0-9a-f]+\\.tmp(?:\\.old)?$`);
  const removed: string[] = [];
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    const m = pattern.exec(entry);
    if (!m || processRuns(Number(m[1]))) continue;
    const path = join(dir, entry);
    const info = await lstat(path).catch(() => undefined);
    if (!info?.isDirectory() || Date.now() - info.mtimeMs < STALE_TEMP_SECONDS * 1000) continue;
    if (await rm(path, { recursive: true, force: true }).then(() => true, () => false)) removed.push(path);
  }
  return removed;
}

async function lexists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
}

/** A folder `overwrite` may replace: one that holds a model (config.json or safetensors). */
async function isReplaceableModelFolder(path: string): Promise<boolean> {
  const s = await lstat(path).catch(() => undefined);
  if (!s?.isDirectory()) return false;
  const names = await readdir(path).catch(() => [] as string[]);
  return names.includes(CONFIG_FILE) || names.some((n) => n.endsWith(".safetensors"));
}

function isInside(child: string, parent: string): boolean {
  const r = relative(parent, child);
  return r === "" || (!r.startsWith("..") && !r.startsWith(sep) && r !== "..");
}

async function checkTarget(out: string, inputs: string[], overwrite: boolean): Promise<void> {
  const target = resolve(out);
  for (const input of inputs) {
    const i = resolve(input);
    if (isInside(i, target) || isInside(target, i)) {
      throw new MergeError("INPUT_IS_TARGET", `${out}: the output folder ${isInside(i, target) ? "holds" : "is inside"} the input ${input}; choose another output folder`, { path: out });
    }
  }
  if (!(await lexists(dirname(target)))) throw new MergeError("FILE_NOT_FOUND", `${dirname(target)}: the output's parent folder does not exist`, { path: out });
  if (await lexists(target)) {
    if (!overwrite) throw new MergeError("OUTPUT_EXISTS", `${out} already exists (use --overwrite to replace it)`, { path: out });
    if (!(await isReplaceableModelFolder(target))) {
      throw new MergeError("INVALID_ARGUMENT", `${out} exists and is not a model folder (no config.json, no .safetensors): tensormerge replaces only model folders, even with --overwrite`, { path: out });
    }
  }
}

async function writeSynced(path: string, data: string | Uint8Array): Promise<void> {
  const handle = await open(path, "wx").catch((e) => { throw fsError(e, path, "creating"); });
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (e) {
    throw fsError(e, path, "writing");
  } finally {
    await handle.close();
  }
}

async function syncPath(path: string): Promise<void> {
  const handle = await open(path, "r").catch(() => undefined);
  if (handle) {
    await handle.sync().catch(() => undefined);
    await handle.close();
  }
}

/** The index transformers writes: total data bytes and each tensor's shard, keys sorted. */
export function indexJson(shards: readonly ShardPlan[]): string {
  const weightMap: [string, string][] = shards.flatMap((s) => s.tensors.map((t) => [t, s.name] as [string, string]));
  weightMap.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const body = { metadata: { total_size: shards.reduce((n, s) => n + s.dataBytes, 0) }, weight_map: Object.fromEntries(weightMap) };
  return JSON.stringify(body, null, 2) + "\n";
}

/** Plans, then (unless a dry run) writes the model folder. */
export async function writeHfFolder(request: HfWriteRequest): Promise<HfWriteReport> {
  const started = Date.now();
  const { rows } = request;
  const overwrite = request.overwrite === true;
  const variants: HfVariant[] = request.variants ?? [{ out: request.out, row: rows.length - 1, ...(request.metadata ? { metadata: request.metadata } : {}), ...(request.card !== undefined ? { card: request.card } : {}) }];
  const seen = new Set<string>();
  for (const v of variants) {
    if (seen.has(resolve(v.out))) throw new MergeError("INVALID_ARGUMENT", `${v.out}: two outputs of this merge would be the same folder`, { path: v.out });
    seen.add(resolve(v.out));
    await checkTarget(v.out, request.inputs, overwrite);
  }
  const out = variants[0]!.out;
  const shards = shardTensors(resultEntries(rows, variants[0]!.row), request.shardSize);
  const extraFiles = [
    ...(shards.length > 1 ? [INDEX_FILE] : []),
    ...(request.config ? [CONFIG_FILE] : []),
    ...(request.copies ?? []).map((c) => c.name),
    ...(variants[0]!.card !== undefined ? ["README.md"] : []),
  ];
  const firstFolder = (plan: BoardPlan, folder: string) => plan.passes.flatMap((p) => p.outputs).filter((o) => dirname(o.path) === folder);
  const shardReport = (plan: BoardPlan, folder: string) => firstFolder(plan, folder).map((o) => ({ name: basename(o.path), tensors: shards.find((s) => s.name === basename(o.path))!.tensors.length, bytes: o.layout.size }));
  const base = { out, files: extraFiles, engine: request.engine, outs: variants.map((v) => v.out) };
  const statsOf = (plan: BoardPlan) => plan.stats[variants[0]!.row]!;
  if (request.dryRun) {
    const plan = shardedBoard(rows, shards, variants.map((v) => ({ row: v.row, folder: resolve(v.out), metadata: v.metadata ?? {} })));
    const disk = await diskNeeds(plan.passes.flatMap((p) => p.outputs).map((o) => ({ path: o.path, bytes: o.layout.size })));
    return { ...base, dryRun: true, stats: statsOf(plan), shards: shardReport(plan, resolve(out)), bytesRead: plan.bytesToRead, bytesWritten: plan.bytesToWrite, isa: "", threads: request.threads ?? 0, seconds: (Date.now() - started) / 1000, disk, warnings: [] };
  }
  const removedTemps: string[] = [];
  for (const v of variants) removedTemps.push(...(await removeStaleTempFolders(resolve(v.out))));
  const temps = variants.map((v) => tempPathFor(resolve(v.out)));
  const committed = new Set<number>();
  try {
    for (const temp of temps) await mkdir(temp).catch((e) => { throw fsError(e, temp, "creating the temporary output folder"); });
    const plan = shardedBoard(rows, shards, variants.map((v, i) => ({ row: v.row, folder: temps[i]!, metadata: v.metadata ?? {} })));
    await preflight(plan, false);
    const run = await executePlan(plan, {
      engine: request.engine,
      ...(request.threads !== undefined ? { threads: request.threads } : {}),
      ...(request.isa ? { isa: request.isa } : {}),
      ...(request.inputCache ? { inputCache: request.inputCache } : {}),
      ...(request.onProgress ? { onProgress: labelledProgress(plan, request.onProgress) } : {}),
      ...(request.signal ? { signal: request.signal } : {}),
    }, started);
    for (const [i, temp] of temps.entries()) {
      if (shards.length > 1) await writeSynced(join(temp, INDEX_FILE), indexJson(shards));
      if (request.config) await writeSynced(join(temp, CONFIG_FILE), JSON.stringify(request.config, null, 2) + "\n");
      for (const c of request.copies ?? []) {
        await copyFile(c.from, join(temp, c.name)).catch((e) => { throw fsError(e, c.from, `copying ${c.name} into the output`); });
        await syncPath(join(temp, c.name));
      }
      if (variants[i]!.card !== undefined) await writeSynced(join(temp, "README.md"), variants[i]!.card!);
      await syncPath(temp);
    }
    if (request.signal?.aborted) throw new MergeError("ABORTED", "the merge was cancelled");
    for (const [i, temp] of temps.entries()) {
      await commitFolder(temp, resolve(variants[i]!.out), overwrite);
      committed.add(i);
    }
    const names = (p: string) => temps.reduce((s, temp, i) => s.split(temp).join(resolve(variants[i]!.out)), p);
    return {
      ...base, dryRun: false, stats: statsOf(plan), shards: shardReport(plan, temps[0]!), bytesRead: plan.bytesToRead, bytesWritten: plan.bytesToWrite,
      isa: run.isa, threads: run.threads, seconds: (Date.now() - started) / 1000,
      warnings: nonFiniteWarnings(run.nonFinite, names),
      ...(removedTemps.length ? { removedTemps } : {}),
    };
  } finally {
    for (const [i, temp] of temps.entries()) if (!committed.has(i)) await rm(temp, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * Gives the finished folder its name. A folder cannot be linked, so without `overwrite` the
 * target is checked just before the rename (a folder created in between, if empty, would be
 * replaced: rename(2) allows that); with it, the old folder is moved aside first and removed
 * only once the new one has its name.
 */
async function commitFolder(temp: string, target: string, overwrite: boolean): Promise<void> {
  if (await lexists(target)) {
    if (!overwrite) throw new MergeError("OUTPUT_EXISTS", `${target} appeared while merging and was left as it is; this merge's result was discarded`, { path: target });
    const old = `${temp}.old`;
    await rename(target, old).catch((e) => { throw fsError(e, target, "moving the old output folder aside"); });
    try {
      await rename(temp, target);
    } catch (e) {
      await rename(old, target).catch(() => undefined);
      throw fsError(e, target, "renaming the finished output folder");
    }
    await syncPath(dirname(target));
    await rm(old, { recursive: true, force: true });
    return;
  }
  await rename(temp, target).catch((e) => { throw fsError(e, target, "renaming the finished output folder"); });
  await syncPath(dirname(target));
}
