/**
 * `merge()` for methods over a base and a list of models (ties, dare, dare-ties, model-stock):
 * `base`, `models` (paths), `modelWeights`, `params` and `modelParams` instead of a, b, c.
 * Everything is checked before any output is created: the count of models, duplicates (by path
 * once resolved), architectures (compat.ts, each model against the base), parameter ranges.
 */
import { realpath } from "node:fs/promises";
import { basename } from "node:path";
import type { OutputDtype } from "./dtypes";
import type { EngineName } from "./engine";
import { MergeError } from "./errors";
import { openModel } from "./formats";
import { outputFormatForPath, type OutputFormat } from "./formats/output";
import { assertCompatible, assertDistinctModels } from "./library/compat";
import { configCandidates, type ConfigSource } from "./library/config";
import { planKeyEdits } from "./library/edits";
import { HashCache } from "./library/hash-cache";
import { resolveModel } from "./library/resolve";
import type { MergeOptions, MergeReport } from "./merge";
import { finishMerge, sweepOutputPath, stemOf } from "./merge";
import type { MergeMethod } from "./methods/define";
import { checkRowParams, perBlockOption, type RowParams } from "./methods/params";
import { METHODS, type MethodName } from "./methods/registry";
import type { ModelFile } from "./model";
import { ProtectedFiles, checkTargets, planConfigCopies } from "./outputs";
import { planBoard } from "./plan";
import { manyMergeMetadata } from "./recipes/merge-metadata";
import { blockMapOf, rowParamsOf, type RecipeRow } from "./recipes/types";
import { requireNumberInRange, requireString } from "./validate";

export function manyMethodNames(): string {
  return METHODS.filter((m) => m.many).map((m) => m.name).join(", ");
}

export interface ManyInputs {
  base: string;
  models: string[];
  /** Per model: its own parameter values (weight from modelWeights, then modelParams). */
  modelParams: RowParams[];
}

/** The base, models and per-model values of a base + models method, checked (names each mistake). */
export function validateManyInputs(options: MergeOptions, method: MergeMethod): ManyInputs {
  for (const slot of ["a", "b", "c"] as const) {
    if (options[slot] !== undefined) throw new MergeError("INVALID_ARGUMENT", `${method.name} merges models onto a base: give base and models, not ${slot}`);
  }
  const base = requireString("base", options.base);
  if (!Array.isArray(options.models)) throw new MergeError("INVALID_ARGUMENT", `models is required: ${method.name} needs a list of models (paths) to merge onto the base`);
  const models = options.models.map((m, i) => requireString(`models[${i}]`, m));
  const { min, max } = method.many!;
  if (models.length < min || models.length > max) {
    throw new MergeError("INVALID_ARGUMENT", `models: ${method.name} takes ${min === max ? min : `${min} to ${max}`} models besides the base, got ${models.length}`);
  }
  const seen = new Map<string, string>([[base, "the base"]]);
  models.forEach((m, i) => {
    const before = seen.get(m);
    if (before) throw new MergeError("INVALID_ARGUMENT", `models[${i}] (${m}) is the same as ${before}: give each model once`);
    seen.set(m, `models[${models.indexOf(m)}]`);
  });
  const weights = options.modelWeights;
  if (weights !== undefined) {
    if (!Array.isArray(weights) || weights.length !== models.length) {
      throw new MergeError("INVALID_ARGUMENT", `modelWeights must be a list of ${models.length} numbers, one per model`);
    }
    if (!method.params.some((p) => p.name === "weight")) throw new MergeError("INVALID_ARGUMENT", `modelWeights: ${method.name} has no per-model weight`);
  }
  const extra = options.modelParams;
  if (extra !== undefined && (!Array.isArray(extra) || extra.length !== models.length)) {
    throw new MergeError("INVALID_ARGUMENT", `modelParams must be a list of ${models.length} objects, one per model`);
  }
  const modelParams = models.map((_, i): RowParams => {
    const values: Record<string, number> = {};
    if (weights) values.weight = requireNumberInRange(`modelWeights[${i}]`, weights[i], -1e6, 1e6);
    const own = extra?.[i];
    if (own !== undefined) {
      if (own === null || typeof own !== "object" || Array.isArray(own)) throw new MergeError("INVALID_ARGUMENT", `modelParams[${i}] must be an object such as { density: 0.3 }`);
      for (const [name, v] of Object.entries(own)) {
        const p = method.params.find((q) => q.name === name);
        if (!p?.perModel) {
          const list = method.params.filter((q) => q.perModel).map((q) => q.name).join(", ") || "none";
          throw new MergeError("INVALID_ARGUMENT", `modelParams[${i}].${name}: ${method.name} has no per-model parameter "${name}" (per-model: ${list})`);
        }
        values[name] = requireNumberInRange(`modelParams[${i}].${name}`, v, -1e16, 1e16);
      }
    }
    checkRowParams(method, { values }, `model ${i + 1} (${models[i]}): `);
    return { values };
  });
  return { base, models, modelParams };
}

interface CheckedMany {
  method: MergeMethod;
  many: ManyInputs;
  multipliers: number[];
  rowParams: Pick<RecipeRow, "params" | "weights" | "blocks" | "clamp">;
  dtype: OutputDtype | undefined;
  out: string;
  engine: Exclude<EngineName, "auto">;
  threads: number;
  isa: "auto" | "scalar" | "avx2" | "avx512";
  format: OutputFormat | undefined;
  overwrite: boolean;
  dryRun: boolean;
  configSource: ConfigSource;
  vae: string | undefined;
}

export async function mergeMany(options: MergeOptions, checked: CheckedMany, started: number): Promise<MergeReport> {
  const { method, many, multipliers, rowParams, dtype, out, engine, threads, isa, format, overwrite, dryRun, configSource } = checked;
  const targets = multipliers.map((m) => sweepOutputPath(out, m, multipliers.length));
  await checkTargets(targets, [], overwrite);
  const cache = await HashCache.open();
  const resolveOptions = { cache, ...(options.modelDirs ? { dirs: options.modelDirs } : {}), ...(options.signal ? { signal: options.signal } : {}) };
  const basePath = await resolveModel(many.base, resolveOptions);
  const modelPaths: string[] = [];
  for (const m of many.models) modelPaths.push(await resolveModel(m, resolveOptions));
  // Two names for one file (a path and a hash, a symlink) are found here, once resolved.
  const real = async (p: string) => realpath(p).catch(() => p);
  const seen = new Map<string, string>([[await real(basePath), "the base"]]);
  for (const [i, p] of modelPaths.entries()) {
    const key = await real(p);
    const before = seen.get(key);
    if (before) throw new MergeError("INVALID_ARGUMENT", `models[${i}] (${many.models[i]}) is the same file as ${before} (${key}): give each model once`, { path: p });
    seen.set(key, `models[${i}]`);
  }
  const vaePath = checked.vae === undefined ? undefined : await resolveModel(checked.vae, resolveOptions);
  const readFiles = await ProtectedFiles.of([
    { path: basePath, what: "the base" },
    ...modelPaths.map((path, i) => ({ path, what: `model ${i + 1}` })),
    ...(vaePath ? [{ path: vaePath, what: "the VAE" }] : []),
  ]);
  await checkTargets(targets, readFiles, overwrite);
  const candidates = configCandidates(configSource === "abc" || configSource === "a" ? "a" : "none", { a: basePath });
  const configs = candidates.length ? await planConfigCopies([{ from: candidates, outputs: targets }], [basePath, ...modelPaths], overwrite) : [];

  const base = await openModel(basePath);
  const models: ModelFile[] = [];
  for (const p of modelPaths) models.push(await openModel(p));
  // The same file under two names that resolve apart (a hard link) is refused too.
  assertDistinctModels([base, ...models], { labels: [`the base (${basename(basePath)})`, ...modelPaths.map((p, i) => `model ${i + 1} (${basename(p)})`)] });
  assertCompatible([base, ...models], { labels: ["the base", ...models.map((_, i) => `model ${i + 1}`)] });
  const vaeModel = vaePath ? await openModel(vaePath) : undefined;
  const edits = planKeyEdits({
    a: base,
    ...(vaeModel ? { vae: vaeModel } : {}),
    ...(options.discard !== undefined ? { discard: options.discard } : {}),
    ...(options.prune ? { prune: true } : {}),
  });
  const planParams = rowParamsOf(rowParams, rowParams.blocks ? blockMapOf(base) : undefined, perBlockOption);
  checkRowParams(method, planParams);
  const metadataFor = await manyMergeMetadata({
    rowName: stemOf(out), method: method.name as MethodName, base, models, modelValues: many.modelParams.map((p) => p.values ?? {}), multipliers, rowParams, dtype,
    ...(vaePath && vaeModel ? { vae: { path: vaePath, model: vaeModel } } : {}),
    ...(options.discard !== undefined ? { discard: options.discard } : {}),
    ...(options.prune ? { prune: true } : {}),
    ...(options.metadata ? { metadata: options.metadata } : {}),
    ...(options.recipeMetadata !== undefined ? { recipeMetadata: options.recipeMetadata } : {}),
    dryRun, cache,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const plan = planBoard({
    rows: [{
      name: stemOf(out),
      method,
      inputs: {},
      base: { model: base },
      models: models.map((model, i) => ({ input: { model }, params: many.modelParams[i]! })),
      multipliers,
      ...(planParams ? { params: planParams } : {}),
      ...(dtype ? { dtype } : {}),
      discard: edits.discard,
      replace: edits.replace,
      outputs: targets.map((path, i) => {
        const f = format ?? outputFormatForPath(path);
        return { path, format: f, metadata: metadataFor(multipliers[i]!, f) };
      }),
    }],
  });
  const stats = plan.stats[0]!;
  const outputs = plan.passes.flatMap((p) => p.outputs);
  const missing = (stats.missingByModel ?? []).flatMap((n, i) => (n > 0 ? [`model ${i + 1} (${basename(modelPaths[i]!)}) lacks ${n} float key${n === 1 ? "" : "s"} of the base: those keep the base's values`] : []));
  const report = {
    dryRun,
    inputs: [
      { slot: "base" as const, path: basePath, bytes: base.size },
      ...models.map((m, i) => ({ slot: "model" as const, index: i, path: modelPaths[i]!, bytes: m.size })),
    ],
    outputs: outputs.map((o) => ({ path: o.path, multiplier: o.multiplier, bytes: o.layout.size })),
    method: method.name as MethodName,
    engine,
    bytesRead: plan.bytesToRead,
    bytesWritten: plan.bytesToWrite,
    stats,
    ...(edits.vae ? { vae: edits.vae } : {}),
    renamedKeys: [base, ...models].flatMap((m, i) => (m.renamedKeys ? [{ slot: i === 0 ? "base" as const : "model" as const, ...(i > 0 ? { index: i - 1 } : {}), path: m.path, keys: m.renamedKeys }] : [])),
    missingKeys: [],
    warnings: missing,
  };
  return finishMerge(report, plan, configs, options, { engine, threads, isa, overwrite, dryRun }, started);
}
