/**
 * Key-set edits the classic merger offers beside the merge itself, as pure functions of headers:
 *
 * - **Bake in a VAE**: every `first_stage_model.*` tensor of A that the VAE file has is taken
 *   from the VAE file instead. A standalone VAE's keys carry no prefix (`encoder.conv_in.weight`
 *   → `first_stage_model.encoder.conv_in.weight`); a file whose keys already have the prefix (a
 *   whole checkpoint) gives its `first_stage_model.*` tensors. As in A1111's `load_vae_dict`,
 *   `loss.*` (the training discriminator) and the EMA counters are ignored, and only keys A has
 *   are replaced: A's VAE keys the file lacks keep A's values (`missing`), keys A lacks are not
 *   added (`ignored`). A shape that differs is an error (SHAPE_MISMATCH); so is a VAE file that
 *   matches none of A's VAE keys, or an A without a VAE (INVALID_ARGUMENT).
 * - **Discard**: patterns are JavaScript regular expressions, matched anywhere in the key
 *   (`RegExp.prototype.test`, like A1111's `re.search`): `^model_ema\.` drops the EMA copy,
 *   `position_ids` every CLIP position-id buffer. Several patterns drop the union. Regexes rather
 *   than globs so recipes written for the classic tool keep working.
 * - **Prune**: keeps what inference needs: drops the EMA copy and counters (`model_ema.*`), the
 *   SD 1.x/2.x scheduler buffers (`betas`, `alphas_cumprod`, …: the loader rebuilds them from the
 *   config) and the VAE's training loss (`first_stage_model.loss.*`). Pruning the official SD 1.5
 *   checkpoint gives exactly the key set of the usual community "pruned" files.
 *
 * Order, as in the classic tool: the VAE is baked first, then keys are pruned and discarded; a
 * dropped key is dropped even if the VAE would have replaced it.
 */
import { MergeError } from "../errors";
import { isCopiedAsIs, sameShape } from "../keys";
import { shapeToString, type ModelFile, type TensorInfo } from "../model";

export const VAE_PREFIX = "first_stage_model.";

export interface KeyEditOptions {
  /** Model A: defines the output's keys. */
  a: ModelFile;
  /** A VAE file to bake in. */
  vae?: ModelFile;
  /** Regular expressions (source text); a key matching any of them is dropped. */
  discard?: string | readonly string[];
  /** Drop EMA, scheduler buffers and training-only keys. */
  prune?: boolean;
}

export interface VaeBakeReport {
  path: string;
  /** "" for a standalone VAE, "first_stage_model." for a file whose keys carry the prefix. */
  sourcePrefix: string;
  /** A's VAE keys replaced by the file's tensors (before prune/discard). */
  replaced: number;
  /** A's VAE keys the file lacks: A's values are kept. */
  missing: string[];
  /** The file's VAE keys A lacks (output names): not added. */
  ignored: string[];
  /** Keys of the file skipped as training-only (loss.*, EMA counters). */
  skipped: string[];
  /** Tensors whose dtype differs from A's (the planner converts them to the output dtype). */
  dtypeChanges: number;
}

export interface KeyEditPlan {
  /** A's keys that are not written, in A's order. */
  drop: string[];
  /** Why each dropped key is dropped. */
  dropReason: Map<string, "prune" | "discard">;
  /** Output key → the VAE file's tensor that replaces A's (only keys that are written). */
  fromVae: Map<string, TensorInfo>;
  /**
   * The same edits in the shapes `planMerge()` (lib/plan.ts) takes: `discard` and `replace`.
   * @example planMerge({ ...request, discard: edits.discard, replace: edits.replace })
   */
  discard: (name: string) => boolean;
  replace: Map<string, { model: ModelFile; tensor: TensorInfo }>;
  vae: VaeBakeReport | null;
  /** Discard patterns that matched nothing (likely typos). */
  unusedPatterns: string[];
}

/** Compiles discard patterns; an invalid one is INVALID_ARGUMENT naming it. */
export function compileDiscardPatterns(patterns: string | readonly string[] | undefined): RegExp[] {
  const list = patterns === undefined ? [] : typeof patterns === "string" ? [patterns] : [...patterns];
  return list.filter((p) => p.length > 0).map((p) => {
    try {
      return new RegExp(p);
    } catch (e) {
      throw new MergeError("INVALID_ARGUMENT", `discard pattern ${JSON.stringify(p)} is not a valid regular expression (${(e as Error).message})`);
    }
  });
}

/** SD 1.x/2.x scheduler buffers: top-level names that keys.ts copies as they are (`betas`, …). */
function isSchedulerBuffer(name: string): boolean {
  return !name.includes(".") && isCopiedAsIs(name, "F32");
}

/** True for keys inference does not need (see the module comment). */
export function isPrunable(name: string): boolean {
  return name.startsWith("model_ema.") || isSchedulerBuffer(name) || name.startsWith(`${VAE_PREFIX}loss.`);
}

function isVaeTrainingKey(name: string): boolean {
  return name.startsWith("loss.") || name === "model_ema.decay" || name === "model_ema.num_updates";
}

/** Maps a VAE file's tensors to output names. */
export function vaeTensorsByOutputName(vae: ModelFile): { byName: Map<string, TensorInfo>; sourcePrefix: string; skipped: string[] } {
  const prefixed = vae.tensors.some((t) => t.name.startsWith(VAE_PREFIX));
  const byName = new Map<string, TensorInfo>();
  const skipped: string[] = [];
  for (const t of vae.tensors) {
    if (prefixed) {
      if (!t.name.startsWith(VAE_PREFIX)) continue; // the rest of a whole checkpoint
      if (isVaeTrainingKey(t.name.slice(VAE_PREFIX.length))) skipped.push(t.name);
      else byName.set(t.name, t);
    } else if (isVaeTrainingKey(t.name)) {
      skipped.push(t.name);
    } else {
      byName.set(VAE_PREFIX + t.name, t);
    }
  }
  return { byName, sourcePrefix: prefixed ? VAE_PREFIX : "", skipped };
}

function bakeVae(a: ModelFile, vae: ModelFile): { fromVae: Map<string, TensorInfo>; report: VaeBakeReport } {
  const aVaeKeys = a.tensors.filter((t) => t.name.startsWith(VAE_PREFIX));
  if (aVaeKeys.length === 0) {
    throw new MergeError("INVALID_ARGUMENT", `${a.path}: has no VAE (${VAE_PREFIX}*) to replace with ${vae.path}`, { path: a.path });
  }
  const { byName, sourcePrefix, skipped } = vaeTensorsByOutputName(vae);
  const fromVae = new Map<string, TensorInfo>();
  const missing: string[] = [];
  let dtypeChanges = 0;
  for (const ta of aVaeKeys) {
    const tv = byName.get(ta.name);
    if (!tv) {
      missing.push(ta.name);
      continue;
    }
    if (!sameShape(ta.shape, tv.shape)) {
      throw new MergeError("SHAPE_MISMATCH", `VAE ${vae.path} does not fit ${a.path}: ${tv.name} is ${shapeToString(tv.shape)}, ${ta.name} is ${shapeToString(ta.shape)}`, { path: vae.path, tensor: tv.name });
    }
    if (tv.dtype !== ta.dtype) dtypeChanges++;
    fromVae.set(ta.name, tv);
  }
  if (fromVae.size === 0) {
    throw new MergeError("INVALID_ARGUMENT", `${vae.path}: none of its ${vae.tensors.length} tensors is one of ${a.path}'s VAE tensors (is it a VAE file?)`, { path: vae.path });
  }
  const ignored = [...byName.keys()].filter((k) => !a.byName.has(k));
  return { fromVae, report: { path: vae.path, sourcePrefix, replaced: fromVae.size, missing, ignored, skipped, dtypeChanges } };
}

/**
 * Plans the key-set edits of a merge: which of A's keys to drop and which to take from a VAE file.
 *
 * @example
 * const edits = planKeyEdits({ a, vae: await openModel("vae-ft-mse-840000-ema-pruned.safetensors"), prune: true });
 * edits.drop;          // ["alphas_cumprod", …, "model_ema.decay", …]
 * edits.fromVae.size;  // 248
 */
export function planKeyEdits(options: KeyEditOptions): KeyEditPlan {
  const { a } = options;
  const patterns = compileDiscardPatterns(options.discard);
  const baked = options.vae ? bakeVae(a, options.vae) : null;
  const used = new Set<RegExp>();
  const drop: string[] = [];
  const dropReason = new Map<string, "prune" | "discard">();
  for (const t of a.tensors) {
    if (options.prune && isPrunable(t.name)) {
      drop.push(t.name);
      dropReason.set(t.name, "prune");
      continue;
    }
    const hit = patterns.find((re) => re.test(t.name));
    if (hit) {
      used.add(hit);
      drop.push(t.name);
      dropReason.set(t.name, "discard");
    }
  }
  // A pattern that only matched pruned keys still did its job; count it as used.
  for (const re of patterns) if (!used.has(re) && drop.some((k) => re.test(k))) used.add(re);
  const fromVae = new Map<string, TensorInfo>();
  if (baked) for (const [k, t] of baked.fromVae) if (!dropReason.has(k)) fromVae.set(k, t);
  const dropped = new Set(drop);
  const vaeModel = options.vae;
  const replace = new Map<string, { model: ModelFile; tensor: TensorInfo }>();
  if (vaeModel) for (const [k, t] of fromVae) replace.set(k, { model: vaeModel, tensor: t });
  return {
    drop,
    dropReason,
    fromVae,
    discard: (name: string) => dropped.has(name),
    replace,
    vae: baked?.report ?? null,
    unusedPatterns: patterns.filter((re) => !used.has(re)).map((re) => re.source),
  };
}
