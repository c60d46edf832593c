/**
 * The I/O floor as Node sees it: read the same input bytes and write the same number of output
 * bytes, no arithmetic, reads and writes overlapped (as the engines overlap them). Used by
 * `tensormerge bench`; the repository's full benchmark (bench/floor.c) measures the same thing
 * from C, a little faster.
 *
 * Writes go through O_DIRECT when the platform and filesystem take it (new page-cache pages
 * are expensive; see bench/RESULTS.md), else through the page cache, and end with fsync, as
 * merges do. O_DIRECT needs an aligned buffer, and JS cannot see addresses: the first write
 * probes offsets into an over-allocated buffer until the kernel accepts one.
 */
import { constants, openSync, closeSync, write, writeSync } from "node:fs";
import { promisify } from "node:util";
import { open, unlink, type FileHandle } from "node:fs/promises";

export interface FloorOptions {
  inputs: string[];
  /** A new file (created exclusively, removed afterwards). */
  outPath: string;
  outBytes: number;
  /** Bytes per read and per write (default 8 MiB; a multiple of 4096). */
  chunkBytes?: number;
  /** Stop after this many seconds and extrapolate (default: run to the end). */
  maxSeconds?: number;
  signal?: AbortSignal;
}

export interface FloorResult {
  /** Time for the whole job: measured, or extrapolated from the rates when stopped early. */
  seconds: number;
  measuredSeconds: number;
  complete: boolean;
  bytesRead: number;
  bytesWritten: number;
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
  directIo: boolean;
}

const ALIGN = 4096;
const writeAsync = promisify(write);

/** Opens `path` for O_DIRECT writes and finds an offset of `buf` the kernel accepts; undefined if none. */
function probeDirect(path: string, buf: Buffer): { fd: number; offset: number } | undefined {
  const flag = (constants as Record<string, number>).O_DIRECT;
  if (!flag) return undefined;
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | flag);
  } catch {
    return undefined;
  }
  for (let offset = 0; offset < ALIGN; offset += 16) {
    try {
      writeSync(fd, buf, offset, ALIGN, 0);
      return { fd, offset };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EINVAL") break;
    }
  }
  closeSync(fd);
  return undefined;
}

/**
 * Measures the floor.
 *
 * @example
 * const f = await ioFloor({ inputs: [a, b], outPath: "/tmp/x/floor.bin", outBytes: 2_132_000_000 });
 * console.log(f.seconds);
 */
export async function ioFloor(options: FloorOptions): Promise<FloorResult> {
  const chunk = options.chunkBytes ?? 8 << 20;
  if (chunk % ALIGN !== 0) throw new RangeError("chunkBytes must be a multiple of 4096");
  // One allocation for the write and the read buffers, so one probe aligns both.
  const arena = Buffer.allocUnsafeSlow(2 * chunk + ALIGN);
  arena.fill(0x3c);
  const out = await open(options.outPath, "wx");
  let direct: { fd: number; offset: number } | undefined;
  const handles: FileHandle[] = [];
  const t0 = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9;
  const stop = () => options.signal?.aborted === true || (options.maxSeconds !== undefined && elapsed() > options.maxSeconds);
  let bytesRead = 0, bytesWritten = 0, readDoneAt = 0, writeDoneAt = 0;
  try {
    direct = options.outBytes >= ALIGN ? probeDirect(options.outPath, arena) : undefined;
    const base = direct?.offset ?? 0;
    const writeBuf = arena.subarray(base, base + chunk);
    const readBuf = arena.subarray(base + chunk, base + 2 * chunk);
    for (const p of options.inputs) handles.push(await open(p, "r"));
    const sizes = await Promise.all(handles.map(async (h) => (await h.stat()).size));
    const totalRead = sizes.reduce((s, x) => s + x, 0);

    const reader = async () => {
      for (let pos = 0; ; pos += chunk) {
        let any = false;
        for (let i = 0; i < handles.length; i++) {
          if (pos >= sizes[i]!) continue;
          any = true;
          if (stop()) return;
          const { bytesRead: n } = await handles[i]!.read(readBuf, 0, Math.min(chunk, sizes[i]! - pos), pos);
          if (n === 0) break;
          bytesRead += n;
        }
        if (!any) break;
      }
      readDoneAt = elapsed();
    };
    const writer = async () => {
      let pos = 0;
      while (pos < options.outBytes) {
        if (stop()) return;
        const n = Math.min(chunk, options.outBytes - pos);
        const aligned = n - (n % ALIGN);
        if (direct && aligned > 0) {
          await writeAsync(direct.fd, writeBuf, 0, aligned, pos);
          pos += aligned;
          bytesWritten += aligned;
        } else {
          await out.write(writeBuf, 0, n, pos);
          pos += n;
          bytesWritten += n;
        }
      }
      await out.sync();
      writeDoneAt = elapsed();
    };
    await Promise.all([reader(), writer()]);
    const measured = elapsed();
    const complete = bytesRead >= totalRead && bytesWritten >= options.outBytes;
    const readRate = bytesRead / (readDoneAt || measured);
    const writeRate = bytesWritten / (writeDoneAt || measured);
    const seconds = complete ? measured : Math.max(totalRead / readRate, options.outBytes / writeRate);
    return { seconds, measuredSeconds: measured, complete, bytesRead, bytesWritten, readBytesPerSecond: readRate, writeBytesPerSecond: writeRate, directIo: direct !== undefined };
  } finally {
    if (direct) closeSync(direct.fd);
    await out.close();
    for (const h of handles) await h.close();
    await unlink(options.outPath).catch(() => undefined);
  }
}

/** Reads files through the page cache (so a following run finds them warm); returns seconds. */
export async function warmFiles(paths: string[], chunkBytes = 8 << 20): Promise<number> {
  const t0 = process.hrtime.bigint();
  const buf = Buffer.allocUnsafeSlow(chunkBytes);
  for (const p of paths) {
    const h = await open(p, "r");
    try {
      for (let pos = 0; ; ) {
        const { bytesRead } = await h.read(buf, 0, chunkBytes, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
      }
    } finally {
      await h.close();
    }
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}
