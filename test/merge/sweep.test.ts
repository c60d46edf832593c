/** A sweep of N multipliers in one pass equals N single merges, byte for byte. */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib/merge";
import { parseMultipliers } from "../../lib/validate";
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
