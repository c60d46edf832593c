/**
 * Random-access reads for the ckpt parsers. The readers only ever see this interface, so the
 * same code parses a multi-gigabyte file on disk (a few small reads at known offsets) and an
 * in-memory buffer (the fuzz tests and crafted fixtures).
 */
import { open, type FileHandle } from "node:fs/promises";
import { MergeError, fsError } from "../../errors";

export interface ByteSource {
  /** Path used in error messages. */
  readonly path: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Exactly `length` bytes at `offset`; the range must lie inside [0, size). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

function checkRange(source: ByteSource, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > source.size) {
    throw new MergeError("ZIP_INVALID", `${source.path}: read of ${length} bytes at ${offset} lies outside the ${source.size}-byte file`, { path: source.path });
  }
}

/** An in-memory source (tests, fuzzing). */
export function bufferSource(data: Uint8Array, path = "<memory>"): ByteSource {
  const source: ByteSource = {
    path,
    size: data.length,
    read: async (offset, length) => {
      checkRange(source, offset, length);
      return data.subarray(offset, offset + length);
    },
  };
  return source;
}

/** A source over an open file handle; the caller closes the handle. */
export async function fileSource(handle: FileHandle, path: string): Promise<ByteSource> {
  let size: number;
  try {
    size = (await handle.stat()).size;
  } catch (e) {
    throw fsError(e, path, "reading its size");
  }
  const source: ByteSource = {
    path,
    size,
    read: async (offset, length) => {
      checkRange(source, offset, length);
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await handle.read(buffer, done, length - done, offset + done));
        } catch (e) {
          throw fsError(e, path, "reading");
        }
        if (bytesRead === 0) throw new MergeError("ZIP_INVALID", `${path}: unexpected end of file at byte ${offset + done}`, { path });
        done += bytesRead;
      }
      return buffer;
    },
  };
  return source;
}

/** Opens `path`, runs `fn` on a source over it, always closes the file. */
export async function withFileSource<T>(path: string, fn: (source: ByteSource) => Promise<T>): Promise<T> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(e, path, "opening");
  }
  try {
    return await fn(await fileSource(handle, path));
  } finally {
    await handle.close().catch(() => undefined);
  }
}
