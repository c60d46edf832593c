/** A sweep of N multipliers in one pass equals N single merges, byte for byte. */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { parseMultipliers } from "../../lib/validate";
import { isMergeError } from "../../lib/errors";
import { parseRecipe } from "../../lib/recipes";
import { ENGINES } from "../helpers/engines";
import { randomValues, tempDir, writeModel } from "../helpers/models";

describe("multiplier sweeps", () => {
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  before(() => {
    for (const [p, s] of [[a, 1], [b, 2], [c, 3]] as const) {
      writeModel(p, { "x.weight": { dtype: "F16", shape: [33, 3], values: randomValues(99, s) }, ids: { dtype: "I64", shape: [3], values: [0, 1, 2] } });
    }
  });

  it("parses lists and ranges with exact decimals", () => {
    assert.deepEqual(parseMultipliers("0.1:0.5:0.1"), [0.1, 0.2, 0.3, 0.4, 0.5]);
    assert.deepEqual(parseMultipliers("0.10:0.20:0.02"), [0.1, 0.12, 0.14, 0.16, 0.18, 0.2]);
    assert.deepEqual(parseMultipliers("0.144,0.148"), [0.144, 0.148]);
    assert.throws(() => parseMultipliers("0.1:0.5"));
    assert.throws(() => parseMultipliers("a"));
  });

  it("limits a whole sweep to 10,001 values, however it is given (several ranges, lists, arrays, JSON recipes)", async () => {
    // 10,001 values from two ranges are allowed; one more value is not.
    assert.equal(parseMultipliers("0:0.5:0.0001,0.50005:1:0.0001").length, 5001 + 5000);
    const tooMany = (e: unknown) => isMergeError(e, "INVALID_ARGUMENT") && /has 10,002 values; a sweep has at most 10,001/.test((e as Error).message);
    assert.throws(() => parseMultipliers("0:0.5:0.0001,0.50005:1:0.0001,2"), tooMany);
    // Ten overlapping ranges of 10,001 values each (100,010 distinct values) were accepted.
    const ranges = Array.from({ length: 10 }, (_, i) => `${(i * 0.00001).toFixed(5)}:1:0.0001`).join(",");
    assert.throws(() => parseMultipliers(ranges), (e: unknown) => isMergeError(e, "INVALID_ARGUMENT"));
    const out = join(dir.path, "limit", "m.safetensors");
    const array = Array.from({ length: 10_002 }, (_, i) => i / 10_002);
    await assert.rejects(merge({ recipeMetadata: false, a, b, method: "weighted-sum", multiplier: array, out }), tooMany);
    await assert.rejects(merge({ recipeMetadata: false, a, b, method: "weighted-sum", multiplier: ranges, out }), (e: unknown) => isMergeError(e, "INVALID_ARGUMENT"));
    assert.throws(() => parseRecipe(JSON.stringify({ rows: [{ name: "s", a, b, multiplier: array }] })), (e: unknown) => isMergeError(e, "RECIPE_INVALID") && /at most 10001/.test((e as Error).message));
  });

  for (const engine of ENGINES) {
    it(`a sweep equals single merges (${engine})`, async () => {
      const values = [0.1, 0.12, 0.144];
      const report = await merge({ recipeMetadata: false, a, b, c, method: "add-difference", multiplier: values, dtype: "bf16", out: join(dir.path, `sweep-${engine}.safetensors`), engine });
      assert.deepEqual(report.outputs.map((o) => o.path), values.map((m) => join(dir.path, `sweep-${engine}-${m}.safetensors`)));
      for (const m of values) {
        const single = join(dir.path, `single-${engine}-${m}.safetensors`);
        await merge({ recipeMetadata: false, a, b, c, method: "add-difference", multiplier: m, dtype: "bf16", out: single, engine });
        assert.ok(readFileSync(single).equals(readFileSync(join(dir.path, `sweep-${engine}-${m}.safetensors`))), `M=${m}`);
      }
    });
  }
});
