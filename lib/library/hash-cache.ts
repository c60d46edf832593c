/**
 * A JSON cache of file hashes, so listing a big folder a second time reads no tensor data.
 *
 * - Location: `$TENSORMERGE_CACHE_DIR/hashes.json`, else `$XDG_CACHE_HOME/tensormerge/hashes.json`,
 *   else `~/.cache/tensormerge/hashes.json`.
 * - Entries are keyed by absolute path and valid only while the file's size and mtime (ms) are
 *   the ones recorded; any change means the file is hashed again.
 * - Writes are atomic (temporary file + rename) and merge with what another process may have
 *   written meanwhile, so concurrent `tensormerge` runs lose nothing but their own races.
 * - A missing or corrupt cache file is treated as empty; it is a cache, never a source of errors.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fsError } from "../errors";
import { computeFileHashes, type FileHashes, type HashOptions } from "./hash";

const CACHE_VERSION = 1;

interface CacheEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
  legacy: string;
  tensorSha256: string | null;
}

interface CacheFile {
  version: number;
  entries: Record<string, CacheEntry>;
}

/** The default cache file path (see the module comment). */
export function defaultHashCachePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TENSORMERGE_CACHE_DIR) return join(resolve(env.TENSORMERGE_CACHE_DIR), "hashes.json");
  const base = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.startsWith("/") ? env.XDG_CACHE_HOME : join(homedir(), ".cache");
  return join(base, "tensormerge", "hashes.json");
}

function isEntry(v: unknown): v is CacheEntry {
  const e = v as CacheEntry;
  return !!e && typeof e === "object" && typeof e.size === "number" && typeof e.mtimeMs === "number"
    && typeof e.sha256 === "string" && /^[0-9a-f]{64}$/.test(e.sha256) && typeof e.legacy === "string"
    && (e.tensorSha256 === null || typeof e.tensorSha256 === "string");
}

/** The entries of a cache file, keyed by path in a Map: a key is data, whatever its text. */
async function readCacheFile(path: string): Promise<Map<string, CacheEntry>> {
  const out = new Map<string, CacheEntry>();
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return out;
  }
  try {
    const parsed = JSON.parse(text) as CacheFile;
    if (parsed?.version !== CACHE_VERSION || typeof parsed.entries !== "object" || parsed.entries === null) return out;
    // JSON.parse makes every key an own property, so entries() sees "__proto__" too.
    for (const [k, v] of Object.entries(parsed.entries)) if (isEntry(v)) out.set(k, v);
    return out;
  } catch {
    return new Map();
  }
}

/**
 * The hash cache. Load it once, look files up, save after adding.
 *
 * @example
 * const cache = await HashCache.open();
 * const hashes = await getFileHashes("models/a.safetensors", { cache });
 */
export class HashCache {
  readonly path: string;
  /** The last error of an automatic save (a read-only cache folder must not fail a listing). */
  saveError: Error | undefined;
  private entries = new Map<string, CacheEntry>();
  private changed = new Map<string, CacheEntry | null>();

  constructor(path: string = defaultHashCachePath()) {
    this.path = path;
  }

  /** Opens (loads) the cache at `path` (default location when omitted). */
  static async open(path?: string): Promise<HashCache> {
    const cache = new HashCache(path);
    await cache.load();
    return cache;
  }

  async load(): Promise<void> {
    this.entries = await readCacheFile(this.path);
    for (const [k, v] of this.changed) {
      if (v) this.entries.set(k, v);
      else this.entries.delete(k);
    }
  }

  /** Hashes of `absPath` if cached for exactly this size and mtime. */
  get(absPath: string, size: number, mtimeMs: number): FileHashes | undefined {
    const e = this.entries.get(absPath);
    if (!e || e.size !== size || e.mtimeMs !== mtimeMs) return undefined;
    return { sha256: e.sha256, autov2: e.sha256.slice(0, 10), legacy: e.legacy, tensorSha256: e.tensorSha256 };
  }

  set(absPath: string, size: number, mtimeMs: number, hashes: FileHashes): void {
    const entry: CacheEntry = { size, mtimeMs, sha256: hashes.sha256, legacy: hashes.legacy, tensorSha256: hashes.tensorSha256 };
    this.entries.set(absPath, entry);
    this.changed.set(absPath, entry);
  }

  delete(absPath: string): void {
    this.entries.delete(absPath);
    this.changed.set(absPath, null);
  }

  /** Every cached (path, hashes), for lookups by hash among known files. */
  *all(): IterableIterator<[string, FileHashes & { size: number; mtimeMs: number }]> {
    for (const [k, e] of this.entries) {
      yield [k, { sha256: e.sha256, autov2: e.sha256.slice(0, 10), legacy: e.legacy, tensorSha256: e.tensorSha256, size: e.size, mtimeMs: e.mtimeMs }];
    }
  }

  /**
   * Writes the cache if anything changed: re-reads the file, applies this process's changes on
   * top (another run may have added entries), writes a temporary file and renames it over.
   */
  async save(): Promise<void> {
    if (this.changed.size === 0) return;
    await this.load();
    // fromEntries defines each key as an own property, so JSON.stringify writes every one.
    const body: CacheFile = { version: CACHE_VERSION, entries: Object.fromEntries(this.entries) };
    const tmp = `${this.path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await mkdir(dirname(this.path), { recursive: true });
      await writeFile(tmp, JSON.stringify(body));
      await rename(tmp, this.path);
      this.changed.clear();
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw fsError(e, this.path, "writing the hash cache");
    }
  }
}

export interface GetHashesOptions extends HashOptions {
  /** The cache to use; `null` for none. Default: none (callers that want caching pass one). */
  cache?: HashCache | null;
  /** Computes hashes on a cache miss (default `computeFileHashes`); tests inject a counter. */
  compute?: (path: string, options: HashOptions) => Promise<FileHashes>;
  /** Only look in the cache; return undefined on a miss instead of hashing. */
  cachedOnly?: boolean;
}

export interface HashResult extends FileHashes {
  /** True when the hashes came from the cache. */
  cached: boolean;
}

/**
 * Hashes of a file, from the cache when its size and mtime match, else computed, cached and
 * saved at once (so an interrupted `list` keeps what it hashed).
 *
 * @example
 * const cache = await HashCache.open();
 * const { sha256, cached } = await getFileHashes("models/a.safetensors", { cache });
 */
export async function getFileHashes(path: string, options: GetHashesOptions & { cachedOnly: true }): Promise<HashResult | undefined>;
export async function getFileHashes(path: string, options?: GetHashesOptions): Promise<HashResult>;
export async function getFileHashes(path: string, options: GetHashesOptions = {}): Promise<HashResult | undefined> {
  const abs = resolve(path);
  const cache = options.cache ?? null;
  let before;
  try {
    before = await stat(abs);
  } catch (e) {
    throw fsError(e, abs, "hashing");
  }
  const hit = cache?.get(abs, before.size, before.mtimeMs);
  if (hit) return { ...hit, cached: true };
  if (options.cachedOnly) return undefined;
  const compute = options.compute ?? computeFileHashes;
  const hashes = await compute(abs, { ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  if (cache) {
    // A file that changed while it was read gets no entry: its hashes describe neither version.
    const after = await stat(abs).catch(() => undefined);
    if (after && after.size === before.size && after.mtimeMs === before.mtimeMs) {
      cache.set(abs, before.size, before.mtimeMs, hashes);
      await cache.save().catch((e: Error) => { cache.saveError = e; });
    }
  }
  return { ...hashes, cached: false };
}
