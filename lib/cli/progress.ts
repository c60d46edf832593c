/**
 * Progress display. On a terminal: one line per bar, redrawn in place (`\r`, then the line,
 * then clear to the end of line), fitted to the terminal's width, so a bar never wraps into a
 * second line and a shorter redraw leaves nothing behind. Otherwise: a plain line every 10%.
 * Throughput and ETA come from the printer's own clock over the last few seconds, so any
 * source of byte counts (hashing, merging) gets a real rate.
 */
import { basename } from "node:path";
import type { MergeProgress } from "../merge";
import { formatBytes } from "../outputs";

export interface BarFields {
  label: string;
  fraction: number;
  bytesDone: number;
  bytesTotal: number;
  /** Bytes per second; null while unknown. */
  rate: number | null;
  /** Seconds left; null while unknown. */
  etaSeconds: number | null;
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "--:--";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** Columns a code point takes on a terminal: 2 for East Asian wide and emoji, 0 for combining marks. */
function charWidth(cp: number): number {
  if ((cp >= 0x300 && cp <= 0x36f) || (cp >= 0x200b && cp <= 0x200f) || cp === 0xfe0f) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1faff) || (cp >= 0x20000 && cp <= 0x3fffd)
  ) return 2;
  return 1;
}

export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += charWidth(ch.codePointAt(0)!);
  return w;
}

/** The longest prefix of `s` that fits in `columns`. */
function fitPrefix(s: string, columns: number): string {
  let w = 0, out = "";
  for (const ch of s) {
    const c = charWidth(ch.codePointAt(0)!);
    if (w + c > columns) break;
    w += c;
    out += ch;
  }
  return out;
}

/** `s` in at most `columns`, shortened in the middle (a file name keeps its end). */
function fitMiddle(s: string, columns: number): string {
  if (displayWidth(s) <= columns) return s;
  if (columns <= 1) return fitPrefix(s, columns);
  const chars = [...s];
  const head = fitPrefix(s, Math.ceil((columns - 1) / 2));
  let tail = "";
  for (let i = chars.length - 1; i >= 0 && displayWidth(chars[i]! + tail) <= columns - 1 - displayWidth(head); i--) tail = chars[i]! + tail;
  return `${head}…${tail}`;
}

/** File names can hold control characters (an escape sequence would drive the terminal). */
function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

const BAR_MAX = 30;
const BAR_MIN = 10;

/**
 * One progress line in at most `columns - 1` columns (the last column is left free: writing
 * into it makes some terminals wrap). Fields go in order of importance as the width shrinks:
 * the bar shrinks to 10 cells, then the byte counts go, then the rate, then the bar, then the
 * ETA; the label is shortened (in the middle) to at most 40% of the line, and then to what is
 * left beside the percentage.
 */
export function formatProgressLine(f: BarFields, columns: number): string {
  const budget = Math.max(1, Math.floor(columns) - 1);
  const fraction = Math.min(1, Math.max(0, Number.isFinite(f.fraction) ? f.fraction : 0));
  const percent = `${String(Math.floor(fraction * 100)).padStart(3)}%`;
  const bytes = `${formatBytes(f.bytesDone)}/${formatBytes(f.bytesTotal)}`;
  const rate = `${f.rate === null ? "--" : formatBytes(f.rate)}/s`;
  const eta = `ETA ${formatDuration(f.etaSeconds)}`;
  const label = fitMiddle(printable(f.label), Math.max(12, Math.floor(budget * 0.4)));
  const layouts: { bar: boolean; fields: string[] }[] = [
    { bar: true, fields: [bytes, rate, eta] },
    { bar: true, fields: [rate, eta] },
    { bar: true, fields: [eta] },
    { bar: false, fields: [eta] },
    { bar: false, fields: [] },
  ];
  for (const { bar, fields } of layouts) {
    const tail = [percent, ...fields].join("  ");
    const fixed = displayWidth(label) + 1 + displayWidth(tail) + (bar ? 3 : 0); // "label [bar] tail"
    const cells = bar ? Math.min(BAR_MAX, budget - fixed) : 0;
    if (bar && cells < BAR_MIN) continue;
    if (!bar && fixed > budget) continue;
    const filled = Math.round(fraction * cells);
    return bar ? `${label} [${"#".repeat(filled)}${"-".repeat(cells - filled)}] ${tail}` : `${label} ${tail}`;
  }
  // Narrower than label and percentage: keep the percentage, then what fits of the label.
  return budget <= percent.length ? fitPrefix(percent.trimStart(), budget) : `${fitMiddle(label, budget - percent.length - 1)} ${percent}`;
}

export interface ProgressPrinter {
  /** `elapsedSeconds` is not used: the printer times the bytes itself. */
  update(p: { bytesDone: number; bytesTotal: number; fraction?: number; elapsedSeconds?: number }): void;
  done(): void;
}

/** Rate over a sliding window of samples: recent enough to follow changes, long enough to be steady. */
const RATE_WINDOW_SECONDS = 3;
const RATE_MIN_SPAN_SECONDS = 0.25;
const REDRAW_SECONDS = 0.1;

export interface PrinterOptions {
  /** Seconds, monotonic (tests pass their own). */
  now?: () => number;
  /** Terminal width when the stream does not say (default 80). */
  columns?: number;
}

export function createProgressPrinter(stream: NodeJS.WritableStream, isTTY: boolean, label: string, options: PrinterOptions = {}): ProgressPrinter {
  const now = options.now ?? (() => performance.now() / 1000);
  const columns = () => (stream as NodeJS.WriteStream).columns || options.columns || 80;
  const samples: [number, number][] = [];
  let lastPlain = -1;
  let drawn = false;
  let lastDraw = -Infinity;
  let pending: BarFields | undefined;
  const draw = (fields: BarFields, t: number) => {
    stream.write(`\r${formatProgressLine(fields, columns())}\x1b[K`);
    drawn = true;
    lastDraw = t;
    pending = undefined;
  };
  return {
    update(p) {
      const t = now();
      const fraction = p.fraction ?? (p.bytesTotal ? p.bytesDone / p.bytesTotal : 1);
      samples.push([t, p.bytesDone]);
      while (samples.length > 2 && t - samples[1]![0] >= RATE_WINDOW_SECONDS) samples.shift();
      const [t0, b0] = samples[0]!;
      // Early on, a rate over a few milliseconds would be noise; at the end any span will do.
      const span = t - t0;
      const rate = span >= RATE_MIN_SPAN_SECONDS || (fraction >= 1 && span > 0) ? Math.max(0, p.bytesDone - b0) / span : null;
      const etaSeconds = fraction >= 1 ? 0 : rate ? (p.bytesTotal - p.bytesDone) / rate : null;
      const fields: BarFields = { label, fraction, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, rate, etaSeconds };
      const percent = Math.floor(fraction * 100);
      if (isTTY) {
        // Hashing reports every MiB: redraw at most ten times a second, and always the end.
        if (t - lastDraw >= REDRAW_SECONDS || fraction >= 1) draw(fields, t);
        else pending = fields;
      } else if (percent >= lastPlain + 10 || (percent === 100 && lastPlain !== 100)) {
        lastPlain = percent - (percent % 10);
        stream.write(`${printable(label)}: ${percent}% (${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}${rate === null ? "" : `, ${formatBytes(rate)}/s`})\n`);
      }
    },
    done() {
      if (pending) draw(pending, now());
      if (drawn) stream.write("\n");
      drawn = false;
    },
  };
}

/**
 * The bars of `merge`: one per input hashed for the recipe metadata, then one for the merge
 * (one per pass when a job needs several).
 */
export function createMergeProgressPrinter(stream: NodeJS.WritableStream, isTTY: boolean, options: PrinterOptions = {}): { update(p: MergeProgress): void; done(): void } {
  let bar: ProgressPrinter | undefined;
  let current = "";
  return {
    update(p) {
      const label = p.label ?? (p.phase === "hashing" ? `hashing ${basename(p.path ?? "")}` : (p.passes ?? 1) > 1 ? `merging, pass ${p.pass}/${p.passes}` : "merging");
      if (label !== current || !bar) {
        bar?.done();
        current = label;
        bar = createProgressPrinter(stream, isTTY, label, options);
      }
      bar.update(p);
    },
    done() {
      bar?.done();
      bar = undefined;
    },
  };
}
