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
  /** A new file (created exclusively), removed afterwards. */
  outPath: string;
  /**
   * Write over `outPath`, an existing file at least `outBytes` long (for example the output
   * of the merge just measured), instead of creating it. Node cannot preallocate (the engine
   * fallocates its outputs), and allocating blocks during the writes costs a third of the
   * write speed here; an existing file gives the floor the same already-reserved space.
   */
  overwrite?: boolean;
  outBytes: number;
  /** Bytes per write (default 8 MiB; a multiple of 4096). */
  chunkBytes?: number;
  /**
   * Bytes per read (default 4 MiB). The inputs are read side by side, one read in flight per
   * input; smaller reads than writes leave the concurrent O_DIRECT writes more memory
   * bandwidth (2 x SD 1.5 here: 1.6 s with 8 MiB reads one at a time, 1.3 s this way).
   */
  readChunkBytes?: number;
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
  const readChunk = options.readChunkBytes ?? 4 << 20;
  if (chunk % ALIGN !== 0 || readChunk % ALIGN !== 0) throw new RangeError("chunkBytes and readChunkBytes must be multiples of 4096");
  // One allocation for the write and the read buffers, so one probe aligns both.
  const nReads = Math.max(1, options.inputs.length);
  const arena = Buffer.allocUnsafeSlow(chunk + nReads * readChunk + ALIGN);
  arena.fill(0x3c);
  const out = await open(options.outPath, options.overwrite ? "r+" : "wx");
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
    // One read buffer per input: the inputs' reads at a position run concurrently.
    const readBufs = Array.from({ length: nReads }, (_, i) => arena.subarray(base + chunk + i * readChunk, base + chunk + (i + 1) * readChunk));
    for (const p of options.inputs) handles.push(await open(p, "r"));
    const sizes = await Promise.all(handles.map(async (h) => (await h.stat()).size));
    const totalRead = sizes.reduce((s, x) => s + x, 0);

    const reader = async () => {
      for (let pos = 0; ; pos += readChunk) {
        if (stop()) return;
        const reads = handles.map((h, i) => (pos < sizes[i]! ? h.read(readBufs[i]!, 0, Math.min(readChunk, sizes[i]! - pos), pos) : undefined));
        if (reads.every((r) => r === undefined)) break;
        for (const r of await Promise.all(reads)) bytesRead += r?.bytesRead ?? 0;
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
