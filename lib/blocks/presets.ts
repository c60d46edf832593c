/**
 * Named block weight presets: SuperMerger's 26-value lists (BASE, IN00…IN11, M00, OUT00…OUT11),
 * exactly as published (see supermerger-presets.ts), and the names sd-meh gives the same lists.
 *
 * SuperMerger has no SDXL or FLUX preset list: on SDXL it converts a 26-value list (preset or typed)
 * with `weighttoxl` (keep BASE, IN00…IN08, M00, OUT00…OUT08; drop IN09…IN11 and OUT09…OUT11),
 * which parse.ts does too. FLUX and SD 3 lists are typed in full.
 *
 * @example
 * presetValues("GRAD_V")?.[1]; // 1 (IN00)
 * nearestPresetNames("GRAD-B"); // ["GRAD_V", "GRAD_A", …]
 */
import { SUPERMERGER_PRESETS_TSV } from "./supermerger-presets";

/** Every SuperMerger preset, in the published order. */
export const BLOCK_PRESETS: ReadonlyMap<string, readonly number[]> = new Map(
  SUPERMERGER_PRESETS_TSV.split("\n").map((line) => {
    const [name, list] = line.split("\t") as [string, string];
    return [name, Object.freeze(list.split(",").map(Number))] as const;
  }),
);

/**
 * sd-meh's names for the same lists (s1dlx/meh `sd_meh/presets.py`, whose values are SuperMerger's):
 * typing either name gives the same values.
 */
export const PRESET_ALIASES: ReadonlyMap<string, string> = new Map([
  ["REVERSE_SMOOTHSTEP", "REVERSE-SMOOTHSTEP"],
  ["2SMOOTHSTEP", "SMOOTHSTEP*2"], ["2R_SMOOTHSTEP", "R_SMOOTHSTEP*2"],
  ["3SMOOTHSTEP", "SMOOTHSTEP*3"], ["3R_SMOOTHSTEP", "R_SMOOTHSTEP*3"],
  ["4SMOOTHSTEP", "SMOOTHSTEP*4"], ["4R_SMOOTHSTEP", "R_SMOOTHSTEP*4"],
  ["HALF_SMOOTHSTEP", "SMOOTHSTEP/2"], ["HALF_R_SMOOTHSTEP", "R_SMOOTHSTEP/2"],
  ["ONE_THIRD_SMOOTHSTEP", "SMOOTHSTEP/3"], ["ONE_THIRD_R_SMOOTHSTEP", "R_SMOOTHSTEP/3"],
  ["ONE_FOURTH_SMOOTHSTEP", "SMOOTHSTEP/4"], ["ONE_FOURTH_R_SMOOTHSTEP", "R_SMOOTHSTEP/4"],
]);

/** The canonical (SuperMerger) name of a preset as typed: exact, an sd-meh alias, or any letter case. */
export function presetName(typed: string): string | undefined {
  const t = typed.trim();
  if (BLOCK_PRESETS.has(t)) return t;
  if (PRESET_ALIASES.has(t)) return PRESET_ALIASES.get(t);
  const upper = t.toUpperCase();
  for (const name of BLOCK_PRESETS.keys()) if (name.toUpperCase() === upper) return name;
  for (const [alias, name] of PRESET_ALIASES) if (alias === upper) return name;
  return undefined;
}

/** A preset's 26 values, or undefined for an unknown name. */
export function presetValues(typed: string): readonly number[] | undefined {
  const name = presetName(typed);
  return name === undefined ? undefined : BLOCK_PRESETS.get(name);
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** The preset names closest to what was typed (edit distance, ignoring case), best first. */
export function nearestPresetNames(typed: string, count = 3): string[] {
  const t = typed.trim().toUpperCase();
  const names = [...BLOCK_PRESETS.keys(), ...PRESET_ALIASES.keys()];
  return names
    .map((name) => ({ name, d: editDistance(t, name.toUpperCase()) }))
    .sort((x, y) => x.d - y.d || x.name.localeCompare(y.name))
    .slice(0, count)
    .map((x) => x.name);
}
