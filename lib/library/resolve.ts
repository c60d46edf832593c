/**
 * Model references, as users write them in commands and recipes:
 *
 * 1. a path to an existing file (absolute, or relative to the working directory);
 * 2. a name: the file name without extension, as the classic tool shows it (`dreamshaper_8`),
 *    the file name with its extension, or the path relative to a models folder without extension
 *    (`sdxl/juggernaut`); an exact match is preferred, then a case-insensitive one. A1111's
 *    checkpoint titles are accepted too: `dreamshaper_8.safetensors [879db523c3]` (the bracketed
 *    hash then picks among same-named files);
 * 3. a hash prefix of at least 8 hex digits: a prefix of the full SHA-256 (so the 10-digit
 *    AutoV2 works) or of the tensor-data SHA-256 (AutoV3), or exactly the 8-digit legacy hash.
 *    Files whose hashes are not cached are hashed (and cached) to answer, unless `hash: false`.
 *
 * A name wins over a hash: a reference is tried as a hash only when no file has that name.
 * Ambiguous → MODEL_AMBIGUOUS listing the candidates; no match → MODEL_NOT_FOUND listing close
 * names, or FILE_NOT_FOUND when the reference was clearly meant as a path (it has a folder
 * separator or a model file extension and no model has that name).
 */
import { stat } from "node:fs/promises";
import { basename, extname, isAbsolute, resolve as resolvePath, sep } from "node:path";
import { MergeError } from "../errors";
import { getFileHashes, type HashCache } from "./hash-cache";
import { defaultModelDirs, findModelFiles, type FoundModelFile } from "./scan";

export interface ResolveOptions {
  /** Model folders to search (default: `defaultModelDirs()`). */
  dirs?: readonly string[];
  /** Hash cache for hash references (default: none). */
  cache?: HashCache | null;
  /** Hash files that are not in the cache to answer a hash reference (default true). */
  hash?: boolean;
  /** Base for relative paths (default: process.cwd()). */
  cwd?: string;
  signal?: AbortSignal;
}

const HEX_REF = /^[0-9a-f]{8,64}$/i;
/** A1111 checkpoint title: "name.safetensors [abcdef0123]". */
const TITLE_WITH_HASH = /^(.*\S)\s*\[([0-9a-f]{8,64})\]$/i;

async function isFile(path: string): Promise<boolean> {
  const s = await stat(path).catch(() => undefined);
  return !!s && s.isFile();
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** Up to `limit` names close to `ref` (substring or small edit distance), closest first. */
export function closeNames(ref: string, names: readonly string[], limit = 5): string[] {
  const r = ref.toLowerCase();
  const scored = [...new Set(names)].map((n) => {
    const l = n.toLowerCase();
    const d = levenshtein(r, l);
    const contains = l.includes(r) || r.includes(l);
    return { n, d, ok: contains || d <= Math.max(2, Math.floor(r.length / 3)), score: contains ? d / 4 : d };
  });
  return scored.filter((s) => s.ok).sort((x, y) => x.score - y.score || x.n.localeCompare(y.n)).slice(0, limit).map((s) => s.n);
}

function nameKeys(f: FoundModelFile): string[] {
  const ext = extname(f.path);
  return [f.name, basename(f.path), f.title, f.title + ext];
}

function matchByName(ref: string, files: readonly FoundModelFile[]): FoundModelFile[] {
  const exact = files.filter((f) => nameKeys(f).includes(ref));
  if (exact.length > 0) return exact;
  const lower = ref.toLowerCase();
  return files.filter((f) => nameKeys(f).some((k) => k.toLowerCase() === lower));
}

async function matchByHash(hex: string, files: readonly FoundModelFile[], options: ResolveOptions): Promise<FoundModelFile[]> {
  const prefix = hex.toLowerCase();
  const matches: FoundModelFile[] = [];
  for (const f of files) {
    const base = { cache: options.cache ?? null, ...(options.signal ? { signal: options.signal } : {}) };
    const h = options.hash === false ? await getFileHashes(f.path, { ...base, cachedOnly: true }) : await getFileHashes(f.path, base).catch(() => undefined);
    if (!h) continue;
    if (h.sha256.startsWith(prefix) || (prefix.length === 8 && h.legacy === prefix) || (h.tensorSha256 !== null && h.tensorSha256.startsWith(prefix))) {
      matches.push(f);
    }
  }
  return matches;
}

function ambiguous(ref: string, candidates: readonly FoundModelFile[]): MergeError {
  const list = candidates.map((c) => `  ${c.path}`).join("\n");
  return new MergeError("MODEL_AMBIGUOUS", `model "${ref}" matches ${candidates.length} files; give a path or a longer hash:\n${list}`);
}

/**
 * Turns a model reference (path, name or hash prefix) into the absolute path of one file.
 *
 * @example
 * await resolveModel("dreamshaper_8", { dirs: ["/sd/models/Stable-diffusion"] });
 * await resolveModel("879db523c3");            // by AutoV2 hash, in the default folders
 * await resolveModel("./my/model.safetensors"); // a path is taken as it is
 */
export async function resolveModel(ref: string, options: ResolveOptions = {}): Promise<string> {
  const text = ref.trim();
  if (text.length === 0) throw new MergeError("INVALID_ARGUMENT", "model reference is empty");
  const direct = resolvePath(options.cwd ?? process.cwd(), text);
  if (await isFile(direct)) return direct;

  const dirs = options.dirs ?? defaultModelDirs();
  const existing: string[] = [];
  for (const d of dirs) if (await stat(d).catch(() => undefined)) existing.push(d);
  const { files } = await findModelFiles(existing, options.signal ? { signal: options.signal } : {});

  const titled = TITLE_WITH_HASH.exec(text);
  const nameRef = titled ? titled[1]! : text;
  let candidates = matchByName(nameRef, files);
  if (candidates.length > 1 && titled) candidates = await matchByHash(titled[2]!, candidates, options);
  if (candidates.length === 1) return candidates[0]!.path;
  if (candidates.length > 1) throw ambiguous(text, candidates);

  if (HEX_REF.test(text)) {
    const byHash = await matchByHash(text, files, options);
    if (byHash.length === 1) return byHash[0]!.path;
    if (byHash.length > 1) throw ambiguous(text, byHash);
  }

  const close = closeNames(nameRef, files.flatMap((f) => [f.name, f.title]));
  const where = existing.length > 0 ? existing.join(", ") : `${dirs.join(", ")} (missing)`;
  const hint = close.length > 0 ? `; close names: ${close.join(", ")}` : "";
  if (isAbsolute(text) || text.includes("/") || text.includes(sep) || /\.(safetensors|sft|ckpt|pt|pth|bin)$/i.test(text)) {
    throw new MergeError("FILE_NOT_FOUND", `${direct}: no such file, and no model of that name in ${where}${hint}`, { path: direct });
  }
  throw new MergeError("MODEL_NOT_FOUND", `no model "${text}": not a file, and no model of that name${HEX_REF.test(text) ? " or hash" : ""} in ${where}${hint}`, { path: direct });
}
