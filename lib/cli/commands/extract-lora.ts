/** `tensormerge extract-lora`: a kohya-format LoRA from a fine-tune and its base (lib/lora/extract.ts). */
import { MergeError } from "../../errors";
import { extractLora, type ExtractOptions } from "../../lora/extract";
import { formatBytes } from "../../outputs";
import { defineCommand, flagArg, requiredArg, stringArg } from "../command";

function intArg(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new MergeError("INVALID_ARGUMENT", `--${flag} ${JSON.stringify(text)}: expected a whole number`);
  return Number(text);
}

export const extractLoraCommand = defineCommand({
  name: "extract-lora",
  summary: "extract a kohya-format LoRA from a fine-tune and its base (truncated SVD of each module's difference)",
  usage: "extract-lora --tuned TUNED --base BASE --rank R [--conv-rank R] --out OUT [options]",
  options: {
    tuned: { type: "string", value: "FILE", description: "the fine-tuned model" },
    base: { type: "string", value: "FILE", description: "the model it was tuned from" },
    rank: { type: "string", value: "R", description: "rank of linear and 1×1 modules (kohya's --dim; alpha = rank)" },
    "conv-rank": { type: "string", value: "R", description: "rank of 3×3 convs (without it, they are not extracted)" },
    out: { type: "string", short: "o", value: "FILE", description: "output LoRA (.safetensors)" },
    dtype: { type: "string", value: "TYPE", description: "fp32 (default), fp16 or bf16" },
    "te-threshold": { type: "string", value: "D", description: "keep the text encoder only if a weight differs by more than D (default 0.01, kohya's min_diff)" },
    threads: { type: "string", value: "N", description: "worker threads for the SVDs (default: all cores; the output is the same for any count)" },
    overwrite: { type: "boolean", description: "replace an existing output file" },
    "no-metadata": { type: "boolean", description: "leave out the ss_* metadata and the base model's hash" },
    json: { type: "boolean", description: "print the report (per module: rank, kept energy) as JSON" },
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    const options: ExtractOptions = {
      tuned: requiredArg(args, "tuned", "extract-lora"), base: requiredArg(args, "base", "extract-lora"), out: requiredArg(args, "out", "extract-lora"),
      rank: intArg("rank", requiredArg(args, "rank", "extract-lora"))!, overwrite: flagArg(args, "overwrite"), signal,
    };
    const conv = intArg("conv-rank", stringArg(args, "conv-rank"));
    if (conv !== undefined) options.convRank = conv;
    const threads = intArg("threads", stringArg(args, "threads"));
    if (threads !== undefined) options.threads = threads;
    const dtype = stringArg(args, "dtype");
    if (dtype !== undefined) options.dtype = dtype as ExtractOptions["dtype"] & string;
    const te = stringArg(args, "te-threshold");
    if (te !== undefined) {
      if (!Number.isFinite(Number(te))) throw new MergeError("INVALID_ARGUMENT", `--te-threshold ${JSON.stringify(te)}: expected a number`);
      options.teThreshold = Number(te);
    }
    if (flagArg(args, "no-metadata")) options.recipeMetadata = false;
    const quiet = flagArg(args, "quiet") || flagArg(args, "json");
    if (!quiet) options.onProgress = (p) => { if (io.isTTY) io.err.write(`\rextracting ${p.done + 1}/${p.total} ${p.module.slice(0, 60).padEnd(60)}`); };
    const report = await extractLora(options);
    if (!quiet && io.isTTY) io.err.write("\n");
    for (const w of report.warnings) io.err.write(`warning: ${w}\n`);
    if (flagArg(args, "json")) io.out.write(JSON.stringify(report, null, 2) + "\n");
    else if (!flagArg(args, "quiet")) {
      const energies = report.modules.map((m) => m.keptEnergy).sort((a, b) => a - b);
      const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
      io.out.write(`wrote ${report.out} (${formatBytes(report.bytes)}): ${report.modules.length} modules; kept energy ΣS_r²/ΣS²: min ${pct(energies[0] ?? 1)}, median ${pct(energies[Math.floor(energies.length / 2)] ?? 1)}; ${report.seconds.toFixed(1)} s\n`);
    }
    return 0;
  },
});
