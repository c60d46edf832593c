/**
 * Process memory from /proc/<pid>/status (Linux): resident set (VmRSS), its peak (VmHWM), and
 * the private anonymous part (RssAnon: heap, scratch and window buffers; not the mapped input
 * files, which are page cache the kernel can reclaim). Elsewhere every field is undefined.
 */
import { readFileSync } from "node:fs";

export interface MemorySample {
  /** Resident set, bytes. */
  rss?: number;
  /** Peak resident set since the process started, bytes (exact, kept by the kernel). */
  hwm?: number;
  /** Private anonymous resident memory, bytes. */
  anon?: number;
  /** Resident file-backed pages (mapped inputs), bytes. */
  file?: number;
}

const FIELDS: Record<string, keyof MemorySample> = { VmRSS: "rss", VmHWM: "hwm", RssAnon: "anon", RssFile: "file" };

/** Parses the text of /proc/<pid>/status. */
export function parseProcStatus(text: string): MemorySample {
  const out: MemorySample = {};
  for (const line of text.split("\n")) {
    const m = /^(\w+):\s+(\d+)\s+kB/.exec(line);
    const key = m ? FIELDS[m[1]!] : undefined;
    if (key) out[key] = Number(m![2]) * 1024;
  }
  return out;
}

/** One sample of a process (default: this one); empty where /proc is unavailable or the process is gone. */
export function sampleMemory(pid: number | "self" = "self"): MemorySample {
  try {
    return parseProcStatus(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return {};
  }
}

/**
 * Samples a process every `intervalMs` and keeps the peaks. RssAnon has no kernel-kept peak,
 * so a short spike between samples can be missed; VmHWM is exact.
 *
 * @example
 * const sampler = new MemorySampler(); sampler.start(); await work(); const peak = sampler.stop();
 */
export class MemorySampler {
  private timer: NodeJS.Timeout | undefined;
  private peak: MemorySample = {};

  constructor(private readonly pid: number | "self" = "self", private readonly intervalMs = 20) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops sampling; returns the peaks (hwm is the process's own peak). */
  stop(): MemorySample {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    return { ...this.peak };
  }

  private sample(): void {
    const s = sampleMemory(this.pid);
    for (const k of Object.keys(s) as (keyof MemorySample)[]) {
      const v = s[k]!;
      if (this.peak[k] === undefined || v > this.peak[k]!) this.peak[k] = v;
    }
  }
}
