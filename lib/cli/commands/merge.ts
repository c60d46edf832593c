/** `tensormerge merge`: one merge (or a multiplier sweep) from the command line. */
import { MergeError } from "../../errors";
import { merge, type MergeOptions } from "../../merge";
import { METHODS, resolveMethod } from "../../methods/registry";
import { formatBytes } from "../../outputs";
import { stat } from "node:fs/promises";
import { defineCommand, ENGINE_OPTIONS, INPUT_CACHE_OPTION, MODEL_DIR_OPTION, MODELS_IS_NOT_A_FOLDER, flagArg, listArg, modelDirArgs, requiredArg, stringArg, type CliIo, type CommandOption } from "../command";
import { keyValueArg, methodParamOptions, modelWeightsArg, namedParamArgs, numberArg } from "../method-params";
import { printPlan, refuseShortDisk, type PlanView } from "./run";
import { createMergeProgressPrinter } from "../progress";
import type { MergeReport } from "../../merge";

const methodHelp = METHODS.map((m) => `${m.name} (${m.formula})`).join("; ");

/** "A", "B", "C", "base", "model 2": how messages name an input of a report. */
export function inputLabel(input: { slot: string; index?: number }): string {
  if (input.slot === "model") return `model ${(input.index ?? 0) + 1}`;
  return input.slot === "base" ? "base" : input.slot.toUpperCase();
}

/** Warnings go to stderr, even with --quiet: a merge that kept most of A is not a quiet success. */
export function printMergeWarnings(report: MergeReport, io: CliIo): void {
  for (const w of report.warnings) io.err.write(`warning: ${w}\n`);
}

export function printMergeReport(report: MergeReport, io: CliIo): void {
  const s = report.stats;
  for (const r of report.renamedKeys) io.out.write(`renamed ${r.keys} keys of ${inputLabel(r)} (${r.path}) from the 2022 text-encoder layout to the modern names, as the classic tool does\n`);
  for (const t of report.removedTemps ?? []) io.out.write(`removed ${t}, left by a merge that was killed\n`);
  for (const c of report.configs) io.out.write(`copied model config to ${c}\n`);
  for (const o of report.outputs) io.out.write(`wrote ${o.path} (${formatBytes(o.bytes)}${report.outputs.length > 1 ? `, M=${o.multiplier}` : ""}${report.shards ? `, ${report.shards.length} shard${report.shards.length === 1 ? "" : "s"}` : ""})\n`);
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

/** A merge's plan, printed as `run --dry-run` prints a recipe's. */
export function mergePlanView(report: MergeReport): PlanView {
  const n = report.outputs.length;
  return {
    heading: `plan for ${report.method}: ${n} output${n === 1 ? "" : "s"}, 1 pass`,
    inputs: report.inputs.map((i) => ({ name: inputLabel(i), bytes: i.bytes, path: i.path })),
    outputs: report.outputs.map((o) => ({ ...o, state: "planned" as const })),
    unsaved: [],
    bytesRead: report.bytesRead,
    bytesWritten: report.bytesWritten,
    disk: report.disk ?? [],
    warnings: [],
    notes: report.configs.map((c) => `  ${c}: model config, copied from the input`),
  };
}

export { keyValueArg } from "../method-params";

/** `--models` values that are folders: the old meaning of the flag, explained. */
async function refuseModelFolders(models: readonly string[]): Promise<void> {
  for (const m of models) {
    const isDir = await stat(m).then((st) => st.isDirectory(), () => false);
    if (isDir) throw new MergeError("INVALID_ARGUMENT", `--models ${m}: a folder; ${MODELS_IS_NOT_A_FOLDER}`);
  }
}

const manyMethods = METHODS.filter((m) => m.many).map((m) => m.name);

/** The options every merge has whatever its method; named parameters are made from the registry. */
const FIXED_OPTIONS: Record<string, CommandOption> = {
    a: { type: "string", value: "FILE", description: "model A, the base (classic methods)" },
    b: { type: "string", value: "FILE", description: "model B" },
    c: { type: "string", value: "FILE", description: "model C (add-difference)" },
    base: { type: "string", value: "MODEL", description: `the base the models are fine-tunes of (${manyMethods.join(", ") || "base + models methods"})` },
    models: { type: "string", variadic: true, value: "MODEL", description: "the models to merge onto --base, in order (several after one flag: --models a.safetensors b.safetensors)" },
    weights: { type: "string", value: "W1,W2,…", description: "one weight per --models entry, in order (default 1 each); per-key α is --weight" },
    method: { type: "string", short: "m", value: "METHOD", description: `merge method: ${methodHelp}` },
    multiplier: { type: "string", short: "M", value: "M", description: "multiplier (α); a list (0.1,0.2) or range (0.1:0.5:0.1) writes one file per value in one pass (default: the method's)" },
    dtype: { type: "string", value: "TYPE", description: "float output type: same (as A or the base, default), fp16, bf16, fp32, fp8-e4m3, fp8-e5m2" },
    alpha: { type: "string", value: "M", description: "another name for --multiplier (the method's α)" },
    lambda: { type: "string", value: "λ", description: `another name for --multiplier: λ, the scale of the merged task vectors (${METHODS.filter((m) => m.many && m.params[0]).map((m) => m.name).join(", ")})` },
    beta: { type: "string", value: "B", description: "the method's β (triple-sum, sum-twice, multiply-difference, similarity-add-difference, tensor-sum)" },
    weight: { type: "string", multiple: true, value: "REGEX=VALUE", description: "α for keys matching REGEX (repeatable; the first matching pattern wins over the block value and the multiplier)" },
    "beta-weight": { type: "string", multiple: true, value: "REGEX=VALUE", description: "β for keys matching REGEX (repeatable, as --weight)" },
    blocks: { type: "string", value: "VALUES", description: "α per block: a SuperMerger list (26 values for SD, 20 for SDXL, first BASE), or a preset such as GRAD_V (tensormerge blocks A lists the blocks); keys in no block stay A" },
    "beta-blocks": { type: "string", value: "VALUES", description: "β per block, as --blocks" },
    clamp: { type: "boolean", description: "clamp every merged value to [min(A,B), max(A,B)]" },
    out: { type: "string", short: "o", value: "FILE", description: "output file (.safetensors or .ckpt); for sweeps <M> is replaced by each value" },
    overwrite: { type: "boolean", description: "replace an existing output file" },
    "shard-size": { type: "string", value: "SIZE", description: "Hugging Face folders (A is a folder): largest output shard, bytes or 500MB, 5GB, 2GiB (default 5GB)" },
    "dry-run": { type: "boolean", short: "n", description: "print the plan (inputs, outputs, bytes, disk space) and write nothing" },
    ...MODEL_DIR_OPTION,
    vae: { type: "string", value: "FILE", description: "bake in this VAE (replaces first_stage_model.*)" },
    discard: { type: "string", multiple: true, value: "REGEX", description: "leave out keys matching this regular expression (repeatable)" },
    prune: { type: "boolean", description: "leave out EMA weights and training-only keys" },
    config: { type: "string", value: "FROM", description: "copy <model>.yaml beside the output from: abc (first found, default), a, b, c, none" },
    ...ENGINE_OPTIONS,
    ...INPUT_CACHE_OPTION,
    "no-metadata": { type: "boolean", description: "leave the recipe out of the output's metadata" },
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
};

export const mergeCommand = defineCommand({
  name: "merge",
  summary: "merge two or three models (A, B, C), or a base and a list of models, into a new one",
  usage: "merge --a A --b B [--c C] --method METHOD --multiplier M --out OUT [options]\n   or: tensormerge merge --method ties --base BASE --models M1 M2 … [--weights W1,W2,…] [--density D …] --out OUT",
  options: { ...FIXED_OPTIONS, ...methodParamOptions(Object.keys(FIXED_OPTIONS)) },
  async run(args, io, signal) {
    const threads = stringArg(args, "threads");
    const models = listArg(args, "models");
    await refuseModelFolders(models);
    const method = resolveMethod(stringArg(args, "method") ?? (stringArg(args, "c") ? "add-difference" : "weighted-sum"));
    const options: MergeOptions = {
      method: method.name as MergeOptions["method"],
      out: requiredArg(args, "out", "merge"),
      overwrite: flagArg(args, "overwrite"),
      signal,
    };
    if (method.many) {
      for (const slot of ["a", "b", "c"] as const) {
        if (stringArg(args, slot) !== undefined) throw new MergeError("INVALID_ARGUMENT", `--${slot}: ${method.name} takes --base and --models, not models A, B, C`);
      }
      options.base = requiredArg(args, "base", "merge", ` for ${method.name} (the models' base)`);
      if (models.length === 0) throw new MergeError("INVALID_ARGUMENT", `--models is required for ${method.name}: the models to merge onto the base (see: tensormerge merge --help)`);
      options.models = models;
      const weights = stringArg(args, "weights");
      if (weights !== undefined) options.modelWeights = modelWeightsArg(weights, models.length);
    } else {
      for (const flag of ["base", "models", "weights"] as const) {
        if (args.values[flag] !== undefined) throw new MergeError("INVALID_ARGUMENT", `--${flag}: ${method.name} merges models ${method.inputs.map((s) => s.toUpperCase()).join(", ")} (--a, --b, --c); --base and --models are for ${manyMethods.join(", ") || "base + models methods"}`);
      }
      options.a = requiredArg(args, "a", "merge");
      for (const slot of method.inputs) requiredArg(args, slot, "merge", ` for ${method.name} (model ${slot.toUpperCase()})`);
    }
    const named = namedParamArgs(args, method, models.length);
    if (Object.keys(named.values).length) options.params = named.values;
    const perModel = Object.entries(named.perModel);
    if (perModel.length) options.modelParams = models.map((_, i) => Object.fromEntries(perModel.map(([name, list]) => [name, list[i]!])));
    if (Object.keys(named.weights).length) options.paramWeights = named.weights;
    if (Object.keys(named.blocks).length) options.paramBlocks = named.blocks;
    for (const key of ["b", "c", "multiplier", "dtype", "engine", "isa"] as const) {
      const v = stringArg(args, key);
      if (v !== undefined) (options as unknown as Record<string, unknown>)[key] = v;
    }
    if (threads !== undefined) options.threads = Number(threads);
    const inputCache = stringArg(args, "input-cache");
    if (inputCache !== undefined) options.inputCache = inputCache as MergeOptions["inputCache"] & string;
    const alpha = stringArg(args, "alpha"), lambda = stringArg(args, "lambda");
    if (alpha !== undefined && lambda !== undefined) throw new MergeError("INVALID_ARGUMENT", "--alpha and --lambda are the same option (--multiplier): give one");
    if (alpha !== undefined || lambda !== undefined) options.alpha = (alpha ?? lambda)!;
    const beta = stringArg(args, "beta");
    if (beta !== undefined) options.beta = numberArg("--beta", beta);
    if (listArg(args, "weight").length) options.weights = listArg(args, "weight").map((w) => keyValueArg("--weight", w));
    if (listArg(args, "beta-weight").length) options.betaWeights = listArg(args, "beta-weight").map((w) => keyValueArg("--beta-weight", w));
    if (flagArg(args, "clamp")) options.clamp = true;
    const blocks = stringArg(args, "blocks"), betaBlocks = stringArg(args, "beta-blocks");
    if (blocks !== undefined) options.blocks = blocks;
    if (betaBlocks !== undefined) options.betaBlocks = betaBlocks;
    const shardSize = stringArg(args, "shard-size");
    if (shardSize !== undefined) options.shardSize = shardSize;
    const vae = stringArg(args, "vae");
    if (vae !== undefined) options.vae = vae;
    const config = stringArg(args, "config");
    if (config !== undefined) options.config = config as MergeOptions["config"] & string;
    const modelDirs = modelDirArgs(args);
    if (modelDirs.length) options.modelDirs = modelDirs;
    if (listArg(args, "discard").length) options.discard = listArg(args, "discard");
    if (flagArg(args, "prune")) options.prune = true;
    if (flagArg(args, "no-metadata")) options.recipeMetadata = false;
    if (flagArg(args, "dry-run")) {
      const plan = await merge({ ...options, dryRun: true });
      printPlan(mergePlanView(plan), io);
      refuseShortDisk(plan.disk ?? []);
      return 0;
    }
    if (!flagArg(args, "quiet")) {
      const printer = createMergeProgressPrinter(io.err, io.isTTY);
      options.onProgress = (p) => printer.update(p);
      const report = await merge(options).finally(() => printer.done());
      printMergeReport(report, io);
      printMergeWarnings(report, io);
    } else {
      printMergeWarnings(await merge(options), io);
    }
    return 0;
  },
});
