/**
 * An input changed after it was opened (its header read) or hashed for the recipe, but before
 * the merging pass starts (issue 9, item 2). The recipe pins the hash computed in the hashing
 * phase and the plan uses the header read at open: a rewrite in that window makes both wrong,
 * so it must fail with INPUT_CHANGED like a change during the pass, for merge() and runRecipe().
 * The change is made from the progress callback of the hashing phase (after A was hashed, while
 * B is), so it lands in that window whatever the machine's speed. In-process, TS engine: no
 * fault can occur, only a silent mismatch.
 */
import { strict as assert } from "node:assert";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { merge } from "../../lib";
import { parseRecipe } from "../../lib/recipes";
import { runRecipe } from "../../lib/recipes/run";
import { tempDir } from "../helpers/models";
import { change, model } from "../native/input-change-child";

describe("an input changed between its hashing and the merging pass", function () {
  this.timeout(60_000);
  const tmp = tempDir("tm-input-change-early-");
  after(() => tmp.cleanup());

  it("merge(): A rewritten in place while B is hashed is INPUT_CHANGED, nothing committed", async () => {
    const dir = tmp.fresh("merge");
    const a = join(dir, "a.safetensors");
    const b = join(dir, "b.safetensors");
    model(a, 1);
    model(b, 2);
    let changed = false;
    const error = await merge({
      a, b, method: "weighted-sum", multiplier: 0.5, out: join(dir, "out.safetensors"), engine: "js",
      onProgress: (p) => {
        if (!changed && p.phase === "hashing" && p.path === b) {
          changed = true;
          change(a, "rewrite");
        }
      },
    }).then(() => undefined, (e: unknown) => e as { code?: string; path?: string });
    assert.ok(changed, "B was never hashed: the change did not happen");
    assert.ok(error, "the merge succeeded although A changed after it was hashed (its pinned sha256 is wrong)");
    assert.equal(error.code, "INPUT_CHANGED");
    assert.equal(error.path, a);
    assert.deepEqual(readdirSync(dir).sort(), ["a.safetensors", "b.safetensors"]);
  });

  it("runRecipe(): A rewritten in place while B is hashed is INPUT_CHANGED, nothing committed", async () => {
    const dir = tmp.fresh("run");
    const a = join(dir, "a.safetensors");
    const b = join(dir, "b.safetensors");
    model(a, 1);
    model(b, 2);
    let changed = false;
    const error = await runRecipe(parseRecipe("mix = a + b, 0.5, safetensors\n"), {
      modelDirs: [dir], outDir: dir, engine: "js",
      onProgress: (p) => {
        if (!changed && p.phase === "hash" && p.path === b) {
          changed = true;
          change(a, "rewrite");
        }
      },
    }).then(() => undefined, (e: unknown) => e as { code?: string; path?: string });
    assert.ok(changed, "B was never hashed: the change did not happen");
    assert.ok(error, "the recipe ran although A changed after it was hashed");
    assert.equal(error.code, "INPUT_CHANGED");
    assert.equal(error.path, a);
    assert.deepEqual(readdirSync(dir).sort(), ["a.safetensors", "b.safetensors"]);
  });
});
