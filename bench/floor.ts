/**
 * The C floor tool (bench/floor.c): built on demand with the system compiler into dist/bench/,
 * then run as a child process. Besides the floor itself it controls the page cache of our own
 * files (warm, evict, residency), so cold runs need not drop the whole machine's cache.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";

const SOURCE = join(__dirname, "..", "..", "bench", "floor.c");
const BINARY = join(__dirname, "floor-bin");

export type ReadTechnique = "mmap" | "read" | "direct";
export type WriteTechnique = "direct" | "buffered";

export interface FloorTechnique {
  read: ReadTechnique;
  write: WriteTechnique;
  readers: number;
  /** Chunks requested ahead with POSIX_FADV_WILLNEED (0: the kernel's own readahead only). */
  ahead: number;
  /** Drop each chunk from the page cache once read (the cache does not grow). */
  dropBehind?: boolean;
}

export interface FloorResult extends FloorTechnique {
  seconds: number;
  /** CPU time of the floor process (user + system). */
  cpuSeconds: number;
  readSeconds: number;
  writeSeconds: number;
  fsyncSeconds: number;
  bytesRead: number;
  bytesWritten: number;
  chunkBytes: number;
  directFallback: boolean;
}

/** Compiles floor.c when the binary is missing or older than the source. Returns its path. */
export function buildFloorTool(): string {
  if (existsSync(BINARY) && statSync(BINARY).mtimeMs >= statSync(SOURCE).mtimeMs) return BINARY;
  const cc = process.env.CC ?? "cc";
  try {
    execFileSync(cc, ["-O3", "-march=native", "-pthread", "-Wall", "-o", BINARY, SOURCE], { stdio: ["ignore", "inherit", "inherit"] });
  } catch (e) {
    throw new Error(`could not build the floor tool with ${cc} (set CC to a C compiler): ${(e as Error).message}`);
  }
  return BINARY;
}

function runTool(args: string[]): string {
  const r = spawnSync(buildFloorTool(), args, { encoding: "utf8", maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`floor ${args[0]} failed: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
  return r.stdout;
}

export interface FloorJob {
  inputs: string[];
  outPath: string;
  outBytes: number;
  technique: FloorTechnique;
  chunkMiB?: number;
  fsync?: boolean;
}

export function runFloor(job: FloorJob): FloorResult {
  const t = job.technique;
  const args = ["run", "--out", job.outPath, "--out-bytes", String(job.outBytes), "--read", t.read, "--write", t.write, "--readers", String(t.readers), "--ahead", String(t.ahead)];
  if (t.dropBehind) args.push("--drop-behind");
  if (job.chunkMiB) args.push("--chunk-mib", String(job.chunkMiB));
  if (job.fsync === false) args.push("--no-fsync");
  args.push("--", ...job.inputs);
  return JSON.parse(runTool(args)) as FloorResult;
}

/** Reads the files through the page cache; returns seconds. */
export function warmFiles(paths: string[]): number {
  return (JSON.parse(runTool(["warm", ...paths])) as { seconds: number }).seconds;
}

/** Drops the files' pages from the page cache; returns the fraction still resident per file. */
export function evictFiles(paths: string[]): Record<string, number> {
  return JSON.parse(runTool(["evict", ...paths])) as Record<string, number>;
}

/** Fraction of each file in the page cache. */
export function residency(paths: string[]): Record<string, number> {
  return JSON.parse(runTool(["resident", ...paths])) as Record<string, number>;
}

/**
 * The read techniques the floor tries on its first run of a scenario, per cache state (the
 * write technique is probed once per run). Warm: mmap or read(), with or without explicit
 * readahead. Cold: also drop-behind and O_DIRECT, which keep the page cache from growing (on
 * this VM every fresh page-cache page costs a host fault: 10x the CPU of the read itself).
 */
export function floorTechniques(cores: number, cache: "warm" | "cold", write: WriteTechnique): FloorTechnique[] {
  const readers = Math.max(1, cores);
  if (cache === "warm") {
    return [
      { read: "mmap", write, readers, ahead: 0 },
      { read: "mmap", write, readers, ahead: 32 },
      { read: "read", write, readers, ahead: 0 },
      { read: "read", write, readers, ahead: 32 },
    ];
  }
  return [
    { read: "mmap", write, readers, ahead: 32 },
    { read: "read", write, readers, ahead: 32 },
    { read: "read", write, readers, ahead: 0, dropBehind: true },
    { read: "read", write, readers, ahead: 32, dropBehind: true },
    { read: "direct", write, readers: Math.max(4, readers), ahead: 0 },
  ];
}
