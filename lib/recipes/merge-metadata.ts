/**
 * The recipe metadata of a `merge()` over a base and a list of models (ties, dare, dare-ties,
 * model-stock): the same keys as every other output (metadata.ts), with the base and each model
 * pinned by sha256, each model's weight and own parameters, and the row's parameters, so
 * `reproduce` rebuilds the file bit for bit and A1111-style tools show the method and models.
 */
import { createHash } from "node:crypto";
import { basename } from "node:path";
import type { OutputDtype } from "../dtypes";
import type { OutputFormat } from "../formats/output";
import { getFileHashes, type HashCache } from "../library/hash-cache";
import type { MergeProgress } from "../merge";
import type { MethodName } from "../methods/registry";
import type { ModelFile } from "../model";
import { outputMetadata, type InputIdentity } from "./metadata";
import { MODEL_WEIGHT_PARAM, blockMapOf, type RecipeInput, type RecipeModel, type RecipeRow } from "./types";

export interface ManyMergeMetadataOptions {
  rowName: string;
  method: MethodName;
  base: ModelFile;
  models: readonly ModelFile[];
  /** Each model's own values (its weight under "weight", then its other per-model parameters). */
  modelValues: readonly Readonly<Record<string, number>>[];
  multipliers: readonly number[];
  rowParams: Pick<RecipeRow, "params" | "weights" | "blocks">;
  dtype: OutputDtype | undefined;
  vae?: { path: string; model: ModelFile };
  discard?: string | string[];
  prune?: boolean;
  /** The user's own metadata, kept in every output. */
  metadata?: Record<string, string>;
  /** False: no recipe keys (the user keeps recipes private). */
  recipeMetadata?: boolean;
  /** A dry run hashes nothing: stand-ins of the same length give the same header sizes. */
  dryRun: boolean;
  cache: HashCache;
  signal?: AbortSignal;
  onProgress?: (progress: MergeProgress) => void;
}

function placeholderHashes(path: string): { sha256: string; legacy: string } {
  const sha256 = createHash("sha256").update(`tensormerge dry run ${path}`).digest("hex");
  return { sha256, legacy: sha256.slice(0, 8) };
}

/**
 * Hashes the inputs (from the cache when it knows them) and returns each output's metadata.
 *
 * @example
 * const metadataFor = await manyMergeMetadata({ rowName: "ties", method: "ties", base, models, … });
 * metadataFor(1, "safetensors"); // { format: "pt", sd_merge_recipe: "…", tensormerge_recipe: "…" }
 */
export async function manyMergeMetadata(o: ManyMergeMetadataOptions): Promise<(multiplier: number, format: OutputFormat) => Record<string, string>> {
  const user = o.metadata ?? {};
  if (o.recipeMetadata === false) return (_, format) => (format === "ckpt" ? { ...user } : { format: "pt", ...user });
  const identity = async (model: ModelFile): Promise<InputIdentity> => {
    const started = Date.now();
    const onProgress = o.onProgress && ((bytesDone: number, bytesTotal: number) => o.onProgress!({
      phase: "hashing", path: model.path, bytesDone, bytesTotal, fraction: bytesTotal ? bytesDone / bytesTotal : 1, elapsedSeconds: (Date.now() - started) / 1000,
    }));
    const h = o.dryRun ? placeholderHashes(model.path) : await getFileHashes(model.path, { cache: o.cache, ...(o.signal ? { signal: o.signal } : {}), ...(onProgress ? { onProgress } : {}) });
    return { sha256: h.sha256, legacy: h.legacy, name: basename(model.path), metadata: model.metadata, virtual: false };
  };
  const pinned = (id: InputIdentity): RecipeInput => ({ kind: "model", ref: id.name, sha256: id.sha256, legacy: id.legacy! });
  const base = await identity(o.base);
  const models: InputIdentity[] = [];
  for (const m of o.models) models.push(await identity(m));
  const vae = o.vae ? await identity(o.vae.model) : undefined;
  const entries: RecipeModel[] = models.map((id, i) => {
    const { [MODEL_WEIGHT_PARAM]: weight, ...params } = o.modelValues[i] ?? {};
    return { input: pinned(id), ...(weight !== undefined ? { weight } : {}), ...(Object.keys(params).length ? { params } : {}) };
  });
  const row: RecipeRow = {
    name: o.rowName, method: o.method, inputs: {}, base: pinned(base), models: entries, multipliers: [...o.multipliers], ...o.rowParams,
    ...(o.dtype ? { dtype: o.dtype } : {}), format: "safetensors", save: true,
    ...(o.discard !== undefined ? { discard: typeof o.discard === "string" ? [o.discard] : [...o.discard] } : {}),
    ...(o.prune ? { prune: true } : {}),
    ...(vae ? { vae: pinned(vae) } : {}),
    ...(o.metadata ? { metadata: o.metadata } : {}),
  };
  // .ckpt outputs stay exactly `{"state_dict": …}`, as the classic tool writes them.
  return (multiplier, format) => format === "ckpt" ? { ...user } : outputMetadata(
    {
      row: { ...row, format }, multiplier, format, inputs: {}, base, models, ...(vae ? { vae } : {}), isInpainting: false, isInstructPix2Pix: false,
      // Block values resolve on the base's map, as the merge and `run` resolve them.
      ...(row.blocks ? { blockMap: blockMapOf(o.base) } : {}),
    },
    { recipe: true },
  );
}
