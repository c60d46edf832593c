/** Progress display: a redrawn bar with throughput and ETA on a TTY, plain lines otherwise. */
import { formatBytes } from "../outputs";
import type { MergeProgress } from "../merge";

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function createProgressPrinter(stream: NodeJS.WritableStream, isTTY: boolean, label: string): { update(p: MergeProgress): void; done(): void } {
  let lastPlain = -1;
  let drawn = false;
  return {
    update(p) {
      const rate = p.elapsedSeconds > 0 ? p.bytesDone / p.elapsedSeconds : 0;
      const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / rate : Infinity;
      const percent = Math.floor(p.fraction * 100);
      if (isTTY) {
        const width = 30;
        const filled = Math.round(p.fraction * width);
        stream.write(`\r${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(percent).padStart(3)}%  ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}  ${formatBytes(rate)}/s  ETA ${formatDuration(eta)} `);
        drawn = true;
      } else if (percent >= lastPlain + 10 || (percent === 100 && lastPlain !== 100)) {
        lastPlain = percent - (percent % 10);
        stream.write(`${label}: ${percent}% (${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}, ${formatBytes(rate)}/s)\n`);
      }
    },
    done() {
      if (drawn) stream.write("\n");
    },
  };
}
