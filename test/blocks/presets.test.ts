/**
 * SuperMerger's presets (hako-mikan/sd-webui-supermerger `scripts/mbwpresets.txt`): every value,
 * from the formulas the published lists follow (checked to the published digits) or, where no
 * formula is known, as explicit lists written out here from the published file.
 * Lists are BASE, then the 25 UNet blocks IN00…IN11, M00, OUT00…OUT11 at x = i / 24.
 */
import { strict as assert } from "node:assert";
import { BLOCK_PRESETS, nearestPresetNames, presetName, presetValues, PRESET_ALIASES } from "../../lib/blocks";

const PUBLISHED_ORDER = [
  "GRAD_V", "GRAD_A", "FLAT_25", "FLAT_75", "WRAP08", "WRAP12", "WRAP14", "WRAP16", "MID12_50", "OUT07", "OUT12", "OUT12_5",
  "RING08_SOFT", "RING08_5", "RING10_5", "RING10_3", "SMOOTHSTEP", "REVERSE-SMOOTHSTEP", "SMOOTHSTEP*2", "R_SMOOTHSTEP*2",
  "SMOOTHSTEP*3", "R_SMOOTHSTEP*3", "SMOOTHSTEP*4", "R_SMOOTHSTEP*4", "SMOOTHSTEP/2", "R_SMOOTHSTEP/2", "SMOOTHSTEP/3",
  "R_SMOOTHSTEP/3", "SMOOTHSTEP/4", "R_SMOOTHSTEP/4", "COSINE", "REVERSE_COSINE", "TRUE_CUBIC_HERMITE",
  "TRUE_REVERSE_CUBIC_HERMITE", "FAKE_CUBIC_HERMITE", "FAKE_REVERSE_CUBIC_HERMITE", "ALL_A", "ALL_B",
];

/** BASE 0, then f(x) for the 25 UNet blocks. */
const unet = (f: (x: number, i: number) => number, base = 0) => [base, ...Array.from({ length: 25 }, (_, i) => f(i / 24, i))];
const smoothstep = (x: number) => x * x * (3 - 2 * x);
/** A triangle wave: 0 → 1 → 0 → 1 … with period 2. */
const tri = (t: number) => {
  const m = t % 2;
  return m <= 1 ? m : 2 - m;
};
/** Cubic Hermite from (0, 0) to (1, 1) with both tangents m. */
const hermite = (x: number, m: number) => (x ** 3 - 2 * x ** 2 + x) * m + (-2 * x ** 3 + 3 * x ** 2) + (x ** 3 - x ** 2) * m;
/** Blocks k of the 25 are 1, the rest 0. */
const ones = (set: (i: number) => boolean) => unet((_, i) => (set(i) ? 1 : 0));

const FORMULAS: Record<string, number[]> = {
  GRAD_V: unet((x) => Math.abs(1 - 2 * x)),
  GRAD_A: unet((x) => 1 - Math.abs(1 - 2 * x)),
  FLAT_25: unet(() => 0.25),
  FLAT_75: unet(() => 0.75),
  SMOOTHSTEP: unet(smoothstep),
  "REVERSE-SMOOTHSTEP": unet((x) => 1 - smoothstep(x)),
  COSINE: unet((x) => (1 + Math.cos(Math.PI * x)) / 2),
  REVERSE_COSINE: unet((x) => (1 - Math.cos(Math.PI * x)) / 2),
  FAKE_CUBIC_HERMITE: unet((x) => hermite(x, 25 / 6)),
  FAKE_REVERSE_CUBIC_HERMITE: unet((x) => 1 - hermite(x, 25 / 6)),
  ALL_A: unet(() => 0),
  ALL_B: unet(() => 1, 1),
  // n input blocks from the outside in, n output blocks from the outside in.
  WRAP08: ones((i) => i < 4 || i > 24 - 4),
  WRAP12: ones((i) => i < 6 || i > 24 - 6),
  WRAP14: ones((i) => i < 7 || i > 24 - 7),
  WRAP16: ones((i) => i < 8 || i > 24 - 8),
  OUT07: ones((i) => i >= 18),
  OUT12: ones((i) => i >= 13),
  MID12_50: unet((_, i) => (i >= 5 && i <= 18 ? 0.5 : 0)),
  OUT12_5: unet((_, i) => (i === 12 ? 0.5 : i > 12 ? 1 : 0)),
};
for (const k of [2, 3, 4]) {
  FORMULAS[`SMOOTHSTEP*${k}`] = unet((x) => tri(k * smoothstep(x)));
  FORMULAS[`R_SMOOTHSTEP*${k}`] = unet((x) => 1 - tri(k * smoothstep(x)));
  FORMULAS[`SMOOTHSTEP/${k}`] = unet((x) => smoothstep(tri(k * x)));
  FORMULAS[`R_SMOOTHSTEP/${k}`] = unet((x) => 1 - smoothstep(tri(k * x)));
}

/** Written out from the published file (no formula known for these). */
const EXPLICIT: Record<string, number[]> = {
  RING08_SOFT: [0, 0, 0, 0, 0, 0, 0.5, 1, 1, 1, 0.5, 0, 0, 0, 0, 0, 0.5, 1, 1, 1, 0.5, 0, 0, 0, 0, 0],
  RING08_5: [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
  RING10_5: [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  RING10_3: [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
  GRAD_V: [0, 1, 0.9166666667, 0.8333333333, 0.75, 0.6666666667, 0.5833333333, 0.5, 0.4166666667, 0.3333333333, 0.25, 0.1666666667, 0.0833333333, 0, 0.0833333333, 0.1666666667, 0.25, 0.3333333333, 0.4166666667, 0.5, 0.5833333333, 0.6666666667, 0.75, 0.8333333333, 0.9166666667, 1.0],
  TRUE_CUBIC_HERMITE: [0, 0, 0.199031876929012, 0.325761959876543, 0.424641927083333, 0.498456790123457, 0.549991560570988, 0.58203125, 0.597360869984568, 0.598765432098765, 0.589029947916667, 0.570939429012346, 0.547278886959876, 0.520833333333333, 0.49438777970679, 0.470727237654321, 0.45263671875, 0.442901234567901, 0.444305796682099, 0.459635416666667, 0.491675106095678, 0.543209876543211, 0.617024739583333, 0.715904706790124, 0.842634789737655, 1],
  TRUE_REVERSE_CUBIC_HERMITE: [0, 1, 0.800968123070988, 0.674238040123457, 0.575358072916667, 0.501543209876543, 0.450008439429012, 0.41796875, 0.402639130015432, 0.401234567901235, 0.410970052083333, 0.429060570987654, 0.452721113040124, 0.479166666666667, 0.50561222029321, 0.529272762345679, 0.54736328125, 0.557098765432099, 0.555694203317901, 0.540364583333333, 0.508324893904322, 0.456790123456789, 0.382975260416667, 0.284095293209876, 0.157365210262345, 0],
  // sd-meh's copy (s1dlx/meh sd_meh/presets.py "HALF_SMOOTHSTEP"), to check the alias.
  "SMOOTHSTEP/2": [0, 0, 0.0196759259259259, 0.0740740740740741, 0.15625, 0.259259259259259, 0.376157407407407, 0.5, 0.623842592592593, 0.740740740740741, 0.84375, 0.925925925925926, 0.980324074074074, 1.0, 0.980324074074074, 0.925925925925926, 0.84375, 0.740740740740741, 0.623842592592593, 0.5, 0.376157407407407, 0.259259259259259, 0.15625, 0.0740740740740741, 0.0196759259259259, 0],
};

/** The published lists carry 10 (GRAD_*) to 15 significant digits. */
const PUBLISHED_DIGITS = 5e-11;

describe("block presets (SuperMerger)", () => {
  it("has every published preset, in the published order, each with 26 values", () => {
    assert.deepEqual([...BLOCK_PRESETS.keys()], PUBLISHED_ORDER);
    for (const [name, v] of BLOCK_PRESETS) assert.equal(v.length, 26, name);
  });

  it("every value equals the published formula to the published digits", () => {
    const covered = new Set([...Object.keys(FORMULAS), ...Object.keys(EXPLICIT)]);
    assert.deepEqual(PUBLISHED_ORDER.filter((n) => !covered.has(n)), []);
    for (const [name, expected] of Object.entries(FORMULAS)) {
      const got = presetValues(name)!;
      expected.forEach((e, i) => assert.ok(Math.abs(got[i]! - e) < PUBLISHED_DIGITS, `${name}[${i}] = ${got[i]}, formula ${e}`));
    }
  });

  it("lists without a formula equal the published numbers exactly", () => {
    for (const [name, expected] of Object.entries(EXPLICIT)) assert.deepEqual(presetValues(name), expected, name);
  });

  it("sd-meh's names and any letter case give the same lists", () => {
    assert.equal(PRESET_ALIASES.size, 13);
    for (const [alias, name] of PRESET_ALIASES) assert.deepEqual(presetValues(alias), BLOCK_PRESETS.get(name), alias);
    assert.deepEqual(presetValues("HALF_SMOOTHSTEP"), EXPLICIT["SMOOTHSTEP/2"]);
    assert.equal(presetName("grad_v"), "GRAD_V");
    assert.equal(presetName("reverse-smoothstep"), "REVERSE-SMOOTHSTEP");
    assert.equal(presetName("half_r_smoothstep"), "R_SMOOTHSTEP/2");
    assert.equal(presetName("GRAD_X"), undefined);
  });

  it("suggests the nearest names for a misspelt one", () => {
    assert.deepEqual(nearestPresetNames("GRAD_X", 2).sort(), ["GRAD_A", "GRAD_V"]);
    assert.equal(nearestPresetNames("SMOTHSTEP")[0], "SMOOTHSTEP");
    assert.equal(nearestPresetNames("wrap10")[0]!.startsWith("WRAP1"), true);
  });
});
