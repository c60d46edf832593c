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

export type ReadTechnique = "mmap" | "read";
export type WriteTechnique = "direct" | "buffered";

export interface FloorTechnique {
  read: ReadTechnique;
  write: WriteTechnique;
  readers: number;
  /** Chunks requested ahead with POSIX_FADV_WILLNEED (0: the kernel's own readahead only). */
  ahead: number;
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

/** Every combination the floor tries on its first run of a scenario. */
export function floorTechniques(cores: number): FloorTechnique[] {
  const out: FloorTechnique[] = [];
  for (const read of ["mmap", "read"] as const) {
    for (const write of ["direct", "buffered"] as const) {
      for (const ahead of [0, 32]) out.push({ read, write, readers: Math.max(1, cores), ahead });
    }
  }
  return out;
}
