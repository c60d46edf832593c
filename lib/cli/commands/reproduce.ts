/** `tensormerge reproduce`: rebuild a model from the recipe in its metadata and compare the bytes. */
import { basename, resolve } from "node:path";
import { MergeError } from "../../errors";
import { HashCache } from "../../library/hash-cache";
import { formatBytes } from "../../outputs";
import { formatJsonRecipe } from "../../recipes/json";
import { isModelFolder } from "../../hf/folder";
import { reproduceHfFolder } from "../../hf/reproduce";
import { readEmbeddedRecipe, reproduce } from "../../recipes/reproduce";
import { RECIPE_METADATA_KEY } from "../../recipes/metadata";
import { openModel } from "../../formats";
import { bakeRecordOf } from "../../lora/reproduce";
import { defineCommand, ENGINE_OPTIONS, OLD_MODELS_OPTION, flagArg, modelDirArgs, refuseOldModelsOption, stringArg } from "../command";
import { createMergeProgressPrinter, createProgressPrinter } from "../progress";
import { engineOptions, printPlan, recipePlanView, refuseShortDisk } from "./run";

export const reproduceCommand = defineCommand({
  name: "reproduce",
  summary: "rebuild a model from the recipe in its metadata, finding the ingredients by hash",
  usage: "reproduce MODEL --model-dir DIR [--out FILE] [options]",
  positionals: true,
  options: {
    "model-dir": { type: "string", multiple: true, value: "DIR", description: "folder with the ingredients, found by sha256 (repeatable; default: $TENSORMERGE_MODELS or ./models)" },
    ...OLD_MODELS_OPTION,
    out: { type: "string", short: "o", value: "FILE", description: "rebuilt model (default: ./<name>.reproduced.safetensors; for a Hugging Face folder ./<name>.reproduced)" },
    overwrite: { type: "boolean", description: "replace an existing output" },
    "dry-run": { type: "boolean", short: "n", description: "find the ingredients and print the plan; write nothing" },
    "print-recipe": { type: "boolean", description: "print the model's recipe (JSON; a baked model: its bake record) and exit" },
    ...ENGINE_OPTIONS,
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    refuseOldModelsOption(args);
    if (args.positionals.length !== 1) throw new MergeError("INVALID_ARGUMENT", "reproduce expects one model file (see: tensormerge reproduce --help)");
    const model = resolve(args.positionals[0]!);
    if (flagArg(args, "print-recipe")) {
      const opened = await openModel(model);
      const record = opened.metadata[RECIPE_METADATA_KEY] === undefined ? bakeRecordOf(opened.metadata, model) : undefined;
      io.out.write(record ? `${JSON.stringify(record, null, 2)}\n` : formatJsonRecipe(await readEmbeddedRecipe(model)));
      return 0;
    }
    const modelDirs = modelDirArgs(args);
    const out = stringArg(args, "out");
    const dryRun = flagArg(args, "dry-run");
    const quiet = flagArg(args, "quiet") || dryRun;
    if (await isModelFolder(model)) {
      // A Hugging Face folder: rebuilt from the recipe in its shards (lib/hf/reproduce.ts).
      const printer = quiet ? undefined : createMergeProgressPrinter(io.err, io.isTTY);
      const r = await reproduceHfFolder(model, {
        ...(modelDirs.length ? { modelDirs } : {}), ...(out !== undefined ? { out } : {}), overwrite: flagArg(args, "overwrite"), dryRun,
        ...engineOptions(args), ...(printer ? { onProgress: (p) => printer.update(p) } : {}), signal,
      }).finally(() => printer?.done());
      if (dryRun) {
        io.out.write(`would rebuild ${r.out} from the ${r.recipeKind === "mergekit" ? "mergekit config" : "merge recipe"} in ${basename(model)}'s shards (${formatBytes(r.bytesWritten)}, shards of up to ${formatBytes(r.shardSize)})\n`);
        return 0;
      }
      const differ = r.files!.filter((f) => !f.identical).map((f) => f.name);
      io.out.write(differ.length === 0
        ? `rebuilt ${r.out} (${formatBytes(r.bytesWritten)}): identical to ${basename(model)}, ${r.files!.length} files compared (README.md left out)\n`
        : `rebuilt ${r.out} (${formatBytes(r.bytesWritten)}) but it differs from ${basename(model)}: ${differ.join(", ")}\n`);
      return differ.length === 0 ? 0 : 1;
    }
    const bar = quiet ? undefined : createProgressPrinter(io.err, io.isTTY, "rebuilding");
    const report = await reproduce(model, {
      ...(modelDirs.length ? { modelDirs } : {}),
      ...(out !== undefined ? { out } : {}),
      overwrite: flagArg(args, "overwrite"),
      hashCache: await HashCache.open(),
      dryRun,
      ...engineOptions(args),
      ...(bar ? { onProgress: (e) => { if (e.phase === "merge") bar.update(e.progress); } } : {}),
      signal,
    }).finally(() => bar?.done());
    if (report.kind === "bake" && dryRun) {
      io.out.write(`rebuilding ${basename(model)}: a bake of ${report.found.model}\n${report.found.loras.map((p, i) => `  LoRA ${i + 1}: ${p} (ratio ${report.record.loras[i]!.ratio}, te ${report.record.loras[i]!.te})\n`).join("")}  → ${report.out}\n`);
      return 0;
    }
    if (report.kind === "recipe" && dryRun) {
      printPlan(recipePlanView(report.run, `rebuilding ${basename(model)}`), io);
      refuseShortDisk(report.run.disk);
      return 0;
    }
    const size = report.kind === "bake" ? report.bake?.output.bytes ?? 0 : report.run.outputs[0]?.bytes ?? 0;
    if (report.identical) {
      io.out.write(`rebuilt ${report.out} (${formatBytes(size)}): identical to ${basename(model)}, sha256 ${report.outSha256}\n`);
      return 0;
    }
    io.out.write(`rebuilt ${report.out} (${formatBytes(size)}) but it differs from ${basename(model)}: sha256 ${report.outSha256} vs ${report.sourceSha256}\n`);
    return 1;
  },
});
