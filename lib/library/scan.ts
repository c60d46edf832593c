/**
 * The model library: every model file under one or more folders, identified from its header and
 * (optionally) hashed, as `tensormerge list` shows it.
 *
 * Which files count as models: `.safetensors`, `.sft` (ComfyUI's short spelling), `.ckpt`, `.pt`
 * and `.pth`, as in A1111's and ComfyUI's checkpoint folders. `.bin` is left out on purpose: in
 * the folders users point us at it is almost always a piece of a diffusers/transformers model
 * (`pytorch_model.bin`) or an embedding, not a checkpoint that can be merged. Hidden files and
 * folders (names starting with "."), which include tensormerge's own temporary outputs, are
 * skipped. Folders are searched recursively; symbolic links are followed, each folder once.
 */
import { opendir, realpath, stat } from "node:fs/promises";
import { basename, delimiter, extname, join, relative, resolve, sep } from "node:path";
import { MergeError, fsError, type ErrorCode } from "../errors";
import { detectFormat, openModel } from "../formats";
import { getFileHashes, type HashCache } from "./hash-cache";
import { identifyModel, type ArchitectureId, type ComponentId, type ModelKind } from "./identify";
import { summarizeLora } from "../lora/describe";
import { looksLikeLora, readLoraModel } from "../lora/read";

export const MODEL_EXTENSIONS = [".safetensors", ".sft", ".ckpt", ".pt", ".pth"] as const;

/** The folders `list` and name references use by default: `$TENSORMERGE_MODELS` (a `:`-separated list) or `./models`. */
export function defaultModelDirs(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): string[] {
  const fromEnv = (env.TENSORMERGE_MODELS ?? "").split(delimiter).filter((d) => d.length > 0);
  return (fromEnv.length > 0 ? fromEnv : ["models"]).map((d) => resolve(cwd, d));
}

export function isModelFileName(name: string): boolean {
  return (MODEL_EXTENSIONS as readonly string[]).includes(extname(name).toLowerCase()) && !name.startsWith(".");
}

/** A model file found on disk, before its header is read. */
export interface FoundModelFile {
  /** Absolute path. */
  path: string;
  /** File name without extension (how the classic tool names a model). */
  name: string;
  /** Path relative to the folder it was found in, without extension, with "/" separators ("sdxl/juggernaut"). */
  title: string;
  /** The folder it was found in (absolute). */
  dir: string;
  size: number;
  mtimeMs: number;
}

export interface FindResult {
  files: FoundModelFile[];
  /** Sub-folders that could not be read (permissions): listed, never fatal. */
  unreadable: { path: string; error: MergeError }[];
}

function titleOf(dir: string, path: string): string {
  const rel = relative(dir, path);
  return rel.slice(0, rel.length - extname(rel).length).split(sep).join("/");
}

/**
 * Finds model files under `dirs` (recursively). A path in `dirs` that is a file is taken as it
 * is. A folder that does not exist is an error (FILE_NOT_FOUND).
 *
 * @example
 * const { files } = await findModelFiles(["/sd/models/Stable-diffusion"]);
 */
export async function findModelFiles(dirs: readonly string[], options: { signal?: AbortSignal } = {}): Promise<FindResult> {
  const files: FoundModelFile[] = [];
  const unreadable: FindResult["unreadable"] = [];
  const seenFiles = new Set<string>();
  const seenDirs = new Set<string>();

  const addFile = async (root: string, path: string, info: { size: number; mtimeMs: number }) => {
    const real = await realpath(path).catch(() => path);
    if (seenFiles.has(real)) return;
    seenFiles.add(real);
    const ext = extname(path);
    files.push({ path, name: basename(path, ext), title: titleOf(root, path), dir: root, size: info.size, mtimeMs: info.mtimeMs });
  };

  const walk = async (root: string, dir: string): Promise<void> => {
    if (options.signal?.aborted) throw new MergeError("ABORTED", "listing was cancelled");
    const real = await realpath(dir).catch(() => dir);
    if (seenDirs.has(real)) return; // a symlink loop, or two roots that overlap
    seenDirs.add(real);
    let handle;
    try {
      handle = await opendir(dir);
    } catch (e) {
      unreadable.push({ path: dir, error: fsError(e, dir, "listing the folder") });
      return;
    }
    const subdirs: string[] = [];
    for await (const entry of handle) {
      if (entry.name.startsWith(".")) continue;
      const path = join(dir, entry.name);
      let isDir = entry.isDirectory();
      let isFile = entry.isFile();
      if (entry.isSymbolicLink()) {
        const target = await stat(path).catch(() => undefined); // a dangling link is skipped
        isDir = !!target?.isDirectory();
        isFile = !!target?.isFile();
      }
      if (isDir) subdirs.push(path);
      else if (isFile && isModelFileName(entry.name)) {
        const info = await stat(path).catch(() => undefined);
        if (info) await addFile(root, path, info);
      }
    }
    for (const sub of subdirs.sort()) await walk(root, sub);
  };

  for (const d of dirs) {
    const root = resolve(d);
    let info;
    try {
      info = await stat(root);
    } catch (e) {
      throw fsError(e, root, "listing models");
    }
    if (info.isFile()) await addFile(resolve(root, ".."), root, info);
    else await walk(root, root);
  }
  return { files, unreadable };
}

/** One row of `tensormerge list`. */
export interface ModelEntry {
  /** Absolute path. */
  path: string;
  /** File name without extension. */
  name: string;
  /** Path relative to its folder, without extension, "/"-separated. */
  title: string;
  size: number;
  mtimeMs: number;
  /** "safetensors" | "ckpt" | "pickle" (legacy torch.save) | "unknown". */
  format: string;
  architecture: ArchitectureId | null;
  /** "SD 1.x", "SDXL", … */
  architectureLabel: string | null;
  variant: string | null;
  kind: ModelKind | null;
  components: { id: ComponentId; label: string; tensors: number; params: number }[];
  params: number | null;
  tensors: number | null;
  dtypes: string[];
  /** "fp16", "fp32", "bf16" or "mixed". */
  precision: string | null;
  /** Full SHA-256, or null when not hashed (`--no-hash` and not in the cache). */
  sha256: string | null;
  /** First 10 hex digits of sha256 (AutoV2). */
  autov2: string | null;
  /** Old 8-hex A1111 model hash (AutoV1). */
  legacyHash: string | null;
  /** SHA-256 of the tensor data (safetensors; AutoV3). */
  tensorSha256: string | null;
  /** Whether the hashes came from the cache. */
  hashCached: boolean | null;
  /** Why the file could not be read or identified; the entry is still listed. */
  error: { code: ErrorCode; message: string } | null;
  /** A LoRA's naming, ranks, alphas and module count (lib/lora); null for other files. */
  lora: { naming: string; ranks: number[]; alphas: number[]; modules: number; algorithms: Record<string, number> } | null;
}

export interface ListProgress {
  phase: "headers" | "hash";
  index: number;
  count: number;
  path: string;
  bytesDone?: number;
  bytesTotal?: number;
}

export interface ListOptions {
  /** Compute missing hashes (default true). With false, cached hashes are still shown. */
  hash?: boolean;
  /** Hash cache (default: none). The CLI passes the user's cache. */
  cache?: HashCache | null;
  signal?: AbortSignal;
  onProgress?: (progress: ListProgress) => void;
  /** Headers read in parallel (default 8). */
  concurrency?: number;
}

function errorOf(e: unknown): { code: ErrorCode; message: string } {
  if (e instanceof MergeError) return { code: e.code, message: e.message };
  return { code: "INTERNAL", message: e instanceof Error ? e.message : String(e) };
}

async function describeFile(f: FoundModelFile): Promise<ModelEntry> {
  const entry: ModelEntry = {
    path: f.path, name: f.name, title: f.title, size: f.size, mtimeMs: f.mtimeMs, format: "unknown",
    architecture: null, architectureLabel: null, variant: null, kind: null, components: [], params: null, tensors: null,
    dtypes: [], precision: null, sha256: null, autov2: null, legacyHash: null, tensorSha256: null, hashCached: null, error: null, lora: null,
  };
  try {
    const model = await openModel(f.path);
    entry.format = model.format;
    const id = identifyModel(model);
    entry.architecture = id.architecture;
    entry.architectureLabel = id.label;
    entry.variant = id.variant ?? null;
    entry.kind = id.kind;
    entry.components = id.components.map(({ id: cid, label, tensors, params }) => ({ id: cid, label, tensors, params }));
    entry.params = id.params;
    entry.tensors = id.tensors;
    entry.dtypes = Object.keys(id.dtypes).sort();
    entry.precision = id.precision;
    if (id.kind === "lora" && looksLikeLora(model.tensors.map((t) => t.name))) {
      // The LoRA's own target architecture (a LoRA has no UNet for identifyModel to look at).
      const s = summarizeLora(await readLoraModel(model));
      entry.architecture = s.architecture;
      entry.architectureLabel = s.label;
      entry.lora = { naming: s.naming, ranks: s.ranks, alphas: s.alphas, modules: s.modules, algorithms: s.algorithms };
    }
  } catch (e) {
    entry.error = errorOf(e);
    entry.format = await detectFormat(f.path).catch(() => "unknown");
  }
  return entry;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(runners);
  return out;
}

/**
 * Lists, identifies and hashes every model under `dirs`. Unreadable or malformed files are
 * listed with their `error`; nothing but a missing folder or a cancellation is fatal.
 * Entries are sorted by title.
 *
 * @example
 * const cache = await HashCache.open();
 * for (const m of await listModels(defaultModelDirs(), { cache })) console.log(m.title, m.architecture, m.autov2);
 */
export async function listModels(dirs: readonly string[], options: ListOptions = {}): Promise<ModelEntry[]> {
  const { signal, onProgress } = options;
  const found = await findModelFiles(dirs, signal ? { signal } : {});
  const files = [...found.files].sort((x, y) => x.title.localeCompare(y.title) || x.path.localeCompare(y.path));
  const entries = await mapLimit(files, options.concurrency ?? 8, async (f, i) => {
    if (signal?.aborted) throw new MergeError("ABORTED", "listing was cancelled");
    onProgress?.({ phase: "headers", index: i, count: files.length, path: f.path });
    return describeFile(f);
  });
  const cache = options.cache ?? null;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    if (signal?.aborted) throw new MergeError("ABORTED", "listing was cancelled");
    try {
      const hashOptions = {
        cache,
        ...(signal ? { signal } : {}),
        onProgress: (bytesDone: number, bytesTotal: number) => onProgress?.({ phase: "hash", index: i, count: entries.length, path: entry.path, bytesDone, bytesTotal }),
      };
      const h = options.hash === false ? await getFileHashes(entry.path, { ...hashOptions, cachedOnly: true }) : await getFileHashes(entry.path, hashOptions);
      if (h) {
        entry.sha256 = h.sha256;
        entry.autov2 = h.autov2;
        entry.legacyHash = h.legacy;
        entry.tensorSha256 = h.tensorSha256;
        entry.hashCached = h.cached;
      }
    } catch (e) {
      if (e instanceof MergeError && e.code === "ABORTED") throw e;
      entry.error ??= errorOf(e);
    }
  }
  for (const u of found.unreadable) {
    entries.push({
      path: u.path, name: basename(u.path), title: titleOf(dirs.length === 1 ? resolve(dirs[0]!) : resolve(u.path, ".."), u.path), size: 0, mtimeMs: 0,
      format: "folder", architecture: null, architectureLabel: null, variant: null, kind: null, components: [], params: null, tensors: null, lora: null,
      dtypes: [], precision: null, sha256: null, autov2: null, legacyHash: null, tensorSha256: null, hashCached: null, error: errorOf(u.error),
    });
  }
  return entries;
}
