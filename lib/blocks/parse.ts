/**
 * The block value forms users type, turned into one value per block of a map:
 * - SuperMerger: every block's value, comma-separated, the first being BASE (26 for SD 1.x / 2.x,
 *   20 for SDXL, 61 for FLUX.1 with CLIP first);
 * - sd-meh: the same list without its first value, plus a separate base value (`options.base`);
 * - a SuperMerger preset name (GRAD_V, SMOOTHSTEP*2, …; sd-meh's names too), for the 26- and
 *   20-block maps;
 * - on SDXL, a 26-value SD list (typed or a preset) or a 25-value one with a base, converted as
 *   SuperMerger's `weighttoxl` does: IN09…IN11 and OUT09…OUT11 are dropped.
 *
 * @example
 * const v = parseBlockValues("GRAD_V", SD_BLOCKS);
 * v.values[0];          // 0 (BASE)
 * blockValue(v, "OUT11"); // 1
 * parseBlockValues("1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0", SD_BLOCKS, { base: 0.5 }).form; // "list-with-base"
 */
import { MergeError } from "../errors";
import type { BlockMap } from "./maps";
import { nearestPresetNames, presetName, BLOCK_PRESETS } from "./presets";

export type BlockValuesForm = "list" | "list-with-base" | "preset" | "sd-list-on-sdxl";

export interface BlockValues {
  /** The map the values are for ("sd", "sdxl", "flux", "sd3"). */
  map: BlockMap["id"];
  /** The map's block names, in order. */
  names: readonly string[];
  /** One value per name, same order. */
  values: readonly number[];
  /** How the values were given. */
  form: BlockValuesForm;
  /** The preset's SuperMerger name, when a preset was given. */
  preset?: string;
}

export interface ParseBlockOptions {
  /** BASE (CLIP on FLUX / SD 3) for a list without its first value, as sd-meh takes it; with a preset, it replaces the preset's BASE. */
  base?: number;
  /** How messages name the setting, e.g. "--blocks" (default "block values"). */
  what?: string;
}

/** SD list index (BASE, IN00…IN11, M00, OUT00…OUT11) of each SDXL block, as SuperMerger's weighttoxl takes them. */
const SD_TO_SDXL = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22];
const SD_COUNT = 26;

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

function formsText(map: BlockMap): string {
  const n = map.names.length;
  const first = map.names[0]!;
  const forms = [`${n} comma-separated values (${map.names.slice(0, 3).join(", ")}, …, ${map.names[n - 1]}; the first is ${first})`, `${n - 1} values without ${first} plus a separate base value`];
  if (map.id === "sd" || map.id === "sdxl") forms.push("a preset name (GRAD_V, FLAT_25, SMOOTHSTEP, ALL_A, …)");
  if (map.id === "sdxl") forms.push(`a 26-value SD 1.x list or 25 + base (IN09…IN11 and OUT09…OUT11 are dropped, as SuperMerger does)`);
  return forms.join("; or ");
}

function invalid(message: string): MergeError {
  return new MergeError("INVALID_ARGUMENT", message);
}

function finish(map: BlockMap, values: number[], form: BlockValuesForm, preset?: string): BlockValues {
  return { map: map.id, names: map.names, values: Object.freeze(values), form, ...(preset !== undefined ? { preset } : {}) };
}

function checkBase(base: number | undefined, what: string): void {
  if (base !== undefined && !Number.isFinite(base)) throw invalid(`${what}: the base value must be a finite number, got ${base}`);
}

/**
 * Parses a block value list or preset for a map. Wrong counts, non-numbers and unknown presets
 * are INVALID_ARGUMENT naming the forms the architecture accepts (and, for presets, the nearest names).
 */
export function parseBlockValues(spec: string | readonly number[], map: BlockMap, options: ParseBlockOptions = {}): BlockValues {
  const what = options.what ?? "block values";
  const { base } = options;
  checkBase(base, what);
  const n = map.names.length;

  let values: number[];
  if (typeof spec === "string") {
    const text = spec.trim();
    if (text === "") throw invalid(`${what} is empty; ${map.label} takes ${formsText(map)}`);
    if (!text.includes(",") && !NUMBER.test(text)) return parsePreset(text, map, base, what);
    const tokens = text.split(",").map((t) => t.trim());
    values = tokens.map((t, i) => {
      if (!NUMBER.test(t)) throw invalid(`${what}: value ${i + 1} (${JSON.stringify(t)}) is not a number; ${map.label} takes ${formsText(map)}`);
      return Number(t);
    });
  } else {
    values = [...spec];
    values.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v)) throw invalid(`${what}: value ${i + 1} (${String(v)}) is not a finite number`);
    });
  }

  const count = values.length;
  if (count === n) {
    if (base !== undefined) throw invalid(`${what}: ${n} values already include ${map.names[0]}; give ${n - 1} values with a separate base, or drop the base`);
    return finish(map, values, "list");
  }
  if (count === n - 1 && base !== undefined) return finish(map, [base, ...values], "list-with-base");
  if (map.id === "sdxl" && (count === SD_COUNT || (count === SD_COUNT - 1 && base !== undefined))) {
    if (count === SD_COUNT && base !== undefined) throw invalid(`${what}: 26 values already include BASE; drop the base`);
    const full = count === SD_COUNT ? values : [base!, ...values];
    return finish(map, SD_TO_SDXL.map((i) => full[i]!), "sd-list-on-sdxl");
  }
  const hint = count === n - 1 ? ` (${n - 1} values, sd-meh's form, need a separate base value)` : "";
  throw invalid(`${what}: ${map.label} takes ${n} values, got ${count}${hint}; give ${formsText(map)}`);
}

function parsePreset(text: string, map: BlockMap, base: number | undefined, what: string): BlockValues {
  const name = presetName(text);
  if (name === undefined) {
    throw invalid(`${what}: no preset named ${JSON.stringify(text)}; nearest: ${nearestPresetNames(text).join(", ")} (all: ${[...BLOCK_PRESETS.keys()].join(", ")})`);
  }
  if (map.id !== "sd" && map.id !== "sdxl") {
    throw invalid(`${what}: preset ${name} is a SuperMerger UNet list (SD 1.x / 2.x, SDXL); ${map.label} takes ${formsText(map)}`);
  }
  const sd = [...BLOCK_PRESETS.get(name)!];
  if (base !== undefined) sd[0] = base;
  const values = map.id === "sdxl" ? SD_TO_SDXL.map((i) => sd[i]!) : sd;
  return finish(map, values, "preset", name);
}

/** The value of one block. */
export function blockValue(values: BlockValues, block: string): number {
  const i = values.names.indexOf(block);
  if (i < 0) throw invalid(`no block ${block} in ${values.map} (blocks: ${values.names.join(", ")})`);
  return values.values[i]!;
}

/**
 * The value for a tensor: its block's value, or undefined for a tensor in no block (not merged,
 * copied from A). `values` must have been parsed for `map`.
 */
export function valueForKey(values: BlockValues, map: BlockMap, key: string): number | undefined {
  if (values.map !== map.id || values.names.length !== map.names.length) {
    throw invalid(`block values for ${values.map} (${values.names.length} blocks) used with the ${map.label} map`);
  }
  const block = map.blockOf(key);
  return block === null ? undefined : values.values[map.names.indexOf(block)];
}
