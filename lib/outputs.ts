/**
 * Nothing lost: outputs are written to a temporary file beside the target, synced, then given
 * their final name; an existing file is only replaced when asked; an input is never a target.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, link, lstat, open, readdir, realpath, rename, stat, statfs, unlink } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import { MergeError, fsError } from "./errors";
import { configPathFor, findModelConfig } from "./library/config";

export const TEMP_MARKER = ".tensormerge-";

/** A unique hidden temporary path in the target's folder (same filesystem, so rename is atomic). */
export function tempPathFor(target: string): string {
  return join(dirname(target), `.${basename(target)}${TEMP_MARKER}${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
}

const TEMP_NAME = new RegExp(`^\\.(.+)${TEMP_MARKER.replace(/[.]/g, "\\.")}(\\d+)-[0-9a-f]+\\.tmp$`);

/** The target name and writer pid of a file name made by tempPathFor, or null for any other name. */
function parseTempName(name: string): { target: string; pid: number } | null {
  const m = TEMP_NAME.exec(name);
  return m ? { target: m[1]!, pid: Number(m[2]) } : null;
}

/** A temp file (or folder) older than this with a dead owner is stale (a live writer touches it far more often). */
export const STALE_TEMP_SECONDS = 10;

/**
 * Removes the temporary files that killed merges left beside these targets (a kill cannot clean
 * up): `.<name>.tensormerge-<pid>-<random>.tmp` whose process no longer runs on this machine and
 * that nothing has written for a while (so a merge from another machine on a shared folder is
 * left alone). Returns the paths removed. Called before the free-space check: a killed SDXL merge
 * may have left gigabytes.
 */
export async function removeStaleTemps(targets: string[], now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  const byDir = new Map<string, Set<string>>();
  for (const t of targets) {
    const dir = dirname(resolve(t));
    if (!byDir.has(dir)) byDir.set(dir, new Set());
    byDir.get(dir)!.add(basename(t));
  }
  for (const [dir, names] of byDir) {
    const entries = await readdir(dir).catch(() => [] as string[]);
    for (const entry of entries) {
      const temp = parseTempName(entry);
      if (!temp || !names.has(temp.target) || processRuns(temp.pid)) continue;
      const path = join(dir, entry);
      const info = await stat(path).catch(() => undefined);
      if (!info?.isFile() || now - info.mtimeMs < STALE_TEMP_SECONDS * 1000) continue;
      if (await unlink(path).then(() => true, () => false)) removed.push(path);
    }
  }
  return removed;
}

/** Whether process `pid` runs on this machine (the owner of a temporary name). */
export function processRuns(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, another user's
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * What a path names on disk, for telling whether two names reach the same file: the real path of
 * the directory entry (its folder's symlinks resolved, the last component kept), the real path of
 * the file it leads to (the entry's own symlinks resolved too), and that file's device and inode
 * (which also catch hard links and bind mounts). A path that does not exist has no device and inode.
 */
export interface FileIdentity {
  path: string;
  entry: string;
  real: string;
  dev?: number;
  ino?: number;
  isFile?: boolean;
}

/** The real path of a name that may not exist yet: the nearest existing folder resolved, the rest kept. */
async function realPathOf(full: string): Promise<string> {
  const real = await realpath(full).catch(() => undefined);
  if (real !== undefined) return real;
  const parent = dirname(full);
  return parent === full ? full : join(await realPathOf(parent), basename(full));
}

export async function identityOf(path: string): Promise<FileIdentity> {
  const full = resolve(path);
  const parent = dirname(full);
  const entry = parent === full ? full : join(await realPathOf(parent), basename(full));
  const s = await stat(full).catch(() => undefined); // follows symlinks: the file written through
  return { path, entry, real: s ? await realPathOf(full) : entry, ...(s ? { dev: s.dev, ino: s.ino, isFile: s.isFile() } : {}) };
}

/** Whether writing `target` (by a rename onto its name, or through it) could touch `file`. */
export function sameFile(target: FileIdentity, file: FileIdentity): boolean {
  if (target.entry === file.entry || target.entry === file.real || target.real === file.real) return true;
  return target.dev !== undefined && target.dev === file.dev && target.ino === file.ino;
}

/**
 * The files a command reads (or must keep): no file it writes may reach one of them by any name,
 * whether the same path, a symlink to it, a hard link, or a path through a symlinked folder.
 */
export class ProtectedFiles {
  private constructor(private readonly files: { identity: FileIdentity; what: string }[]) {}

  /** `files`: paths, or paths with how a message names them ("input B", "the recipe"). */
  static async of(files: readonly (string | { path: string; what: string })[]): Promise<ProtectedFiles> {
    const list = files.map((f) => (typeof f === "string" ? { path: f, what: "one of the inputs" } : f));
    return new ProtectedFiles(await Promise.all(list.map(async (f) => ({ identity: await identityOf(f.path), what: f.what }))));
  }

  /** Refuses (INPUT_IS_TARGET) when writing `target` would replace or change a protected file. */
  async check(target: string | FileIdentity, role = "the output", hint = ""): Promise<void> {
    const t = typeof target === "string" ? await identityOf(target) : target;
    for (const f of this.files) {
      if (!sameFile(t, f.identity)) continue;
      const direct = resolve(t.path) === resolve(f.identity.path);
      const why = direct ? `${role} would replace ${f.what}` : `${role} is ${f.what} (${f.identity.path}) under another name (a symlink, a hard link or a symlinked folder): writing it would replace that file`;
      throw new MergeError("INPUT_IS_TARGET", `${t.path}: ${why}${hint ? `; ${hint}` : ""}`, { path: t.path });
    }
  }
}

/**
 * Refuses, before anything is written: a target that is one of the inputs under any name
 * (INPUT_IS_TARGET), two targets that are one file, a target that is a folder or not a regular
 * file, a target that exists (unless `overwrite`), and a target whose folder is missing (unless
 * the caller will create it: `folderMayBeMissing`).
 */
export async function checkTargets(targets: string[], inputs: string[] | ProtectedFiles, overwrite: boolean, folderMayBeMissing = false): Promise<void> {
  const protectedFiles = inputs instanceof ProtectedFiles ? inputs : await ProtectedFiles.of(inputs);
  const seen: FileIdentity[] = [];
  for (const target of targets) {
    const id = await identityOf(target);
    await protectedFiles.check(id);
    if (seen.some((s) => sameFile(id, s))) throw new MergeError("INVALID_ARGUMENT", `${target}: two outputs have the same name`, { path: target });
    seen.push(id);
    if (id.isFile === false) {
      throw new MergeError("INVALID_ARGUMENT", `${target} is a folder or a special file, not a model file: an output must be a file name`, { path: target });
    }
    if (!overwrite && (await lexists(target))) {
      throw new MergeError("OUTPUT_EXISTS", `${target} already exists (use --overwrite to replace it)`, { path: target });
    }
    const folder = dirname(resolve(target));
    if (!folderMayBeMissing && !(await exists(folder))) throw new MergeError("FILE_NOT_FOUND", `${folder}: the output folder does not exist`, { path: target });
  }
}

/** Whether a name exists, a dangling symlink included (it too would be replaced). */
async function lexists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
}

/** Space each output folder needs and has (free is null when unknown). */
export async function diskNeeds(outputs: readonly { path: string; bytes: number }[]): Promise<{ dir: string; needed: number; free: number | null }[]> {
  const byDir = new Map<string, number>();
  for (const o of outputs) byDir.set(dirname(resolve(o.path)), (byDir.get(dirname(resolve(o.path))) ?? 0) + o.bytes);
  const out: { dir: string; needed: number; free: number | null }[] = [];
  for (const [dir, needed] of byDir) {
    // A folder that does not exist yet (dry run) gets the space of the nearest one that does.
    let probe = dir;
    while (!(await statfs(probe).then(() => true, () => false)) && dirname(probe) !== probe) probe = dirname(probe);
    const s = await statfs(probe).catch(() => undefined);
    out.push({ dir, needed, free: s ? Number(s.bavail) * Number(s.bsize) : null });
  }
  return out;
}

/** One model config to copy: `model`'s `<name>.yaml` to `destination`, beside `output`. */
export interface ConfigCopy {
  model: string;
  source: string;
  output: string;
  destination: string;
}

/**
 * Decides, before anything is written, which model config (`<name>.yaml`) each output gets: the
 * first of its `from` models that has one. A destination that already is that config (an output
 * beside its own input, in another format) needs no copy. Refuses (INPUT_IS_TARGET) a
 * destination that is, by any name, an input, another input's config or an output.
 */
export async function planConfigCopies(groups: readonly { from: readonly string[]; outputs: readonly string[] }[], inputs: readonly string[], overwrite = true): Promise<ConfigCopy[]> {
  const configOf = new Map<string, string | null>();
  const findConfig = async (model: string) => {
    if (!configOf.has(model)) configOf.set(model, await findModelConfig(model));
    return configOf.get(model)!;
  };
  for (const m of inputs) await findConfig(m);
  const keep = await ProtectedFiles.of([
    ...inputs.map((path) => ({ path, what: "one of the inputs" })),
    ...[...configOf.entries()].filter(([, c]) => c !== null).map(([m, c]) => ({ path: c!, what: `the model config of ${basename(m)}` })),
    ...groups.flatMap((g) => g.outputs).map((path) => ({ path, what: "one of the outputs" })),
  ]);
  const copies: ConfigCopy[] = [];
  for (const g of groups) {
    let chosen: { model: string; source: string } | undefined;
    for (const model of g.from) {
      const source = await findConfig(model);
      if (source) { chosen = { model, source }; break; }
    }
    if (!chosen) continue;
    const sourceId = await identityOf(chosen.source);
    for (const output of g.outputs) {
      const destination = configPathFor(output);
      const id = await identityOf(destination);
      if (sameFile(id, sourceId)) continue;
      await keep.check(id, "the model config copied beside the output", "choose another output name, or copy no config (config \"none\")");
      // A file of the user's under the config's name is replaced only when asked, as outputs are.
      if (!overwrite && (await lexists(destination))) {
        throw new MergeError("OUTPUT_EXISTS", `${destination} already exists and would be replaced by the model config of ${basename(chosen.model)} (use --overwrite to replace it, or --config none)`, { path: destination });
      }
      copies.push({ ...chosen, output, destination });
    }
  }
  return copies;
}

/** Refuses to start when the output folders lack space for what will be written (plus 1% slack). */
export async function checkFreeSpace(outputs: { path: string; size: number }[]): Promise<void> {
  const needByDir = new Map<string, number>();
  for (const o of outputs) {
    const dir = dirname(resolve(o.path));
    needByDir.set(dir, (needByDir.get(dir) ?? 0) + o.size);
  }
  for (const [dir, need] of needByDir) {
    const s = await statfs(dir).catch(() => undefined);
    if (!s) continue;
    const free = Number(s.bavail) * Number(s.bsize);
    if (free < need * 1.01) {
      throw new MergeError("DISK_FULL", `${dir}: ${formatBytes(need)} needed for the output but only ${formatBytes(free)} free`, { path: dir });
    }
  }
}

/** Applies literal patches (zip CRCs), syncs. */
export async function patchFile(path: string, patches: { offset: number; data: Uint8Array }[]): Promise<void> {
  if (patches.length === 0) return;
  const handle = await open(path, "r+").catch((e) => { throw fsError(e, path, "patching the output"); });
  try {
    for (const p of patches) await handle.write(p.data, 0, p.data.length, p.offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Gives a finished temporary file its final name. Without `overwrite`, uses link + unlink so a
 * file that appeared meanwhile is never replaced; the finished result is then kept under a
 * visible name of its own (see keptPathFor), which the error names, so neither file is lost.
 */
export async function commitFile(temp: string, target: string, overwrite: boolean): Promise<void> {
  try {
    if (overwrite) {
      await rename(temp, target);
    } else {
      await linkNoReplace(temp, target);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      const kept = await keepAside(temp, target);
      const where = kept ? `this merge's result was saved as ${kept} instead` : "this merge's result could not be kept";
      throw new MergeError("OUTPUT_EXISTS", `${target} appeared while merging (another merge into the same name?) and was left as it is; ${where}`, { path: target });
    }
    throw fsError(e, target, "renaming the finished output");
  }
  await syncFolder(dirname(target));
}

/** Renames `from` to `to` unless `to` exists (EEXIST then). */
async function linkNoReplace(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
    await unlink(from);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // Filesystems without hard links (FAT, some network mounts): check, then rename.
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e;
    if (await lexists(to)) throw Object.assign(new Error("exists"), { code: "EEXIST" });
    await rename(from, to);
  }
}

/**
 * Where a finished output goes when its name was taken meanwhile: `<stem>.conflict-<pid>-<hex><ext>`
 * beside it. Not a temporary name (those are hidden and removed as stale once their process is
 * gone), so the file stays until the user decides.
 */
export function keptPathFor(target: string): string {
  const ext = extname(target);
  return join(dirname(target), `${basename(target, ext)}.conflict-${process.pid}-${randomBytes(3).toString("hex")}${ext}`);
}

async function keepAside(temp: string, target: string): Promise<string | null> {
  const kept = keptPathFor(target);
  try {
    await linkNoReplace(temp, kept);
    await syncFolder(dirname(kept));
    return kept;
  } catch {
    return null;
  }
}

/** Persists a rename itself. */
async function syncFolder(dir: string): Promise<void> {
  const handle = await open(dir, "r").catch(() => undefined);
  if (handle) {
    await handle.sync().catch(() => undefined);
    await handle.close();
  }
}

export async function removeQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
