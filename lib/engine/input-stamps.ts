/**
 * Detects an input changed during a merge, whichever engine ran it. The native engine maps the
 * inputs and the TS engine reads them in chunks: a file rewritten in place (same size) reads
 * without any error, but the output then mixes two versions and the recipe's pinned hash of
 * that input is wrong. So the board stamps every input (size, mtime in ns, device, inode) before
 * the first pass and compares after each pass, before anything is committed.
 *
 * Limit: file systems store mtime at the kernel's clock tick (a few ms); a same-size rewrite
 * within one tick of the stamp keeps the mtime and is not seen.
 *
 * @example
 * const stamps = await stampInputs(plan.inputs);
 * // ... run the passes ...
 * await assertInputsUnchanged(stamps); // throws MergeError("INPUT_CHANGED") naming the file
 */
import { stat } from "node:fs/promises";
import { MergeError, fsError } from "../errors";

export interface InputStamp {
  path: string;
  size: bigint;
  mtimeNs: bigint;
  dev: bigint;
  ino: bigint;
}

export async function stampOf(path: string): Promise<InputStamp> {
  const s = await stat(path, { bigint: true });
  return { path, size: s.size, mtimeNs: s.mtimeNs, dev: s.dev, ino: s.ino };
}

/**
 * Stamps each input: with the stamp taken when it was opened (`ModelFile.stamp`, before its
 * header was read and before it was hashed for the recipe), else now. Throws FILE_NOT_FOUND /
 * IO_ERROR naming the file if one is gone.
 */
export async function stampInputs(inputs: readonly { path: string; stamp?: InputStamp }[]): Promise<InputStamp[]> {
  return Promise.all(inputs.map((m) => m.stamp ?? stampOf(m.path).catch((e) => { throw fsError(e, m.path, "reading an input's size and date"); })));
}

/** What differs between two stamps of one file, in words; undefined when nothing does. */
function difference(before: InputStamp, after: InputStamp | undefined): string | undefined {
  if (!after) return "it was removed";
  if (after.dev !== before.dev || after.ino !== before.ino) return "it was replaced by another file";
  if (after.size !== before.size) return `its size went from ${before.size} to ${after.size} bytes`;
  if (after.mtimeNs !== before.mtimeNs) return "it was rewritten in place: same size, new modification time";
  return undefined;
}

/** Throws MergeError("INPUT_CHANGED", path) for the first input that differs from its stamp. */
export async function assertInputsUnchanged(stamps: readonly InputStamp[]): Promise<void> {
  for (const before of stamps) {
    const after = await stampOf(before.path).catch(() => undefined);
    const what = difference(before, after);
    if (what !== undefined) {
      throw new MergeError(
        "INPUT_CHANGED",
        `${before.path}: the file changed during the merge (${what}); the merged bytes and the recipe's hash of this input would not match, so nothing was saved`,
        { path: before.path },
      );
    }
  }
}
