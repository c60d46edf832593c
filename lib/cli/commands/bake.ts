/** `tensormerge bake`: LoRAs baked into a checkpoint (lib/lora). */
import { MergeError } from "../../errors";
import { bake, type BakeLoraSpec, type BakeOptions, type BakeReport } from "../../lora/bake";
import { formatBytes } from "../../outputs";
import { defineCommand, ENGINE_OPTIONS, flagArg, listArg, requiredArg, stringArg, type CliIo } from "../command";
import { createMergeProgressPrinter } from "../progress";

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** `FILE[:RATIO[:TE]]`: numbers are taken from the end, so a path may contain ":". */
export function loraArg(text: string): BakeLoraSpec {
  const parts = text.split(":");
  const numbers: number[] = [];
  while (parts.length > 1 && numbers.length < 2 && NUMBER.test(parts[parts.length - 1]!)) numbers.unshift(Number(parts.pop()));
  const path = parts.join(":");
  if (path === "") throw new MergeError("INVALID_ARGUMENT", `--lora ${JSON.stringify(text)}: expected FILE[:RATIO[:TE]]`);
  return { path, ...(numbers[0] !== undefined ? { ratio: numbers[0] } : {}), ...(numbers[1] !== undefined ? { te: numbers[1] } : {}) };
}

function printBakeReport(r: BakeReport, io: CliIo): void {
  for (const l of r.loras) io.out.write(`${l.path}: ${l.matched} of ${l.modules} modules (${l.architecture}), ratio ${l.ratio}, text encoder ${l.te}\n`);
  io.out.write(`wrote ${r.output.path} (${formatBytes(r.output.bytes)}): ${r.tensorsBaked} tensors changed\n`);
  io.out.write(`${r.engine} engine (${r.isa}, ${r.threads} thread${r.threads > 1 ? "s" : ""}): read ${formatBytes(r.bytesRead)}, wrote ${formatBytes(r.bytesWritten)} in ${r.seconds.toFixed(2)} s\n`);
}

export const bakeCommand = defineCommand({
  name: "bake",
  summary: "bake LoRAs (kohya, LyCORIS LoHa, diffusers/PEFT) into a checkpoint",
  usage: "bake --model BASE --lora FILE[:RATIO[:TE]] [--lora …] [--te R] [--lora-blocks VALUES] --out OUT [options]",
  options: {
    model: { type: "string", value: "FILE", description: "the checkpoint to bake into" },
    lora: { type: "string", multiple: true, value: "FILE[:RATIO[:TE]]", description: "a LoRA and its ratio (default 1) and text-encoder ratio (default RATIO × --te); repeatable, added in order" },
    te: { type: "string", value: "R", description: "multiplies every LoRA's ratio for text-encoder modules (default 1)" },
    "lora-blocks": { type: "string", value: "VALUES", description: "LoRA block weights: 17 or 26 values (SD 1.x/2.x), 12 or 20 (SDXL), first BASE (text encoder); 61 for FLUX (CLIP, T5, IN, D00…D18, S00…S37, OUT)" },
    dtype: { type: "string", value: "TYPE", description: "float output type: same (as the model, default), fp16, bf16, fp32, fp8-e4m3, fp8-e5m2" },
    out: { type: "string", short: "o", value: "FILE", description: "output file (.safetensors or .ckpt)" },
    overwrite: { type: "boolean", description: "replace an existing output file" },
    models: { type: "string", multiple: true, value: "DIR", description: "folder to find a model given by name or hash (repeatable)" },
    ...ENGINE_OPTIONS,
    "no-metadata": { type: "boolean", description: "leave the bake record (model and LoRAs by sha256) out of the output's metadata" },
    json: { type: "boolean", description: "print the report as JSON" },
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    const loras = listArg(args, "lora").map(loraArg);
    if (loras.length === 0) throw new MergeError("INVALID_ARGUMENT", "--lora is required (see: tensormerge bake --help)");
    const options: BakeOptions = { model: requiredArg(args, "model", "bake"), loras, out: requiredArg(args, "out", "bake"), overwrite: flagArg(args, "overwrite"), signal };
    const te = stringArg(args, "te");
    if (te !== undefined) {
      if (!NUMBER.test(te)) throw new MergeError("INVALID_ARGUMENT", `--te ${JSON.stringify(te)}: expected a number`);
      options.te = Number(te);
    }
    const blocks = stringArg(args, "lora-blocks");
    if (blocks !== undefined) options.loraBlocks = blocks;
    for (const key of ["dtype", "engine", "isa"] as const) {
      const v = stringArg(args, key);
      if (v !== undefined) (options as unknown as Record<string, unknown>)[key] = v;
    }
    const threads = stringArg(args, "threads");
    if (threads !== undefined) options.threads = Number(threads);
    if (listArg(args, "models").length) options.models = listArg(args, "models");
    if (flagArg(args, "no-metadata")) options.recipeMetadata = false;
    const quiet = flagArg(args, "quiet") || flagArg(args, "json");
    const printer = quiet ? undefined : createMergeProgressPrinter(io.err, io.isTTY);
    if (printer) options.onProgress = (p) => printer.update(p);
    const report = await bake(options).finally(() => printer?.done());
    if (flagArg(args, "json")) io.out.write(JSON.stringify(report, null, 2) + "\n");
    else if (!flagArg(args, "quiet")) printBakeReport(report, io);
    for (const w of report.warnings) io.err.write(`warning: ${w}\n`);
    return 0;
  },
});
