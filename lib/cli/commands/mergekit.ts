/** `tensormerge mergekit CONFIG OUT`: a mergekit YAML configuration, written as a Hugging Face folder. */
import { runMergekit, type MergekitOptions, type MergekitReport } from "../../hf/mergekit";
import { formatBytes } from "../../outputs";
import { defineCommand, ENGINE_OPTIONS, INPUT_CACHE_OPTION, flagArg, stringArg, type CliIo } from "../command";
import { createMergeProgressPrinter } from "../progress";
import { refuseShortDisk } from "./run";

function printReport(r: MergekitReport, io: CliIo): void {
  for (const t of r.removedTemps ?? []) io.out.write(`removed ${t}, left by a run that was killed\n`);
  const what = r.dryRun ? "plan" : "wrote";
  io.out.write(`${what} ${r.out}: ${r.method} of ${r.models.join(", ")}; ${r.layers} layers, ${r.dtype}, ${r.shards.length} shard${r.shards.length === 1 ? "" : "s"}\n`);
  for (const s of r.shards) io.out.write(`  ${s.name}  ${s.tensors} tensors  ${formatBytes(s.bytes)}\n`);
  for (const f of r.files) io.out.write(`  ${f}\n`);
  io.out.write(`read ${formatBytes(r.bytesRead)}, ${r.dryRun ? "would write" : "wrote"} ${formatBytes(r.bytesWritten)}`);
  io.out.write(r.dryRun ? "\n" : ` in ${r.seconds.toFixed(2)} s (${r.engine} engine, ${r.isa}, ${r.threads} thread${r.threads === 1 ? "" : "s"})\n`);
  for (const d of r.disk ?? []) io.out.write(`disk ${d.dir}: needs ${formatBytes(d.needed)}, ${d.free === null ? "free space unknown" : `${formatBytes(d.free)} free`}\n`);
  for (const w of r.warnings) io.err.write(`warning: ${w}\n`);
}

export const mergekitCommand = defineCommand({
  name: "mergekit",
  summary: "run a mergekit YAML configuration (linear, task_arithmetic, passthrough, …) into a Hugging Face model folder",
  usage: "mergekit CONFIG.yml OUT_FOLDER [--shard-size 5GB] [--dry-run] [options]",
  positionals: true,
  options: {
    "shard-size": { type: "string", value: "SIZE", description: "largest shard: bytes or 500MB, 5GB, 2GiB (default 5GB; a tensor is never split)" },
    "dry-run": { type: "boolean", short: "n", description: "check the config and the models, print the shards and the disk space, write nothing" },
    overwrite: { type: "boolean", description: "replace an existing output model folder" },
    ...ENGINE_OPTIONS,
    ...INPUT_CACHE_OPTION,
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    if (args.positionals.length !== 2) {
      io.err.write("tensormerge mergekit: give the config file and the output folder; see --help\n");
      return 2;
    }
    const [config, out] = args.positionals as [string, string];
    const options: MergekitOptions = { config, out, signal, overwrite: flagArg(args, "overwrite"), dryRun: flagArg(args, "dry-run") };
    const shardSize = stringArg(args, "shard-size");
    if (shardSize !== undefined) options.shardSize = shardSize;
    const engine = stringArg(args, "engine"), isa = stringArg(args, "isa"), threads = stringArg(args, "threads");
    if (engine !== undefined) options.engine = engine as MergekitOptions["engine"] & string;
    if (isa !== undefined) options.isa = isa as MergekitOptions["isa"] & string;
    if (threads !== undefined) options.threads = Number(threads);
    const inputCache = stringArg(args, "input-cache");
    if (inputCache !== undefined) options.inputCache = inputCache as MergekitOptions["inputCache"] & string;
    const printer = options.dryRun || flagArg(args, "quiet") ? undefined : createMergeProgressPrinter(io.err, io.isTTY);
    if (printer) options.onProgress = (p) => printer.update(p);
    const report = await runMergekit(options).finally(() => printer?.done());
    printReport(report, io);
    if (report.dryRun) refuseShortDisk(report.disk ?? []);
    return 0;
  },
});
