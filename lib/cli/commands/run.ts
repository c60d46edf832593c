/** `tensormerge run`: a whole recipe (classic Merge Board text or JSON) in one pass. */
import type { ConfigSource } from "../../library/config";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { basename, dirname, extname, join, relative, resolve } from "node:path";
import { MergeError, fsError } from "../../errors";
import { HashCache } from "../../library/hash-cache";
import { defaultModelDirs, findModelFiles } from "../../library/scan";
import { checkTargets, formatBytes } from "../../outputs";
import { parseBindingsText, parseVarArgs, type Bindings } from "../../recipes/bindings";
import { formatRecipe, parseRecipe } from "../../recipes";
import { rowInputs } from "../../recipes/types";
import { runRecipe, type RecipeProgress, type RecipeRunReport } from "../../recipes/run";
import { defineCommand, ENGINE_OPTIONS, MODEL_DIR_OPTION, OLD_MODELS_OPTION, flagArg, listArg, modelDirArgs, refuseOldModelsOption, stringArg, type CliIo } from "../command";
import { createProgressPrinter } from "../progress";

export const HISTORY_FILE = "tensormerge-history.jsonl";

export async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    throw fsError(e, path, `reading the ${what}`);
  }
}

export function engineOptions(args: Parameters<typeof stringArg>[0]): { engine?: "auto" | "native" | "js"; threads?: number; isa?: "auto" | "scalar" | "avx2" | "avx512" } {
  const out: ReturnType<typeof engineOptions> = {};
  const engine = stringArg(args, "engine");
  if (engine !== undefined) {
    if (!["auto", "native", "js"].includes(engine)) throw new MergeError("INVALID_ARGUMENT", `Expected one of auto, native, js for --engine but received "${engine}"`);
    out.engine = engine as "auto" | "native" | "js";
  }
  const threads = stringArg(args, "threads");
  if (threads !== undefined) {
    const n = Number(threads);
    if (!Number.isInteger(n) || n < 1 || n > 1024) throw new MergeError("INVALID_ARGUMENT", `Expected an integer between 1 and 1024 for --threads but received "${threads}"`);
    out.threads = n;
  }
  const isa = stringArg(args, "isa");
  if (isa !== undefined) {
    if (!["auto", "scalar", "avx2", "avx512"].includes(isa)) throw new MergeError("INVALID_ARGUMENT", `Expected one of auto, scalar, avx2, avx512 for --isa but received "${isa}"`);
    out.isa = isa as "auto" | "scalar" | "avx2" | "avx512";
  }
  return out;
}

const show = (path: string) => {
  const r = relative(process.cwd(), path);
  return r && !r.startsWith("..") ? r : path;
};

/** What `--dry-run` prints, for any command that plans (run, reproduce, merge). */
export interface PlanView {
  /** "plan for board.txt: 4 rows, 1 pass". */
  heading: string;
  inputs: { name: string; bytes: number; path: string }[];
  outputs: { row?: number; path: string; bytes: number; multiplier: number; state: "planned" | "skipped" | "written" }[];
  /** Rows computed in the pass but not saved. */
  unsaved: string[];
  bytesRead: number;
  bytesWritten: number;
  disk: { dir: string; needed: number; free: number | null }[];
  warnings: string[];
  /** Lines printed after the outputs (files written beside them). */
  notes?: string[];
}

const plural = (n: number, word: string, suffix = "s") => `${n} ${word}${n === 1 ? "" : suffix}`;

/** A recipe run's plan (run and reproduce). */
export function recipePlanView(report: RecipeRunReport, title: string): PlanView {
  return {
    heading: `${title}: ${plural(report.compiled.recipe.rows.length, "row")}, ${plural(report.passes, "pass", "es")}`,
    inputs: report.inputs,
    outputs: report.outputs,
    unsaved: report.compiled.rows.filter((r) => r.outputs.length === 0).map((r) => r.row.name),
    bytesRead: report.bytesRead,
    bytesWritten: report.bytesWritten,
    disk: report.disk,
    warnings: report.warnings,
  };
}

/** The plan, as `--dry-run` prints it. */
export function printPlan(plan: PlanView, io: CliIo): void {
  const w = (s: string) => io.out.write(`${s}\n`);
  w(plan.heading);
  w("inputs (each read once):");
  const nameWidth = Math.max(4, ...plan.inputs.map((i) => i.name.length));
  for (const i of plan.inputs) w(`  ${i.name.padEnd(nameWidth)}  ${formatBytes(i.bytes).padStart(10)}  ${show(i.path)}`);
  w("outputs:");
  const outWidth = Math.max(4, ...plan.outputs.map((o) => basename(o.path).length));
  for (const o of plan.outputs) {
    const state = o.state === "skipped" ? "exists, skipped" : o.state === "planned" ? "write" : o.state;
    const row = o.row === undefined ? "" : `row ${String(o.row).padEnd(3)} `;
    w(`  ${row}${basename(o.path).padEnd(outWidth)}  ${formatBytes(o.bytes).padStart(10)}  M=${o.multiplier}  ${state}`);
  }
  if (plan.unsaved.length) w(`  (not saved, computed in the pass: ${plan.unsaved.join(", ")})`);
  for (const n of plan.notes ?? []) w(n);
  w(`read ${formatBytes(plan.bytesRead)}, write ${formatBytes(plan.bytesWritten)}`);
  for (const d of plan.disk) w(`disk: ${show(d.dir) || "."} needs ${formatBytes(d.needed)}, ${d.free === null ? "free space unknown" : `${formatBytes(d.free)} free`}`);
  for (const warning of plan.warnings) w(`warning: ${warning}`);
}

/** After printing a plan: a folder without the space for it fails the dry run, as the run would. */
export function refuseShortDisk(disk: PlanView["disk"]): void {
  for (const d of disk) {
    if (d.free !== null && d.free < d.needed * 1.01) {
      throw new MergeError("DISK_FULL", `${d.dir}: ${formatBytes(d.needed)} needed for the outputs but only ${formatBytes(d.free)} free`, { path: d.dir });
    }
  }
}

function progressPrinter(io: CliIo, quiet: boolean): { onProgress?: (e: RecipeProgress) => void; done(): void } {
  if (quiet) return { done() {} };
  let bar: ReturnType<typeof createProgressPrinter> | undefined;
  let barPass = 0;
  let hashing: ReturnType<typeof createProgressPrinter> | undefined;
  let hashingPath = "";
  const finish = () => {
    bar?.done();
    bar = undefined;
    hashing?.done();
    hashing = undefined;
  };
  return {
    onProgress(e) {
      if (e.phase === "hash") {
        if (e.path !== hashingPath) {
          hashing?.done();
          hashingPath = e.path;
          hashing = createProgressPrinter(io.err, io.isTTY, `hashing ${basename(e.path)}`);
        }
        hashing!.update({ bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, fraction: e.bytesTotal ? e.bytesDone / e.bytesTotal : 1, elapsedSeconds: 0 });
      } else if (e.phase === "merge") {
        hashing?.done();
        hashing = undefined;
        // One bar per pass: a board whose rows cannot share a pass runs several.
        const pass = e.progress.pass ?? 1;
        if (pass !== barPass || !bar) {
          bar?.done();
          barPass = pass;
          bar = createProgressPrinter(io.err, io.isTTY, `merging, pass ${pass}/${e.passes}`);
        }
        bar!.update(e.progress);
      } else {
        finish();
        io.err.write(`  ${e.state.padEnd(9)} ${basename(e.path)}\n`);
      }
    },
    done: finish,
  };
}

export const runCommand = defineCommand({
  name: "run",
  summary: "run a recipe (classic Merge Board text or JSON): all rows in one pass",
  usage: "run RECIPE [--var NAME=MODEL …] [--out-dir DIR] [--model-dir DIR] [--dry-run] [options]",
  positionals: true,
  options: {
    var: { type: "string", multiple: true, value: "NAME=MODEL", description: "bind a recipe variable __NAME__ to a model (path, name in --model-dir, or hash)" },
    vars: { type: "string", value: "FILE", description: "bindings file: JSON {\"NAME\": \"MODEL\"} or NAME = MODEL lines" },
    "out-dir": { type: "string", short: "o", value: "DIR", description: "folder for the outputs, named <OUT>.safetensors / <OUT>.ckpt (default: .)" },
    ...MODEL_DIR_OPTION,
    ...OLD_MODELS_OPTION,
    "dry-run": { type: "boolean", short: "n", description: "print the plan (inputs, outputs, bytes, disk space) and write nothing" },
    "skip-existing": { type: "boolean", description: "leave existing outputs alone; later rows read them" },
    overwrite: { type: "boolean", description: "replace existing outputs" },
    config: { type: "string", value: "FROM", description: "copy <model>.yaml beside each output from: abc (first found, default), a, b, c, none; a row's own \"config\" wins" },
    "no-metadata": { type: "boolean", description: "leave the recipe out of the outputs' metadata (sd_merge_recipe, sd_merge_models, tensormerge_recipe)" },
    history: { type: "string", value: "FILE", description: `append one JSON line per output here (default: OUT-DIR/${HISTORY_FILE})` },
    "no-history": { type: "boolean", description: "keep no history" },
    export: { type: "string", value: "FILE", description: "write the recipe to FILE (.json: JSON, else classic text) and exit" },
    ...ENGINE_OPTIONS,
    quiet: { type: "boolean", short: "q", description: "no progress output" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    refuseOldModelsOption(args);
    if (args.positionals.length !== 1) throw new MergeError("INVALID_ARGUMENT", "run expects one recipe file (see: tensormerge run --help)");
    const recipePath = resolve(args.positionals[0]!);
    const recipe = parseRecipe(await readText(recipePath, "recipe"));
    const bindings: Bindings = {};
    const varsFile = stringArg(args, "vars");
    if (varsFile !== undefined) {
      const fromFile = parseBindingsText(await readText(varsFile, "bindings file"), varsFile);
      // Paths in a bindings file are relative to the file, as a user writing it expects.
      for (const [k, v] of Object.entries(fromFile)) bindings[k] = /[\\/]/.test(v) ? resolve(dirname(resolve(varsFile)), v) : v;
    }
    Object.assign(bindings, parseVarArgs(listArg(args, "var")));
    const modelDirs = modelDirArgs(args);
    const exportTo = stringArg(args, "export");
    if (exportTo !== undefined) {
      // Never over the recipe, the bindings file, a model it binds or any model of the model
      // folders (the recipe's inputs, found by name or hash), nor over any file unless asked.
      const dirs = modelDirs.length ? modelDirs : defaultModelDirs();
      const exists = (p: string) => stat(p).then(() => true, () => false);
      const existing = async (paths: string[]) => (await Promise.all(paths.map(async (p) => ((await exists(p)) ? [p] : [])))).flat();
      const libraryModels = (await findModelFiles(await existing(dirs), { signal })).files.map((f) => f.path);
      const refs = [...Object.values(bindings), ...recipe.rows.flatMap((r) => [...rowInputs(r).map((i) => i.input), r.vae]).flatMap((i) => (i?.kind === "model" ? [i.ref] : []))];
      const refFiles = await existing(refs.flatMap((ref) => [resolve(ref), resolve(dirname(recipePath), ref)]));
      await checkTargets([exportTo], [recipePath, ...(varsFile ? [varsFile] : []), ...refFiles, ...libraryModels], flagArg(args, "overwrite"));
      const text = formatRecipe(recipe, extname(exportTo).toLowerCase() === ".json" ? "json" : "classic");
      await writeFile(exportTo, text).catch((e) => { throw fsError(e, exportTo, "writing the recipe"); });
      io.out.write(`wrote ${exportTo}\n`);
      return 0;
    }
    const outDir = resolve(stringArg(args, "out-dir") ?? ".");
    const dryRun = flagArg(args, "dry-run");
    const config = stringArg(args, "config");
    if (config !== undefined && !["abc", "a", "b", "c", "none"].includes(config)) {
      throw new MergeError("INVALID_ARGUMENT", `--config must be one of abc, a, b, c, none (got "${config}")`);
    }
    const history = flagArg(args, "no-history") ? undefined : resolve(stringArg(args, "history") ?? join(outDir, HISTORY_FILE));
    const hashCache = await HashCache.open();
    const printer = progressPrinter(io, flagArg(args, "quiet") || dryRun);
    const report = await runRecipe(recipe, {
      bindings,
      // Bindings from the command line and a bindings file may cover several recipes: only the
      // command line is strict about variables the recipe lacks.
      strictBindings: varsFile === undefined,
      ...(modelDirs.length ? { modelDirs } : {}),
      outDir,
      hashCache,
      skipExisting: flagArg(args, "skip-existing"),
      overwrite: flagArg(args, "overwrite"),
      recipeMetadata: !flagArg(args, "no-metadata"),
      ...(config !== undefined ? { config: config as ConfigSource } : {}),
      ...(history ? { history } : {}),
      recipeSource: recipePath,
      dryRun,
      // Created only once every check passed: a refused recipe leaves no empty folder behind.
      createOutDirs: true,
      ...engineOptions(args),
      ...(printer.onProgress ? { onProgress: printer.onProgress } : {}),
      signal,
    }).finally(() => printer.done());
    if (dryRun) {
      printPlan(recipePlanView(report, `plan for ${show(recipePath)}`), io);
      refuseShortDisk(report.disk);
      return 0;
    }
    for (const warning of report.warnings) io.err.write(`warning: ${warning}\n`);
    for (const o of report.outputs) {
      io.out.write(o.state === "skipped" ? `skipped ${show(o.path)} (exists)\n` : `wrote ${show(o.path)} (${formatBytes(o.bytes)}${o.sha256 ? `, sha256 ${o.sha256.slice(0, 10)}` : ""})\n`);
    }
    if (report.passes > 0) {
      io.out.write(`${report.engine} engine (${report.isa}, ${report.threads} thread${report.threads > 1 ? "s" : ""}): read ${formatBytes(report.bytesRead)} once, wrote ${formatBytes(report.bytesWritten)} in ${report.passes} pass${report.passes > 1 ? "es" : ""}, ${report.seconds.toFixed(2)} s\n`);
    }
    return 0;
  },
});
