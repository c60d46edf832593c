/** `tensormerge merge`: one merge (or a multiplier sweep) from the command line. */
import { merge, type MergeOptions } from "../../merge";
import { METHODS } from "../../methods/registry";
import { formatBytes } from "../../outputs";
import { defineCommand, ENGINE_OPTIONS, flagArg, listArg, stringArg, type CliIo } from "../command";
import { createMergeProgressPrinter } from "../progress";
import type { MergeReport } from "../../merge";

const methodHelp = METHODS.map((m) => `${m.name} (${m.formula})`).join("; ");

export function printMergeReport(report: MergeReport, io: CliIo): void {
  const s = report.stats;
  for (const t of report.removedTemps ?? []) io.out.write(`removed ${t}, left by a merge that was killed\n`);
  for (const c of report.configs) io.out.write(`copied model config to ${c}\n`);
  for (const o of report.outputs) io.out.write(`wrote ${o.path} (${formatBytes(o.bytes)}${report.outputs.length > 1 ? `, M=${o.multiplier}` : ""})\n`);
  const missing = Object.entries(s.missing).map(([slot, n]) => `${n} missing in ${slot.toUpperCase()}`).join(", ");
  io.out.write(
    `${report.method}: ${s.merged} tensors merged, ${s.copiedAsIs} copied as is` +
      (missing ? `, ${missing} (kept from A)` : "") +
      (s.partial.length ? `, ${s.partial.length} merged on shared channels (${s.partial.join(", ")})` : "") +
      (s.discarded ? `, ${s.discarded} discarded` : "") +
      (s.replaced ? `, ${s.replaced} replaced` : "") +
      `\n${report.engine} engine (${report.isa}, ${report.threads} thread${report.threads > 1 ? "s" : ""}): ` +
      `read ${formatBytes(report.bytesRead)}, wrote ${formatBytes(report.bytesWritten)} in ${report.seconds.toFixed(2)} s\n`,
  );
}

export const mergeCommand = defineCommand({
  name: "merge",
  summary: "merge two or three models into a new one",
  usage: "merge --a A --b B [--c C] --method METHOD --multiplier M --out OUT [options]",
  options: {
    a: { type: "string", value: "FILE", description: "model A, the base" },
    b: { type: "string", value: "FILE", description: "model B" },
    c: { type: "string", value: "FILE", description: "model C (add-difference)" },
    method: { type: "string", short: "m", value: "METHOD", description: `merge method: ${methodHelp}` },
    multiplier: { type: "string", short: "M", value: "M", description: "multiplier; a list (0.1,0.2) or range (0.1:0.5:0.1) writes one file per value in one pass (default 0.5)" },
    dtype: { type: "string", value: "TYPE", description: "float output type: same (as A, default), fp16, bf16, fp32" },
    out: { type: "string", short: "o", value: "FILE", description: "output file (.safetensors or .ckpt); for sweeps <M> is replaced by each value" },
    overwrite: { type: "boolean", description: "replace an existing output file" },
    models: { type: "string", multiple: true, value: "DIR", description: "folder to find models given by name or hash (repeatable; default $TENSORMERGE_MODELS or ./models)" },
    vae: { type: "string", value: "FILE", description: "bake in this VAE (replaces first_stage_model.*)" },
    discard: { type: "string", multiple: true, value: "REGEX", description: "leave out keys matching this regular expression (repeatable)" },
    prune: { type: "boolean", description: "leave out EMA weights and training-only keys" },
    config: { type: "string", value: "FROM", description: "copy <model>.yaml beside the output from: abc (first found, default), a, b, c, none" },
    ...ENGINE_OPTIONS,
    "no-metadata": { type: "boolean", description: "leave the recipe out of the output's metadata" },
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    const threads = stringArg(args, "threads");
    const options: MergeOptions = {
      a: stringArg(args, "a") as string,
      method: (stringArg(args, "method") ?? (stringArg(args, "c") ? "add-difference" : "weighted-sum")) as MergeOptions["method"],
      out: stringArg(args, "out") as string,
      overwrite: flagArg(args, "overwrite"),
      signal,
    };
    for (const key of ["b", "c", "multiplier", "dtype", "engine", "isa"] as const) {
      const v = stringArg(args, key);
      if (v !== undefined) (options as unknown as Record<string, unknown>)[key] = v;
    }
    if (threads !== undefined) options.threads = Number(threads);
    const vae = stringArg(args, "vae");
    if (vae !== undefined) options.vae = vae;
    const config = stringArg(args, "config");
    if (config !== undefined) options.config = config as MergeOptions["config"] & string;
    if (listArg(args, "models").length) options.models = listArg(args, "models");
    if (listArg(args, "discard").length) options.discard = listArg(args, "discard");
    if (flagArg(args, "prune")) options.prune = true;
    if (flagArg(args, "no-metadata")) options.recipeMetadata = false;
    if (!flagArg(args, "quiet")) {
      const printer = createMergeProgressPrinter(io.err, io.isTTY);
      options.onProgress = (p) => printer.update(p);
      const report = await merge(options).finally(() => printer.done());
      printMergeReport(report, io);
    } else {
      await merge(options);
    }
    return 0;
  },
});
