/** `tensormerge list`: every model in the model folders, identified and hashed (hashes cached). */
import { basename } from "node:path";
import { HashCache } from "../../library/hash-cache";
import { formatBytes } from "../../library/inspect";
import { defaultModelDirs, listModels, type ModelEntry } from "../../library/scan";
import { MergeError, isMergeError } from "../../errors";
import { OLD_MODELS_OPTION, defineCommand, flagArg, listArg, refuseOldModelsOption, type CliIo } from "../command";
import { createProgressPrinter, type ProgressPrinter } from "../progress";

const COMPONENT_SHORT: Record<string, string> = {
  unet: "unet", text_encoder: "te", text_encoder_2: "te2", text_encoder_3: "te3", vae: "vae", ema: "ema",
};

function componentsShort(e: ModelEntry): string {
  return e.components.map((c) => COMPONENT_SHORT[c.id]).filter((c) => c !== undefined).join("+");
}

/** A plain table: columns padded to their widest cell, the last column not padded. */
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

export function formatModelTable(entries: ModelEntry[]): string {
  const rows = entries.map((e) => {
    if (e.error && e.architecture === null) {
      return [e.title, e.format, "-", "-", e.size ? formatBytes(e.size) : "-", e.autov2 ?? "-", e.legacyHash ?? "-", `error [${e.error.code}]: ${e.error.message}`];
    }
    const arch = e.lora ? `${e.architecture} (lora r${e.lora.ranks.join("/")})` : e.architecture === "unknown" && e.kind && e.kind !== "checkpoint" ? `unknown (${e.kind})` : e.architecture ?? "-";
    return [e.title, e.format, arch, e.dtypes.length ? e.dtypes.join("+") : "-", formatBytes(e.size), e.autov2 ?? "-", e.legacyHash ?? "-", componentsShort(e) + (e.error ? `  error [${e.error.code}]: ${e.error.message}` : "")];
  });
  return renderTable(["NAME", "FORMAT", "ARCH", "DTYPES", "SIZE", "SHA256", "HASH", "COMPONENTS"], rows);
}

/** One transient line, redrawn per file (fitted to the terminal, with rate and ETA), cleared at the end. */
function progressPrinter(io: CliIo): ((p: { phase: string; index: number; count: number; path: string; bytesDone?: number; bytesTotal?: number }) => void) | undefined {
  if (!io.isTTY) return undefined;
  let bar: ProgressPrinter | undefined;
  let current = -1;
  return (p) => {
    if (p.phase !== "hash" || p.bytesTotal === undefined) return;
    if (p.index !== current || !bar) {
      current = p.index;
      bar = createProgressPrinter(io.err, true, `hashing ${p.index + 1}/${p.count} ${basename(p.path)}`);
    }
    bar.update({ bytesDone: p.bytesDone ?? 0, bytesTotal: p.bytesTotal });
  };
}

export const listCommand = defineCommand({
  name: "list",
  summary: "list the models in the model folders: architecture, components, hashes",
  usage: "list [DIR|FILE…] [--model-dir DIR…] [--json] [--no-hash]",
  positionals: true,
  options: {
    "model-dir": { type: "string", multiple: true, value: "DIR", description: "a model folder to list, as a DIR argument (repeatable; default $TENSORMERGE_MODELS or ./models)" },
    ...OLD_MODELS_OPTION,
    json: { type: "boolean", description: "print a JSON array (path, name, format, architecture, sha256, …) instead of a table" },
    "no-hash": { type: "boolean", description: "do not hash files missing from the hash cache (cached hashes are still shown)" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    refuseOldModelsOption(args);
    const given = [...args.positionals, ...listArg(args, "model-dir")];
    const dirs = given.length > 0 ? given : defaultModelDirs();
    const cache = await HashCache.open();
    const onProgress = progressPrinter(io);
    const entries = await listModels(dirs, { hash: !flagArg(args, "no-hash"), cache, signal, ...(onProgress ? { onProgress } : {}) })
      .catch((e: unknown) => {
        if (given.length === 0 && isMergeError(e, "FILE_NOT_FOUND")) {
          throw new MergeError("FILE_NOT_FOUND", `${e.message}; give a folder (tensormerge list DIR) or set TENSORMERGE_MODELS`, e.path !== undefined ? { path: e.path } : {});
        }
        throw e;
      })
      .finally(() => {
        if (onProgress) io.err.write("\r\x1b[K");
      });
    if (cache.saveError) io.err.write(`tensormerge: warning: could not save the hash cache: ${cache.saveError.message}\n`);
    if (flagArg(args, "json")) {
      io.out.write(JSON.stringify(entries, null, 2) + "\n");
      return 0;
    }
    if (entries.length === 0) {
      io.err.write(`no models (${[".safetensors", ".ckpt", ".pt", ".pth", ".sft"].join(", ")}) in ${dirs.join(", ")}\n`);
      return 0;
    }
    io.out.write(formatModelTable(entries));
    return 0;
  },
});
