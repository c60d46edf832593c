/**
 * Finding a recipe's models: by reference (the library's `resolveModel`) and by full sha256
 * (ingredients pinned in recipes embedded in models). Hashes come from the hash cache when it
 * knows the file; each file is hashed at most once per run.
 */
import { stat } from "node:fs/promises";
import { basename, extname } from "node:path";
import { getFileHashes, type HashCache, type HashResult } from "../library/hash-cache";
import { resolveModel } from "../library/resolve";
import { defaultModelDirs, findModelFiles } from "../library/scan";

export interface FinderOptions {
  modelDirs?: readonly string[];
  hashCache?: HashCache | null;
  cwd?: string;
  signal?: AbortSignal;
  /** Called when a file is hashed (not when its hashes come from the cache). */
  onHash?: (path: string, bytesDone: number, bytesTotal: number) => void;
}

export class ModelFinder {
  private readonly hashed = new Map<string, Promise<HashResult>>();
  readonly dirs: readonly string[];

  constructor(private readonly options: FinderOptions = {}) {
    this.dirs = options.modelDirs ?? defaultModelDirs();
  }

  /** A path, model name or hash prefix → absolute path (MODEL_NOT_FOUND / MODEL_AMBIGUOUS otherwise). */
  resolve(ref: string): Promise<string> {
    return resolveModel(ref, {
      dirs: this.dirs,
      cache: this.options.hashCache ?? null,
      ...(this.options.cwd ? { cwd: this.options.cwd } : {}),
      ...(this.options.signal ? { signal: this.options.signal } : {}),
    });
  }

  /** The file's hashes, computed once per run (and cached across runs when there is a cache). */
  hashes(path: string): Promise<HashResult> {
    let h = this.hashed.get(path);
    if (!h) {
      const onHash = this.options.onHash;
      h = getFileHashes(path, {
        cache: this.options.hashCache ?? null,
        ...(this.options.signal ? { signal: this.options.signal } : {}),
        ...(onHash ? { onProgress: (done: number, total: number) => onHash(path, done, total) } : {}),
      });
      this.hashed.set(path, h);
      h.catch(() => this.hashed.delete(path));
    }
    return h;
  }

  /**
   * The first model file in the folders whose sha256 is `sha256`. Files named like `nameHint`
   * are tried first, so a folder is only hashed in full when the file was renamed.
   */
  async byHash(sha256: string, nameHint?: string): Promise<string | undefined> {
    const existing: string[] = [];
    for (const d of this.dirs) if (await stat(d).catch(() => undefined)) existing.push(d);
    if (existing.length === 0) return undefined;
    const { files } = await findModelFiles(existing, this.options.signal ? { signal: this.options.signal } : {});
    const hint = nameHint ? basename(nameHint, extname(nameHint)).toLowerCase() : undefined;
    const ordered = hint === undefined ? files : [...files.filter((f) => f.name.toLowerCase() === hint), ...files.filter((f) => f.name.toLowerCase() !== hint)];
    for (const f of ordered) {
      const h = await this.hashes(f.path).catch(() => undefined);
      if (h?.sha256 === sha256) return f.path;
    }
    return undefined;
  }
}
