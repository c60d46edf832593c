/**
 * Child process of input-change.test.ts: runs merges whose input is changed mid-merge, in its
 * own process, so an engine that dies of SIGBUS shows as a failed test, not a dead mocha.
 *
 * argv[2]: JSON { dir, engine: "native" | "js", change: "truncate" | "rewrite" | "replace", trigger, method? }
 * (method: "weighted-sum", the default, or "slerp": a method with statistics, whose inputs a
 * helper thread populates and touches ahead, engine_statistics_reads.cc queue_statistics_reads).
 * The parent sets TENSORMERGE_WINDOW_MIB=1 and TENSORMERGE_WINDOW_PAUSE_MS so the job runs
 * long enough for the first progress report to arrive mid-merge; the input is changed from
 * that report (trigger "progress"), or as soon as the engine has created its temporary output
 * (trigger "start": does not need the pause, so it also lands mid-merge on an engine without it). Prints one JSON line: the first merge's failure (or success), what the change
 * saw, the folder's files after it, and whether a second merge in the same process worked.
 */
import { closeSync, copyFileSync, openSync, readdirSync, renameSync, truncateSync, utimesSync, watch, writeSync } from "node:fs";
import { join } from "node:path";
import { merge, type MergeProgress } from "../../lib";
import { MergeError } from "../../lib/errors";
import { captureEngineStats } from "../helpers/engines";
import { writeModel, type TestTensor } from "../helpers/models";

/** 16 F32 tensors of 1 MiB each: 16 windows of 1 MiB in the native engine, 16 chunks in the TS one. */
export function model(path: string, seed: number): void {
  const tensors: Record<string, TestTensor> = {};
  for (let t = 0; t < 16; t++) {
    const values = new Float32Array(1 << 18);
    for (let i = 0; i < values.length; i++) values[i] = ((i * 7 + t * 13 + seed) % 101) / 100 - 0.5;
    tensors[`model.layer${String(t).padStart(2, "0")}.weight`] = { dtype: "F32", shape: [512, 512], values };
  }
  writeModel(path, tensors);
}

export type Change = "truncate" | "rewrite" | "replace";

/**
 * Changes `path` as another process would: shrinks it, rewrites bytes in place (same size), or
 * renames an identical copy over it (the engines keep reading the old file: only its name changed).
 */
export function change(path: string, how: Change): void {
  if (how === "truncate") {
    truncateSync(path, 1_000_000);
    return;
  }
  if (how === "replace") {
    copyFileSync(path, `${path}.new`);
    renameSync(`${path}.new`, path);
    return;
  }
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, Buffer.alloc(4096, 0x7f), 0, 4096, 8 << 20);
  } finally {
    closeSync(fd);
  }
  const later = new Date(Date.now() + 60_000); // a new mtime whatever the clock's granularity
  utimesSync(path, later, later);
}

async function main(): Promise<void> {
  const { dir, engine, change: how, trigger, method = "weighted-sum" } = JSON.parse(process.argv[2]!) as { dir: string; engine: "native" | "js"; change: Change; trigger: "progress" | "start"; method?: "weighted-sum" | "slerp" };
  const a = join(dir, "a.safetensors"), b = join(dir, "b.safetensors");
  model(a, 1);
  model(b, 2);
  let changedAt: MergeProgress | undefined;
  const onProgress = (p: MergeProgress) => {
    if (trigger !== "progress" || p.phase === "hashing" || changedAt || p.bytesDone <= 0 || p.bytesDone >= p.bytesTotal) return;
    changedAt = p;
    change(a, how);
  };
  // Trigger "start": the temporary output exists once the engine has opened everything.
  const onStart = () => {
    if (trigger !== "start" || changedAt || !readdirSync(dir).some((n) => n.includes(".tensormerge-"))) return;
    changedAt = { bytesDone: 0, bytesTotal: 1, fraction: 0, elapsedSeconds: 0 };
    change(a, how);
  };
  const watcher = watch(dir, onStart);
  const poll = setInterval(onStart, 2);
  const first: Record<string, unknown> = {};
  try {
    await merge({ a, b, method, multiplier: 0.25, out: join(dir, "out.safetensors"), engine, threads: 2, onProgress });
    first.ok = true;
  } catch (e) {
    first.ok = false;
    first.isMergeError = e instanceof MergeError;
    first.code = (e as MergeError).code;
    first.path = (e as MergeError).path;
    first.message = (e as Error).message;
  }
  watcher.close();
  clearInterval(poll);
  const filesAfter = readdirSync(dir).sort();
  // The same process merges again, from intact inputs.
  const c = join(dir, "c.safetensors");
  model(c, 3);
  let second: string;
  // Which way the second merge read its inputs (the knobs are the same for both merges).
  const stats = captureEngineStats();
  stats.install();
  try {
    await merge({ a: c, b, method: "weighted-sum", multiplier: 0.25, out: join(dir, "again.safetensors"), engine, threads: 2 });
    second = "ok";
  } catch (e) {
    second = `${(e as MergeError).code}: ${(e as Error).message}`;
  }
  stats.restore();
  const s = stats.last();
  const secondReads = s ? { bytesBufferedRead: s.bytesBufferedRead ?? 0, bytesDirectRead: s.bytesDirectRead ?? 0 } : null;
  process.stdout.write(`${JSON.stringify({ first, changedAt: changedAt ?? null, filesAfter, second, secondReads })}\n`);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`child failed: ${(e as Error).stack}\n`);
    process.exitCode = 3;
  });
}
