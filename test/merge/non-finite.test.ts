/**
 * Non-finite outputs: the report counts the NaNs and infinities a merge produced, per output, and
 * the CLI warns. Expected counts come from the formula written out here in fp32 (Math.fround per
 * operation) and each output dtype's overflow threshold, independently of lib/: fp16 overflows
 * to Inf from 65520 (half-way above 65504), fp8 e5m2 from 61440 (half-way above 57344, ties to
 * the odd-mantissa side go up), fp8 e4m3fn becomes NaN above 464 (half-way above 448; no Inf),
 * bf16 by the bit formula of test/helpers. Copies byte for byte count nothing.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { merge } from "../../lib/merge";
import { parseRecipe } from "../../lib/recipes";
import { runRecipe } from "../../lib/recipes/run";
import { ENGINES } from "../helpers/engines";
import { bf16FromF32, tempDir, writeModel } from "../helpers/models";

const f = Math.fround;
const PALETTE = [0.5, -2, 300, 1000, 70000, -70000, 3e38, -3e38, 1e-3, Infinity, -Infinity, NaN];
const N = 301; // past every vector width, with a tail

/** Deterministic values drawn from the palette (a different walk per seed). */
function palette(seed: number): number[] {
  return Array.from({ length: N }, (_, i) => PALETTE[(i * (seed + 3) + seed * 7 + Math.floor(i / 12)) % PALETTE.length]!);
}

type Out = "fp32" | "fp16" | "bf16" | "fp8-e4m3" | "fp8-e5m2";

/** NaN, infinity or finite, once the fp32 value y is stored in `dtype`. */
function classify(y: number, dtype: Out): "nan" | "inf" | "ok" {
  if (Number.isNaN(y)) return "nan";
  const a = Math.abs(y);
  switch (dtype) {
    case "fp32": return a === Infinity ? "inf" : "ok";
    case "fp16": return a >= 65520 ? "inf" : "ok";
    case "fp8-e5m2": return a >= 61440 ? "inf" : "ok";
    case "fp8-e4m3": return a > 464 ? "nan" : "ok";
    case "bf16": return (bf16FromF32(y) & 0x7fff) === 0x7f80 ? "inf" : "ok";
  }
}

function count(ys: number[], dtype: Out): { nan: number; inf: number } {
  const c = { nan: 0, inf: 0 };
  for (const y of ys) {
    const k = classify(y, dtype);
    if (k !== "ok") c[k]++;
  }
  return c;
}

describe("non-finite outputs", function () {
  this.timeout(60_000);
  const dir = tempDir();
  after(() => dir.cleanup());
  const a = join(dir.path, "a.safetensors"), b = join(dir.path, "b.safetensors"), c = join(dir.path, "c.safetensors");
  const [va, vb, vc] = [palette(1), palette(2), palette(5)];
  // Only in A: copied, never merged. One holds NaN/Inf/overflowing values.
  const onlyA = PALETTE.flatMap((v) => [v, v]);
  before(() => {
    for (const [p, v] of [[a, va], [b, vb], [c, vc]] as const) {
      writeModel(p, {
        "x.weight": { dtype: "F32", shape: [N], values: v },
        ...(p === a ? { "only_a.weight": { dtype: "F32", shape: [onlyA.length], values: onlyA } } : {}),
      });
    }
  });

  // A key copied from A as it is counts nothing; converted, only its finite values that overflow.
  const copiedCount = (dtype: Out) => dtype === "fp32" ? { nan: 0, inf: 0 } : count(onlyA.filter(Number.isFinite).map(f), dtype);
  const sum = (x: { nan: number; inf: number }, y: { nan: number; inf: number }) => ({ nan: x.nan + y.nan, inf: x.inf + y.inf });

  for (const dtype of ["fp32", "fp16", "bf16", "fp8-e4m3", "fp8-e5m2"] as const) {
    it(`weighted-sum with α = −1 and 2, to ${dtype}: counts per output, both engines equal`, async () => {
      const results = [];
      for (const engine of ENGINES) {
        const out = join(dir.path, `ws-${dtype}-${engine}.safetensors`);
        const report = await merge({ recipeMetadata: false, a, b, method: "weighted-sum", multiplier: [-1, 2], dtype, out, engine });
        const expected = [-1, 2].map((m) => {
          const [p0, p1] = [f(1 - m), f(m)];
          return sum(count(va.map((x, i) => f(f(f(x) * p0) + f(f(vb[i]!) * p1))), dtype), copiedCount(dtype));
        });
        assert.deepEqual(report.nonFinite.map(({ nan, inf }) => ({ nan, inf })), expected, engine);
        assert.deepEqual(report.nonFinite.map((x) => x.path), report.outputs.map((o) => o.path));
        assert.ok(expected.every((e) => e.nan + e.inf > 0)); // the test means something
        assert.equal(report.warnings.filter((w) => /NaN|infinite/.test(w)).length, 2);
        results.push(report.nonFinite.map(({ nan, inf }) => ({ nan, inf })));
      }
      for (const r of results) assert.deepEqual(r, results[0]);
    });
  }

  for (const engine of ENGINES) {
    it(`add-difference: Inf − Inf is NaN, B − C overflows (${engine})`, async () => {
      const out = join(dir.path, `ad-${engine}.safetensors`);
      const report = await merge({ recipeMetadata: false, a, b, c, method: "add-difference", multiplier: 1, out, engine });
      const ys = va.map((x, i) => f(f(x) + f(f(f(vb[i]!) - f(vc[i]!)) * f(1))));
      const expected = count(ys, "fp32");
      assert.ok(vb.some((x, i) => x === Infinity && vc[i] === Infinity), "the palette meets Inf − Inf");
      assert.deepEqual(report.nonFinite, [{ path: out, ...expected }]);
    });

    it(`a NaN in a tensor copied unchanged from A is not counted (${engine})`, async () => {
      // α = 0.5 of finite, small values: the merged tensor is clean, the copied one holds NaN and Inf.
      const small = join(dir.path, "small.safetensors"), small2 = join(dir.path, "small2.safetensors");
      writeModel(small, { "x.weight": { dtype: "F32", shape: [4], values: [1, 2, 3, 4] }, "only_a.weight": { dtype: "F32", shape: [3], values: [NaN, Infinity, 1] } });
      writeModel(small2, { "x.weight": { dtype: "F32", shape: [4], values: [4, 3, 2, 1] } });
      const out = join(dir.path, `copy-${engine}.safetensors`);
      const report = await merge({ recipeMetadata: false, a: small, b: small2, method: "weighted-sum", multiplier: 0.5, out, engine });
      assert.deepEqual(report.nonFinite, [{ path: out, nan: 0, inf: 0 }]);
      assert.ok(!report.warnings.some((w) => /NaN|infinite/.test(w)));
    });
  }

  it("the CLI warns on stderr, with the counts", () => {
    const cli = join(__dirname, "../../lib/cli/main.js");
    const out = join(dir.path, "cli.safetensors");
    const r = spawnSync(process.execPath, [cli, "merge", "--a", a, "--b", b, "--multiplier=-1", "--dtype", "fp16", "--no-metadata", "--quiet", "--out", out], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const e = sum(count(va.map((x, i) => f(f(f(x) * 2) + f(f(vb[i]!) * -1))), "fp16"), copiedCount("fp16"));
    assert.ok(r.stderr.includes(`warning: ${out}: the merge computed ${e.nan} NaN and ${e.inf} infinite values`), r.stderr);
  });

  const recipeExpected = () => sum(count(va.map((x, i) => f(f(f(x) * -1) + f(f(vb[i]!) * 2))), "fp16"), copiedCount("fp16"));

  for (const engine of ENGINES) {
    it(`a recipe run reports the counts under the final names (${engine})`, async () => {
      const outDir = join(dir.path, `recipe-${engine}`);
      const report = await runRecipe(parseRecipe(`ws = ${a} + ${b}, 2, fp16, safetensors\n`), { outDir, createOutDirs: true, recipeMetadata: false, engine });
      const e = recipeExpected();
      assert.deepEqual(report.nonFinite, [{ path: join(outDir, "ws.safetensors"), ...e }]);
      assert.ok(report.warnings.some((w) => w.startsWith(`${join(outDir, "ws.safetensors")}: the merge computed ${e.nan} NaN and ${e.inf} infinite values`)), report.warnings.join("\n"));
    });
  }

  it("`run` warns on stderr too", () => {
    const cli = join(__dirname, "../../lib/cli/main.js");
    const recipe = join(dir.path, "r.txt"), outDir = join(dir.path, "run-cli");
    writeFileSync(recipe, `ws = ${a} + ${b}, 2, fp16, safetensors\n`);
    const env = { ...process.env, TENSORMERGE_CACHE_DIR: join(dir.path, "cache"), TENSORMERGE_MODELS: "" };
    const r = spawnSync(process.execPath, [cli, "run", recipe, "--out-dir", outDir, "--no-history", "-q"], { encoding: "utf8", env, cwd: dir.path });
    assert.equal(r.status, 0, r.stderr);
    const e = recipeExpected();
    assert.ok(r.stderr.includes(`warning: ${join(outDir, "ws.safetensors")}: the merge computed ${e.nan} NaN and ${e.inf} infinite values`), r.stderr);
  });
});
