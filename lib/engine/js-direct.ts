/**
 * O_DIRECT output writes for the TS engine, as the native engine writes (native/core/file_io.cc):
 * a new page-cache page costs this VM a host fault, so copying the output through the page
 * cache cost the TS engine more kernel CPU than reading all its inputs (perf: the write copy
 * was a quarter of a weighted sum's samples). O_DIRECT needs the memory, the file offset and
 * the length aligned; JS cannot see addresses, so the buffers meant for it are the memory of
 * a WebAssembly.Memory (one mapping of whole pages: its first byte is page-aligned), and a
 * chunk's bytes are placed at the same offset modulo the page as their file position. The
 * whole pages of a write go direct; its partial first and last pages (shared with the
 * neighbouring chunks, maybe written by another thread) go through the page cache, so a page
 * is only ever written one way. The bytes in the file are the same either way.
 */
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

// Node has WebAssembly; the project's TypeScript libs (no DOM) do not declare it.
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory };
/** A WebAssembly.Memory (the kernels' wasm modules import it: asm-kernels.ts). */
export interface WasmMemory { buffer: ArrayBuffer }

/** The alignment O_DIRECT gets here (a page: at least every block size in use). */
export const PAGE = 4096;

/** Every page-aligned buffer, with the memory it is the buffer of. */
const pageAligned = new WeakMap<ArrayBufferLike, WasmMemory>();

/** `bytes` (plus a page of room to shift views by) in memory whose first byte is page-aligned. */
export function pageAlignedBuffer(bytes: number): ArrayBuffer {
  const pages = Math.max(1, Math.ceil((bytes + PAGE) / 65536));
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  pageAligned.set(memory.buffer, memory);
  return memory.buffer;
}

/** The WebAssembly.Memory whose buffer `buffer` is, if pageAlignedBuffer made it. */
export function memoryOf(buffer: ArrayBufferLike): WasmMemory | undefined {
  return pageAligned.get(buffer);
}

/** The O_DIRECT flag, or undefined where the platform has none or TENSORMERGE_DIRECT_IO=0. */
function directFlag(): number | undefined {
  if (process.env.TENSORMERGE_DIRECT_IO === "0") return undefined;
  return (constants as Record<string, number | undefined>).O_DIRECT;
}

/** A second handle of an output, opened O_DIRECT; undefined where that cannot be done. */
export async function openDirect(path: string): Promise<FileHandle | undefined> {
  const flag = directFlag();
  if (flag === undefined) return undefined;
  return open(path, constants.O_WRONLY | flag).catch(() => undefined);
}

/** Writes an output's chunks: whole pages through `direct` where the buffer allows it. */
export class OutputWriter {
  constructor(private readonly buffered: FileHandle, private direct: FileHandle | undefined) {}

  /** Writes bytes[0, length) at `position`. */
  async write(bytes: Uint8Array, length: number, position: number): Promise<void> {
    const direct = this.direct;
    if (direct && pageAligned.has(bytes.buffer) && (bytes.byteOffset - position) % PAGE === 0) {
      const first = Math.ceil(position / PAGE) * PAGE;
      const end = Math.floor((position + length) / PAGE) * PAGE;
      if (end > first) {
        try {
          await writeAll(direct, bytes, first - position, end - first, first);
          await Promise.all([
            writeAll(this.buffered, bytes, 0, first - position, position),
            writeAll(this.buffered, bytes, end - position, position + length - end, end),
          ]);
          return;
        } catch (e) {
          // A filesystem that opened O_DIRECT but will not do it: buffered from now on.
          if ((e as NodeJS.ErrnoException).code !== "EINVAL") throw e;
          this.direct = undefined;
          await direct.close().catch(() => undefined);
        }
      }
    }
    await writeAll(this.buffered, bytes, 0, length, position);
  }

  async close(): Promise<void> {
    const direct = this.direct;
    this.direct = undefined;
    await direct?.close();
  }
}

async function writeAll(handle: FileHandle, bytes: Uint8Array, offset: number, length: number, position: number): Promise<void> {
  while (length > 0) {
    const { bytesWritten } = await handle.write(bytes, offset, length, position);
    offset += bytesWritten;
    position += bytesWritten;
    length -= bytesWritten;
  }
}
