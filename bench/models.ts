/**
 * Full-size synthetic checkpoints for the benchmarks: the real layouts of ../shared/layouts
 * (every key, shape and dtype), filled by lib/synthetic.ts from a seed, written by our own
 * safetensors writer. A file is reused when its size is the one the layout implies; it is
 * written under a temporary name and renamed, so an interrupted generation is never reused.
 *
 * The disk is shared: `ensureModels` checks free space before each file and, past a budget,
 * deletes models that no remaining scenario needs.
 */
import { readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { layoutSafetensors } from "../lib/formats/safetensors";
import { processRuns } from "../lib/outputs";
import { parseLayout, shrinkLayout, writeSyntheticModel, type LayoutEntry } from "../lib/synthetic";

/** The file in a bench folder that names the run using it (its pid). */
export const BENCH_LOCK = ".bench-run.pid";

/**
 * Claims a bench folder for this run, or throws when another live run holds it: a run deletes
 * its folder's outputs, floor files and addon snapshot when it starts and ends, so two runs in
 * one folder would delete each other's files mid-merge. A claim left by a run that no longer
 * runs is taken over. Returns the release (call it when the run ends).
 */
export function claimBenchFolder(dir: string): () => void {
  const lock = join(dir, BENCH_LOCK);
  let holder = NaN;
  try {
    holder = Number(readFileSync(lock, "utf8").trim());
  } catch {
    // no claim yet
  }
  if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && processRuns(holder)) {
    throw new Error(`bench folder ${dir} is in use by another bench run (pid ${holder}); give this run its own --dir (models can be shared as symbolic links)`);
  }
  writeFileSync(lock, `${process.pid}\n`);
  return () => {
    try {
      if (Number(readFileSync(lock, "utf8").trim()) === process.pid) rmSync(lock, { force: true });
    } catch {
      // already gone
    }
  };
}

/** A layout file name in the layouts folder, without `.json`. */
export type LayoutName = "sd15" | "sd15_fp16_pruned" | "sd21" | "sdxl" | string;

export interface ModelSpec {
  layout: LayoutName;
  seed: number;
  /** Divide dimensions above 16 by this (tiny models for the smoke test); 1 = full size. */
  shrink?: number;
}

export const GiB = 1024 ** 3;
export const GB = 1e9;

/** The folder of real layouts: ../shared/layouts beside the repository (dev code only). */
export function defaultLayoutsDir(): string {
  return join(__dirname, "..", "..", "..", "shared", "layouts");
}

const layoutCache = new Map<string, LayoutEntry[]>();

export function loadLayout(layoutsDir: string, name: LayoutName, shrink = 1): LayoutEntry[] {
  const file = join(layoutsDir, `${name}.json`);
  let layout = layoutCache.get(file);
  if (!layout) {
    layout = parseLayout(readFileSync(file, "utf8"), file);
    layoutCache.set(file, layout);
  }
  return shrinkLayout(layout, shrink);
}

export function modelFileName(spec: ModelSpec): string {
  const shrink = spec.shrink && spec.shrink > 1 ? `-x${spec.shrink}` : "";
  return `${spec.layout}${shrink}-seed${spec.seed}.safetensors`;
}

export function modelPath(dir: string, spec: ModelSpec): string {
  return join(dir, modelFileName(spec));
}

const METADATA = { format: "pt" };

/** The exact file size the generator writes for a spec. */
export function modelSize(layoutsDir: string, spec: ModelSpec): number {
  const layout = loadLayout(layoutsDir, spec.layout, spec.shrink);
  return layoutSafetensors(layout.map(([name, shape, dtype]) => ({ name, shape, dtype })), METADATA).size;
}

export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

export interface EnsureOptions {
  dir: string;
  layoutsDir: string;
  /** Models that later scenarios still need (never evicted). */
  keep: ModelSpec[];
  /** Most bytes of models (plus `reserveBytes`) this folder may hold. */
  budgetBytes: number;
  /** Bytes the caller will write beside the models (outputs of the coming scenario). */
  reserveBytes: number;
  /** Free space that must remain on the disk after writing a model. */
  minFreeBytes: number;
  log: (line: string) => void;
}

/** Models present in the folder (our naming only). */
export async function listModels(dir: string): Promise<{ path: string; size: number }[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const out: { path: string; size: number }[] = [];
  for (const n of names) {
    if (!/-seed\d+\.safetensors$/.test(n)) continue;
    const size = await sizeOf(join(dir, n));
    if (size !== undefined) out.push({ path: join(dir, n), size });
  }
  return out;
}

/**
 * Makes sure every spec exists (generating the missing ones), evicting other models of the
 * folder first when the budget requires it. Returns the paths, in spec order.
 */
export async function ensureModels(specs: ModelSpec[], options: EnsureOptions): Promise<string[]> {
  const { dir, layoutsDir, log } = options;
  await mkdir(dir, { recursive: true });
  const wanted = new Set([...specs, ...options.keep].map((s) => modelPath(dir, s)));
  const paths: string[] = [];
  for (const spec of specs) {
    const path = modelPath(dir, spec);
    const size = modelSize(layoutsDir, spec);
    paths.push(path);
    const have = await sizeOf(path);
    if (have === size) continue;
    if (have !== undefined) await rm(path, { force: true });

    // Budget: evict models nobody needs any more, largest first.
    let present = await listModels(dir);
    let used = present.reduce((s, m) => s + m.size, 0);
    const evictable = present.filter((m) => !wanted.has(m.path)).sort((x, y) => y.size - x.size);
    while (used + size + options.reserveBytes > options.budgetBytes && evictable.length > 0) {
      const m = evictable.shift()!;
      log(`  evicting ${m.path} (${(m.size / GB).toFixed(2)} GB) to stay under the ${(options.budgetBytes / GB).toFixed(0)} GB budget`);
      await rm(m.path, { force: true });
      used -= m.size;
    }
    present = await listModels(dir);
    used = present.reduce((s, m) => s + m.size, 0);
    if (used + size + options.reserveBytes > options.budgetBytes) {
      throw new Error(`generating ${path} (${(size / GB).toFixed(2)} GB) would take the bench folder past its ${(options.budgetBytes / GB).toFixed(0)} GB budget (raise --budget-gb or run fewer scenarios)`);
    }
    const free = freeBytes(dir);
    if (free - size - options.reserveBytes < options.minFreeBytes) {
      throw new Error(`only ${(free / GB).toFixed(1)} GB free on ${dir}: generating ${(size / GB).toFixed(2)} GB would leave less than ${(options.minFreeBytes / GB).toFixed(0)} GB (the disk is shared; wait or run fewer scenarios)`);
    }

    const t0 = Date.now();
    log(`  generating ${path} (${(size / GB).toFixed(2)} GB, layout ${spec.layout}, seed ${spec.seed})`);
    const temp = `${path}.partial-${process.pid}`;
    try {
      await writeSyntheticModel(temp, loadLayout(layoutsDir, spec.layout, spec.shrink), { seed: spec.seed, metadata: METADATA });
      await rename(temp, path);
    } finally {
      await rm(temp, { force: true });
    }
    log(`  generated in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  return paths;
}

/** Removes every model and leftover of the bench folder (`--clean`). */
export async function cleanModels(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (/-seed\d+\.safetensors(\.partial-\d+)?$/.test(name) || name.startsWith("out-") || name.startsWith("floor-")) {
      await rm(join(dir, name), { force: true, recursive: true });
      n++;
    }
  }
  return n;
}
