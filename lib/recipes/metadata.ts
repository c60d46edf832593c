/**
 * Recipes that travel with the model. Every output gets, in its `__metadata__` (the safetensors
 * header's, or for a .ckpt the archive's top-level dict, where the ckpt writer drops `format`):
 *
 * - `format`: "pt", as the classic tool writes;
 * - `sd_merge_recipe` and `sd_merge_models`, exactly as A1111's merger (modules/extras.py,
 *   `run_modelmerger`) writes them, so the tools that show those keys show ours:
 *   `sd_merge_recipe` is `json.dumps` of {type, primary/secondary/tertiary_model_hash (full
 *   sha256), interp_method, multiplier, save_as_half, custom_name, config_source, bake_in_vae,
 *   discard_weights, is_inpainting, is_instruct_pix2pix}; `sd_merge_models` is `json.dumps` of
 *   {sha256: {name, legacy_hash, sd_merge_recipe}} for each input, updated with each input's own
 *   `sd_merge_models`, so ancestors are flattened. Nested values are the inputs' values as
 *   A1111 decodes them (a string starting with "{" is parsed), re-encoded the way Python would.
 *   `type` is "tensormerge" rather than "webui": it names the tool that wrote the file. A row
 *   with parameters beyond its multiplier adds, after those keys, what SuperMerger's `sd_merge_recipe`
 *   shows for its block merges (scripts/mergers/mergers.py: `mbw`, `weights_alpha` the block
 *   values as comma-separated text, `weights_alpha_orig` what was typed, a preset name or a
 *   list; `base_beta`; the same for β), and what SuperMerger has no key for: `key_weights_alpha`
 *   (and `_beta`), the per-key values as the `--weight` arguments read, and `clamp`. See
 *   `parameterFields`;
 * - `tensormerge_recipe`: our complete recipe for this output, a JSON recipe (json.ts) whose
 *   rows are this output's ancestors and, last, the row that made it, every ingredient pinned by
 *   sha256. A row that produced a saved file records it (`produces`), so `reproduce` can use the
 *   file when it has it and recompute the row when it does not.
 *
 * The metadata of an output is a function of its row and its inputs' identities (hashes, names,
 * metadata), never of time or paths, so a chained board run in one pass writes the same bytes as
 * its rows run one by one, and `reproduce` rebuilds the same bytes. An input that is an unsaved
 * row has no file: it is identified by the sha256 of its own recipe, with no legacy hash.
 */
import { createHash } from "node:crypto";
import { parseBlockValues, type BlockMap } from "../blocks";
import type { OutputFormat } from "../formats/output";
import type { ModelSlot } from "../methods/define";
import { parseJsonRecipe, recipeToJson } from "./json";
import { a1111MetadataValue, pyDict, pyDumps, pyFloat, type PyJson } from "./pyjson";
import { SLOTS, rowParamFields, type Recipe, type RecipeInput, type RecipeRow } from "./types";

export const RECIPE_METADATA_KEY = "tensormerge_recipe";

/** What a row's output needs to know about one of its inputs. */
export interface InputIdentity {
  sha256: string;
  /** A1111's old 8-hex model hash; null for an unsaved row. */
  legacy: string | null;
  /** The file name (A1111 records the checkpoint's name with its extension). */
  name: string;
  /** The input's `__metadata__` (for an unsaved row: what it would carry as a safetensors file). */
  metadata: Record<string, string>;
  /** An unsaved row: no file. */
  virtual: boolean;
}

/** One output of one row. */
export interface OutputStep {
  row: RecipeRow;
  multiplier: number;
  format: OutputFormat;
  inputs: Partial<Record<ModelSlot, InputIdentity>>;
  vae?: InputIdentity;
  /** A has 9 input channels and B 4 (A1111's result_is_inpainting_model). */
  isInpainting: boolean;
  /** A has 8 input channels and B 4. */
  isInstructPix2Pix: boolean;
  /**
   * The block map of A's architecture, to write a row's block values as numbers (a preset's
   * values depend on it); without one only what was typed is written.
   */
  blockMap?: BlockMap | null;
}

const INTERP_METHOD = new Map<string, string>([
  ["weighted-sum", "Weighted sum"],
  ["add-difference", "Add difference"],
  ["no-interpolation", "No interpolation"],
  ["sigmoid", "Sigmoid"],
  ["inverse-sigmoid", "Inverse sigmoid"],
]);

/**
 * A1111's config_source radio: 0 "A, B or C", 1 "B", 2 "C", 3 "Don't". It has no "A only";
 * "A, B or C" tries A first, the closest.
 */
const A1111_CONFIG_SOURCE = new Map<string, number>([["abc", 0], ["a", 0], ["b", 1], ["c", 2], ["none", 3]]);

/** A metadata value, looked up among the object's own keys only (metadata comes from files). */
function ownValue(metadata: Record<string, string>, key: string): string | undefined {
  return Object.hasOwn(metadata, key) ? metadata[key] : undefined;
}

/** SuperMerger's name for a parameter's row value: `base_alpha`, `base_beta`. */
const baseKey = (name: string) => `base_${name}`;

/**
 * The row's parameters beyond its multiplier, as SuperMerger's `sd_merge_recipe` shows them
 * where it has a key (block values: `mbw`, `weights_<p>` resolved, `weights_<p>_orig` as
 * typed; a second parameter's row value: `base_<p>`), then ours: `key_weights_<p>` (the
 * per-key values, each "REGEX=VALUE" as `--weight` reads it) and `clamp`. Empty for a row with
 * only a multiplier, so such recipes stay exactly A1111's.
 */
function parameterFields(step: OutputStep): [string, PyJson][] {
  const { row } = step;
  const fields: [string, PyJson][] = [];
  const blocks = Object.entries(row.blocks ?? {});
  if (blocks.length) {
    fields.push(["mbw", true]);
    for (const [name, spec] of blocks) {
      const typed = typeof spec === "string" ? spec : spec.map(String).join(",");
      let resolved: string | null = null;
      if (step.blockMap) {
        try {
          resolved = parseBlockValues(spec, step.blockMap).values.map(String).join(",");
        } catch {
          resolved = null; // the planner refuses such a row before anything is written
        }
      }
      fields.push([`weights_${name}`, resolved], [`weights_${name}_orig`, typed]);
    }
  }
  for (const [name, value] of Object.entries(row.params ?? {})) fields.push([baseKey(name), pyFloat(value)]);
  for (const [name, list] of Object.entries(row.weights ?? {})) {
    if (list.length) fields.push([`key_weights_${name}`, list.map((w) => `${w.pattern}=${w.value}`)]);
  }
  if (row.clamp) fields.push(["clamp", true]);
  return fields;
}

/** A1111's `sd_merge_recipe` object for one output. */
function a1111Recipe(step: OutputStep): PyJson {
  const hash = (s: ModelSlot) => step.inputs[s]?.sha256 ?? null;
  return pyDict([
    ["type", "tensormerge"],
    ["primary_model_hash", hash("a")],
    ["secondary_model_hash", hash("b")],
    ["tertiary_model_hash", hash("c")],
    ["interp_method", INTERP_METHOD.get(step.row.method) ?? step.row.method],
    ["multiplier", pyFloat(step.multiplier)],
    ["save_as_half", step.row.dtype === "fp16"],
    ["custom_name", step.row.name],
    ["config_source", { int: String(A1111_CONFIG_SOURCE.get(step.row.config ?? "abc") ?? 0) }],
    ["bake_in_vae", step.vae ? step.vae.name : "None"],
    ["discard_weights", (step.row.discard ?? []).join("|")],
    ["is_inpainting", step.isInpainting],
    ["is_instruct_pix2pix", step.isInstructPix2Pix],
    ...parameterFields(step),
  ]);
}

/** A1111's `sd_merge_models`: inputs keyed by sha256, each input's own models merged in. */
function a1111Models(step: OutputStep): PyJson {
  const models = new Map<string, PyJson>();
  for (const slot of SLOTS) {
    const id = step.inputs[slot];
    if (!id) continue;
    models.set(id.sha256, pyDict([
      ["name", id.name],
      ["legacy_hash", id.legacy],
      ["sd_merge_recipe", a1111MetadataValue(ownValue(id.metadata, "sd_merge_recipe")) ?? null],
    ]));
    const theirs = a1111MetadataValue(ownValue(id.metadata, "sd_merge_models"));
    if (theirs instanceof Map) for (const [k, v] of theirs) models.set(k, v);
  }
  return models;
}

/** The recipe embedded in an input, if it carries a valid one. */
export function embeddedRecipe(metadata: Record<string, string>): Recipe | undefined {
  const text = ownValue(metadata, RECIPE_METADATA_KEY);
  if (text === undefined) return undefined;
  try {
    return parseJsonRecipe(text);
  } catch {
    return undefined;
  }
}

/**
 * The complete recipe of one output: its inputs' embedded recipes (their rows, deduplicated,
 * names made unique), then its own row. Inputs without one are pinned models.
 */
export function lineageRecipe(step: OutputStep): Recipe {
  const rows: RecipeRow[] = [];
  const byKey = new Map<string, number>();
  const names = new Set<string>([step.row.name]);
  const uniqueName = (name: string) => {
    let n = name;
    for (let k = 2; names.has(n); k++) n = `${name}~${k}`;
    names.add(n);
    return n;
  };
  const pinned = (id: InputIdentity): RecipeInput => ({ kind: "model", ref: id.name, sha256: id.sha256, ...(id.legacy !== null ? { legacy: id.legacy } : {}) });
  const add = (row: RecipeRow): number => {
    // Rows are plain data built by the same code, so their JSON is a canonical key; inputs that
    // are rows point at rows already deduplicated, so equal subtrees get equal keys.
    const key = JSON.stringify({ ...row, name: "" });
    const known = byKey.get(key);
    if (known !== undefined) return known;
    rows.push({ ...row, name: uniqueName(row.name) });
    byKey.set(key, rows.length - 1);
    return rows.length - 1;
  };
  const inputOf = (id: InputIdentity): RecipeInput => {
    const embedded = embeddedRecipe(id.metadata);
    if (!embedded) return pinned(id);
    const map: number[] = [];
    embedded.rows.forEach((r, k) => {
      const inputs: RecipeRow["inputs"] = {};
      for (const s of SLOTS) {
        const input = r.inputs[s];
        if (input) inputs[s] = input.kind === "row" ? { kind: "row", row: map[input.row]! } : input;
      }
      const last = k === embedded.rows.length - 1;
      const produces = last && !id.virtual ? { sha256: id.sha256, legacy: id.legacy ?? "", name: id.name } : r.produces;
      const { output: _output, produces: _produces, ...rest } = r;
      map.push(add({ ...rest, inputs, format: "safetensors", save: false, ...(produces ? { produces } : {}) }));
    });
    return { kind: "row", row: map[map.length - 1]! };
  };
  const inputs: RecipeRow["inputs"] = {};
  for (const slot of SLOTS) {
    const id = step.inputs[slot];
    if (id) inputs[slot] = inputOf(id);
  }
  const { row } = step;
  rows.push({
    name: row.name,
    method: row.method,
    inputs,
    multipliers: [step.multiplier],
    ...rowParamFields(row),
    ...(row.dtype ? { dtype: row.dtype } : {}),
    format: step.format,
    save: true,
    ...(row.discard?.length ? { discard: [...row.discard] } : {}),
    ...(row.prune ? { prune: true } : {}),
    ...(step.vae ? { vae: pinned(step.vae) } : {}),
    ...(row.metadata && Object.keys(row.metadata).length ? { metadata: { ...row.metadata } } : {}),
  });
  return { variables: [], rows };
}

/**
 * The `__metadata__` of one output. `recipe: false` leaves the recipe keys out (for people who
 * keep recipes private). `.ckpt` outputs carry the same keys in the archive's top-level
 * `__metadata__` dict (next to `state_dict`, which loaders take and which is all they use), so a
 * recipe that goes through a `.ckpt` row can still be reproduced; the classic tool writes none.
 *
 * @example
 * outputMetadata(step, { recipe: true }); // { format: "pt", sd_merge_recipe: "{\"type\": …}", … }
 */
export function outputMetadata(step: OutputStep, options: { recipe: boolean }): Record<string, string> {
  const metadata: Record<string, string> = { ...(step.row.metadata ?? {}) };
  metadata.format = "pt";
  if (!options.recipe) return metadata;
  metadata.sd_merge_recipe = pyDumps(a1111Recipe(step));
  metadata.sd_merge_models = pyDumps(a1111Models(step));
  metadata[RECIPE_METADATA_KEY] = JSON.stringify(recipeToJson(lineageRecipe(step)));
  return metadata;
}

/** The identity of an unsaved row: no file, so its recipe stands for it. */
export function virtualIdentity(step: OutputStep): InputIdentity {
  const metadata = outputMetadata({ ...step, format: "safetensors" }, { recipe: true });
  const sha256 = createHash("sha256").update(metadata[RECIPE_METADATA_KEY]!).digest("hex");
  return { sha256, legacy: null, name: step.row.name, metadata, virtual: true };
}
