/** Small statistics for repeated timings: median and spread, and human formatting. */

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  /** (max − min) / median; 0 for a single run. */
  spread: number;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function summarize(values: number[]): Summary {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN, spread: NaN };
  const m = median(finite);
  const min = Math.min(...finite), max = Math.max(...finite);
  return { n: finite.length, median: m, min, max, spread: m > 0 ? (max - min) / m : 0 };
}

/** "1.23 s ±4%" */
export function formatSummary(s: Summary, unit = "s", digits = 2): string {
  if (s.n === 0) return "–";
  const spread = s.n > 1 ? ` ±${(s.spread * 50).toFixed(0)}%` : "";
  return `${s.median.toFixed(digits)} ${unit}${spread}`;
}

/** Decimal gigabytes per second. */
export function gbPerSecond(bytes: number, seconds: number): number {
  return seconds > 0 ? bytes / seconds / 1e9 : NaN;
}

export function formatMiB(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? "–" : `${Math.round(bytes / 1048576)} MiB`;
}

/** Pads columns of a plain-text table (first row is the header). */
export function textTable(rows: string[][], rightAligned: boolean[] = []): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return rows
    .map((r) => r.map((cell, c) => (rightAligned[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join("  ").trimEnd())
    .join("\n");
}
