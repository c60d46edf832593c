/**
 * Nothing lost: outputs are written to a temporary file beside the target, synced, then given
 * their final name; an existing file is only replaced when asked; an input is never a target.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, link, open, readdir, rename, stat, statfs, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { MergeError, fsError } from "./errors";

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

/** A temp file older than this with a dead owner is stale (a live writer touches it far more often). */
const STALE_TEMP_SECONDS = 10;

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

function processRuns(pid: number): boolean {
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
 * Refuses targets that exist (unless `overwrite`) or that are one of the inputs, and targets
 * whose folder is missing (unless the caller will create it: `folderMayBeMissing`).
 */
export async function checkTargets(targets: string[], inputs: string[], overwrite: boolean, folderMayBeMissing = false): Promise<void> {
  const inputSet = new Set(inputs.map((p) => resolve(p)));
  const seen = new Set<string>();
  for (const target of targets) {
    const full = resolve(target);
    if (inputSet.has(full)) throw new MergeError("OUTPUT_EXISTS", `${target}: the output would replace one of the inputs`, { path: target });
    if (seen.has(full)) throw new MergeError("INVALID_ARGUMENT", `${target}: two outputs have the same name`, { path: target });
    seen.add(full);
    if (!overwrite && (await exists(target))) {
      throw new MergeError("OUTPUT_EXISTS", `${target} already exists (use --overwrite to replace it)`, { path: target });
    }
    if (!folderMayBeMissing && !(await exists(dirname(full)))) throw new MergeError("FILE_NOT_FOUND", `${dirname(full)}: the output folder does not exist`, { path: target });
  }
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
 * file that appeared meanwhile is never replaced.
 */
export async function commitFile(temp: string, target: string, overwrite: boolean): Promise<void> {
  try {
    if (overwrite) {
      await rename(temp, target);
    } else {
      try {
        await link(temp, target);
        await unlink(temp);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        // Filesystems without hard links (FAT, some network mounts): check, then rename.
        if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e;
        if (await exists(target)) throw Object.assign(new Error("exists"), { code: "EEXIST" });
        await rename(temp, target);
      }
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new MergeError("OUTPUT_EXISTS", `${target} appeared while merging; the result is left in ${temp}`, { path: target });
    }
    throw fsError(e, target, "renaming the finished output");
  }
  // Persist the rename itself.
  const dir = await open(dirname(target), "r").catch(() => undefined);
  if (dir) {
    await dir.sync().catch(() => undefined);
    await dir.close();
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
