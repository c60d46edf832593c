/**
 * The UI's JSON API against the library, over HTTP: registry-driven methods, the live check (a
 * dry run) with the CLI's refusals, a real merge whose output is checked against the formula,
 * its events over SSE seen by two streams, cancel and server stop leaving nothing, hashing,
 * recipes, history, reproduce.
 */
import { f16round } from "@petamoriken/float16";
import assert from "node:assert/strict";
import { existsSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { METHODS } from "../../lib/methods/registry";
import { readModel, writeModel } from "../helpers/models";
import { loadLayout, writeSparseModel } from "../library/fixtures";
import { sha256Of } from "../recipes/helpers";
import { BLOCK_KEYS, call, entries, events, startFixture, writeBlockModel, type Fixture } from "./helpers";

/** Weighted sum as the README writes it: A·(1−M) + B·M in fp32, weights rounded to fp32 once, one rounding per op. */
function weightedSum(a: number, b: number, m: number): number {
  return Math.fround(Math.fround(a * Math.fround(1 - m)) + Math.fround(b * Math.fround(m)));
}

/** |δ| of the top ⌊density·n⌋ kept (the k-th largest magnitude and every equal one), the rest 0. */
function trimmed(delta: number[], density: number): number[] {
  const k = Math.floor(density * delta.length);
  if (k >= delta.length) return delta;
  if (k === 0) return delta.map(() => 0);
  const kth = delta.map(Math.abs).sort((x, y) => y - x)[k - 1]!;
  return delta.map((d) => (Math.abs(d) >= kth ? d : 0));
}

/**
 * TIES as Yadav et al. / mergekit write it, in fp32 with one rounding per op: δj = Mj − base
 * trimmed to its density; wδj = wj·δj; s = sign(Σ wδj) (0 counts as +); the agreeing wδj summed
 * and divided by the sum of their weights (1 if none); r = base + λ·that.
 */
function tiesFormula(base: number[], models: { values: number[]; weight: number; density: number }[], lambda: number): number[] {
  const f = Math.fround;
  const wd = models.map((m) => trimmed(m.values.map((v, i) => f(v - base[i]!)), m.density).map((d) => f(d * f(m.weight))));
  return base.map((b, i) => {
    const s = wd.reduce((sum, w) => f(sum + w[i]!), 0) >= 0 ? 1 : -1;
    let mixed = 0, divisor = 0;
    wd.forEach((w, j) => { if (Math.sign(w[i]!) === s) { mixed = f(mixed + w[i]!); divisor = f(divisor + f(models[j]!.weight)); } });
    return f(b + f(f(mixed / (divisor === 0 ? 1 : divisor)) * f(lambda)));
  });
}

describe("ui API", function () {
  let f: Fixture;
  let a: string, b: string, c: string;
  before(async () => {
    f = await startFixture({}, (models) => {
      writeBlockModel(join(models, "a.safetensors"), 11);
      writeBlockModel(join(models, "b.safetensors"), 22);
      writeBlockModel(join(models, "c.safetensors"), 33);
    });
    [a, b, c] = ["a", "b", "c"].map((n) => join(f.models, `${n}.safetensors`)) as [string, string, string];
  });
  after(() => f.close());

  it("lists the methods from the registry, with their parameters", async () => {
    const r = await call(f, "/api/methods");
    assert.deepEqual(r.json.methods.map((m: { name: string }) => m.name), METHODS.map((m) => m.name));
    const sumTwice = r.json.methods.find((m: { name: string }) => m.name === "sum-twice");
    assert.deepEqual(sumTwice.inputs, ["a", "b", "c"]);
    assert.deepEqual(sumTwice.params.map((p: { name: string }) => p.name), ["alpha", "beta"]);
  });

  it("lists a base + models method with its arity and per-model parameters", async () => {
    const ties = (await call(f, "/api/methods")).json.methods.find((m: { name: string }) => m.name === "ties");
    assert.deepEqual(ties.inputs, []);
    assert.deepEqual(ties.many, { base: true, min: 1, max: 15 });
    assert.deepEqual(ties.params.map((p: { name: string; perModel: boolean }) => [p.name, p.perModel]),
      [["alpha", false], ["weight", true], ["density", true], ["sign-by-count", false], ["normalize", false]]);
    const ws = (await call(f, "/api/methods")).json.methods.find((m: { name: string }) => m.name === "weighted-sum");
    assert.equal(ws.many, null);
  });

  it("checks a model-stock row (no parameters) and refuses one below the method's minimum of models", async () => {
    const check = async (models: unknown[]) => (await call(f, "/api/check", { body: { recipe: { rows: [{ name: "stock", method: "model-stock", base: { model: a }, models }] } } })).json;
    const ok = await check([{ input: { model: b } }, { input: { model: c } }]);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    const one = await check([{ input: { model: b } }]);
    assert.equal(one.ok, false);
    assert.equal(one.error.code, "RECIPE_INVALID", JSON.stringify(one));
  });

  it("lists the models with architecture and sizes, and the block map and presets", async () => {
    const r = await call(f, "/api/models");
    assert.deepEqual(r.json.models.map((m: { name: string }) => m.name), ["a", "b", "c"]);
    assert.equal(r.json.models[0].architecture, "sd1");
    assert.equal(r.json.models[0].size, readFileSync(a).length);
    const blocks = await call(f, `/api/blocks?path=${encodeURIComponent(a)}`);
    assert.equal(blocks.json.map.names.length, 26);
    assert.deepEqual(blocks.json.presets.find((p: { name: string }) => p.name === "GRAD_V").values.length, 26);
    const detail = await call(f, `/api/models/detail?path=${encodeURIComponent(a)}`);
    assert.equal(detail.json.inspect.tensorCount, 7);
    assert.equal(detail.json.recipe, null);
    const compat = await call(f, "/api/compat", { body: { paths: [a, b] } });
    assert.equal(compat.json.compatible, true);
  });

  it("checks a board by a dry run: plan, bytes, disk; nothing written", async () => {
    const r = await call(f, "/api/check", { body: { recipe: { rows: [
      { name: "x1", a: { model: a }, b: { model: "b" }, multiplier: 0.25, save: false },
      { name: "x2", method: "add-difference", a: { row: "x1" }, b: { model: b }, c: { model: c }, multiplier: "0.1:0.3:0.1", dtype: "fp16" },
    ] } } });
    assert.equal(r.json.ok, true, JSON.stringify(r.json));
    const plan = r.json.plan;
    assert.deepEqual(plan.inputs.map((i: { path: string }) => i.path), [a, b, c]);
    assert.deepEqual(plan.outputs.map((o: { path: string }) => o.path), ["x2-0.1", "x2-0.2", "x2-0.3"].map((n) => join(f.out, `${n}.safetensors`)));
    assert.deepEqual(plan.unsaved, ["x1"]);
    assert.ok(plan.bytesRead > 0 && plan.bytesRead <= [a, b, c].reduce((sum, p) => sum + readFileSync(p).length, 0));
    assert.equal(plan.bytesWritten, plan.outputs.reduce((sum: number, o: { bytes: number }) => sum + o.bytes, 0));
    assert.equal(plan.disk[0].dir, f.out);
    assert.ok(plan.disk[0].free > 0);
    assert.deepEqual(entries(f.out), []);
  });

  it("refuses in the check with the CLI's codes: a later row, a missing C, an existing output, a bad multiplier", async () => {
    const check = async (rows: unknown[]) => (await call(f, "/api/check", { body: { recipe: { rows } } })).json;
    const later = await check([{ name: "p", a: { row: "q" }, b: { model: b }, multiplier: 0.5 }, { name: "q", a: { model: a }, b: { model: b }, multiplier: 0.5 }]);
    assert.equal(later.error.code, "RECIPE_INVALID");
    assert.match(later.error.message, /row 1 \(p\).*comes later/);
    const noC = await check([{ name: "p", method: "add-difference", a: { model: a }, b: { model: b }, multiplier: 0.5 }]);
    assert.equal(noC.error.code, "RECIPE_INVALID");
    assert.match(noC.error.message, /needs model C/);
    writeFileSync(join(f.out, "taken.safetensors"), "x");
    try {
      const taken = await check([{ name: "taken", a: { model: a }, b: { model: b }, multiplier: 0.5 }]);
      assert.equal(taken.error.code, "OUTPUT_EXISTS");
    } finally {
      unlinkSync(join(f.out, "taken.safetensors"));
    }
    const m = await check([{ name: "p", a: { model: a }, b: { model: b }, multiplier: "0.5:x" }]);
    assert.equal(m.error.code, "RECIPE_INVALID");
    const missing = await check([{ name: "p", a: { model: "nope" }, b: { model: b }, multiplier: 0.5 }]);
    assert.equal(missing.error.code, "MODEL_NOT_FOUND");
  });

  it("runs a board: progress over SSE to two streams, outputs by the formula, sizes and hashes", async function () {
    this.timeout(60000);
    const [s1, s2] = [await events(f), await events(f)];
    try {
      const started = await call(f, "/api/runs", { body: { recipe: { rows: [
        { name: "ws", a: { model: a }, b: { model: b }, multiplier: "0.3,0.6" },
      ] } } });
      assert.equal(started.status, 202, started.text);
      const id = started.json.task.id;
      const [d1, d2] = await Promise.all([s1.until((s) => s.id === id && s.state !== "running"), s2.until((s) => s.id === id && s.state !== "running")]);
      assert.equal(d1.state, "done", JSON.stringify(d1.error));
      assert.deepEqual(d1, d2);
      // Both streams saw the merge's progress reach 100% and each output go writing → done.
      for (const s of [s1, s2]) {
        const mine = s.states.filter((x) => x.id === id);
        assert.ok(mine.some((x) => x.phase === "merging"), "a merging event");
        assert.equal(mine.at(-1)!.passes.at(-1)!.fraction, 1);
        const writing = mine.findIndex((x) => x.outputs.length === 2 && x.outputs.every((o) => o.state === "writing"));
        assert.ok(writing >= 0);
      }
      assert.deepEqual(d1.outputs.map((o) => o.state), ["done", "done"]);
      const result = d1.result as { outputs: { path: string; bytes: number; sha256: string; multiplier: number }[] };
      const A = readModel(a).tensors, B = readModel(b).tensors;
      for (const o of result.outputs) {
        assert.equal(o.bytes, readFileSync(o.path).length);
        assert.equal(o.sha256, sha256Of(o.path));
        const out = readModel(o.path).tensors;
        for (const key of [BLOCK_KEYS.in00, BLOCK_KEYS.mid, BLOCK_KEYS.out11]) {
          const got = out.get(key)!.values, x = A.get(key)!.values, y = B.get(key)!.values;
          got.forEach((v, i) => assert.equal(v, weightedSum(x[i]!, y[i]!, o.multiplier), `${key}[${i}] M=${o.multiplier}`));
        }
        const te = out.get(BLOCK_KEYS.te)!;
        assert.equal(te.dtype, "F16");
        te.values.forEach((v, i) => assert.equal(v, f16round(weightedSum(A.get(BLOCK_KEYS.te)!.values[i]!, B.get(BLOCK_KEYS.te)!.values[i]!, o.multiplier))));
        assert.deepEqual(out.get(BLOCK_KEYS.ids)!.values, [0, 1, 2, 3]);
      }
      assert.deepEqual(entries(f.out).filter((n) => n.endsWith(".safetensors")), ["ws-0.3.safetensors", "ws-0.6.safetensors"]);
      // The history has both; a second run while none runs is accepted, and the current task is the last one.
      const history = await call(f, "/api/history");
      assert.deepEqual(history.json.entries.map((e: { output: { name: string } }) => e.output.name).sort(), ["ws-0.3.safetensors", "ws-0.6.safetensors"]);
      assert.equal((await call(f, "/api/tasks/current")).json.task.id, id);
      // The output carries its recipe: the model detail shows it, and reproduce rebuilds it bit for bit.
      const detail = await call(f, `/api/models/detail?path=${encodeURIComponent(join(f.out, "ws-0.3.safetensors"))}`);
      assert.equal(detail.json.recipe.rows.at(-1).method, "weighted-sum");
      const rep = await call(f, "/api/reproduce", { body: { path: join(f.out, "ws-0.3.safetensors") } });
      assert.equal(rep.status, 202, rep.text);
      const done = await s1.until((s) => s.id === rep.json.task.id && s.state !== "running");
      assert.equal(done.state, "done", JSON.stringify(done.error));
      assert.equal((done.result as { identical: boolean }).identical, true);
    } finally {
      s1.close();
      s2.close();
    }
  });

  it("checks and runs a TIES row (base + two models with their own weight and density): output by the formula", async function () {
    this.timeout(60000);
    const row = { name: "tie", method: "ties", base: { model: a }, multiplier: 0.8,
      models: [{ input: { model: b }, params: { density: 0.5 } }, { input: { model: "c" }, weight: 0.7 }] };
    const check = await call(f, "/api/check", { body: { recipe: { rows: [row] } } });
    assert.equal(check.json.ok, true, JSON.stringify(check.json));
    assert.deepEqual(check.json.plan.inputs.map((i: { path: string }) => i.path), [a, b, c]);
    assert.deepEqual(entries(f.out).filter((n) => n.startsWith("tie")), []);
    // A model outside the folders is refused as for A/B/C.
    const outside = await call(f, "/api/check", { body: { recipe: { rows: [{ ...row, models: [{ model: "/etc/passwd" }] }] } } });
    assert.equal(outside.json.ok ?? false, false);
    assert.match(JSON.stringify(outside.json), /model 1/);
    const s = await events(f);
    try {
      const started = await call(f, "/api/runs", { body: { recipe: { rows: [row] } } });
      assert.equal(started.status, 202, started.text);
      const done = await s.until((x) => x.id === started.json.task.id && x.state !== "running");
      assert.equal(done.state, "done", JSON.stringify(done.error));
      const path = (done.result as { outputs: { path: string }[] }).outputs[0]!.path;
      const [out, A, B, C] = [path, a, b, c].map((p) => readModel(p).tensors);
      for (const key of [BLOCK_KEYS.in00, BLOCK_KEYS.mid, BLOCK_KEYS.out11]) {
        const want = tiesFormula(A!.get(key)!.values, [
          { values: B!.get(key)!.values, weight: 1, density: 0.5 },
          { values: C!.get(key)!.values, weight: 0.7, density: 1 },
        ], 0.8);
        assert.deepEqual(out!.get(key)!.values, want, key);
      }
      unlinkSync(path);
    } finally {
      s.close();
    }
  });

  it("hashes models as a task, with the library's sha256", async () => {
    const s = await events(f);
    try {
      const r = await call(f, "/api/hash", { body: { paths: [a, c] } });
      const done = await s.until((x) => x.id === r.json.task.id && x.state !== "running");
      assert.equal(done.state, "done");
      assert.deepEqual((done.result as { models: { sha256: string }[] }).models.map((m) => m.sha256), [sha256Of(a), sha256Of(c)]);
      const listed = (await call(f, "/api/models")).json.models.find((m: { path: string }) => m.path === a);
      assert.equal(listed.sha256, sha256Of(a));
    } finally {
      s.close();
    }
  });

  it("parses, formats, saves and opens recipes (classic text and JSON)", async () => {
    const text = "# two rows\nmix = __A__ + __B__, 0.4\nmix2 = __O1__ + __B__ + __A__, 1.0, fp16, safetensors\n";
    const parsed = (await call(f, "/api/recipes/parse", { body: { text } })).json;
    assert.equal(parsed.format, "classic");
    assert.deepEqual(parsed.recipe.rows.map((r: { name: string; method: string }) => [r.name, r.method]), [["mix", "weighted-sum"], ["mix2", "add-difference"]]);
    const back = (await call(f, "/api/recipes/format", { body: { recipe: parsed.recipe, format: "classic" } })).json.text;
    assert.deepEqual((await call(f, "/api/recipes/parse", { body: { text: back } })).json.recipe, parsed.recipe);
    const json = (await call(f, "/api/recipes/format", { body: { recipe: parsed.recipe, format: "json" } })).json.text;
    assert.equal(JSON.parse(json).format, "tensormerge-recipe");
    const saved = await call(f, "/api/recipes/save", { body: { name: "board.txt", text } });
    assert.equal(saved.json.path, join(f.out, "board.txt"));
    assert.equal(readFileSync(join(f.out, "board.txt"), "utf8"), text);
    assert.equal((await call(f, "/api/recipes/save", { body: { name: "board.txt", text } })).json.error.code, "OUTPUT_EXISTS");
    assert.equal((await call(f, "/api/recipes/save", { body: { name: "bad.txt", text: "nonsense line" } })).json.error.code, "RECIPE_INVALID");
    assert.ok(!existsSync(join(f.out, "bad.txt")));
    const listed = (await call(f, "/api/recipes")).json.recipes.map((r: { name: string }) => r.name);
    assert.ok(listed.includes("board.txt"));
    const opened = await call(f, `/api/recipes/file?path=${encodeURIComponent(join(f.out, "board.txt"))}`);
    assert.deepEqual(opened.json.recipe, parsed.recipe);
  });

  it("compares models: one series per model, the relative L2 distance per block", async () => {
    const s = await events(f);
    try {
      const r = await call(f, "/api/compare", { body: { paths: [a, b, c] } });
      const done = await s.until((x) => x.id === r.json.task.id && x.state !== "running");
      assert.equal(done.state, "done", JSON.stringify(done.error));
      const report = done.result as { blocks: string[]; series: { values: (number | null)[] }[] };
      assert.equal(report.series.length, 2);
      assert.equal(report.blocks.length, 26);
    } finally {
      s.close();
    }
  });

  it("says why SD 1.x and SDXL cannot be merged, in the check and in the models' compatibility", async () => {
    const xl = await startFixture({}, (models) => {
      writeBlockModel(join(models, "sd1.safetensors"), 1);
      writeSparseModel(join(models, "xl.safetensors"), loadLayout("sdxl")); // headers only: never hashed here
    });
    try {
      const [p1, p2] = [join(xl.models, "sd1.safetensors"), join(xl.models, "xl.safetensors")];
      const check = (await call(xl, "/api/check", { body: { recipe: { rows: [{ name: "m", a: { model: p1 }, b: { model: p2 }, multiplier: 0.5 }] } } })).json;
      assert.equal(check.ok, false);
      assert.equal(check.error.code, "ARCHITECTURE_MISMATCH");
      assert.match(check.error.message, /SDXL/);
      const compat = (await call(xl, "/api/compat", { body: { paths: [p1, p2] } })).json;
      assert.equal(compat.compatible, false);
      assert.equal(compat.code, "ARCHITECTURE_MISMATCH");
      assert.deepEqual(entries(xl.out), []);
    } finally {
      await xl.close();
    }
  });

  it("answers /api/info and hashes every model when no paths are given", async () => {
    const info = (await call(f, "/api/info")).json;
    assert.deepEqual(info.modelDirs, [f.models]);
    assert.equal(info.outDir, f.out);
    assert.ok(info.dtypes.includes("fp16") && info.dtypes[0] === "same");
    const s = await events(f);
    try {
      const r = await call(f, "/api/hash", { body: {} });
      const done = await s.until((x) => x.id === r.json.task.id && x.state !== "running");
      const hashed = (done.result as { models: { path: string; sha256: string }[] }).models;
      assert.ok(hashed.length >= 3);
      for (const m of hashed) assert.equal(m.sha256, sha256Of(m.path), m.path);
    } finally {
      s.close();
    }
  });

  it("cancels a run and leaves nothing; stopping the server mid-run does the same", async function () {
    this.timeout(120000);
    // Slow enough that the TS engine, one thread, is still merging when the cancel arrives: multiply difference takes a pow per element
    // (C differs from A and B: where A = C the engines skip the pow).
    const big = await startFixture({ engine: "js", threads: 1 }, (models) => {
      const n = 8 << 20;
      for (const [name, fill] of [["x", 1], ["y", 2], ["z", 3]] as const) {
        writeModel(join(models, `${name}.safetensors`), { "model.diffusion_model.out.2.weight": { dtype: "F32", shape: [n], raw: new Uint8Array(n * 4).fill(fill) } });
      }
    });
    // And the engine's test knob: a pause after each 1M-element chunk (each run's worker copies the environment).
    process.env.TENSORMERGE_WINDOW_PAUSE_MS = "200";
    try {
      const [x, y, z] = [join(big.models, "x.safetensors"), join(big.models, "y.safetensors"), join(big.models, "z.safetensors")];
      const body = { recipe: { rows: [{ name: "big", method: "multiply-difference", a: { model: x }, b: { model: y }, c: { model: z }, multiplier: "0.2,0.4" }] } };
      const s = await events(big);
      const r = await call(big, "/api/runs", { body });
      const id = r.json.task.id;
      await s.until((x) => x.id === id && x.phase === "merging", 60000);
      const second = await call(big, "/api/runs", { body });
      assert.equal(second.status, 409);
      assert.equal(second.json.error.code, "TASK_RUNNING");
      const cancel = await call(big, `/api/tasks/${id}/cancel`, { body: {} });
      assert.equal(cancel.status, 200);
      const end = await s.until((x) => x.id === id && x.state !== "running", 60000);
      assert.equal(end.state, "cancelled");
      assert.equal(end.error!.code, "ABORTED");
      assert.ok(end.passes[0]!.fraction < 1, "cancelled mid-pass");
      assert.deepEqual(end.outputs.map((o) => o.state), ["not written", "not written"]);
      assert.deepEqual(entries(big.out), []);
      s.close();

      // The server stops while a run merges: close() cancels it and waits for the cleanup.
      const s2 = await events(big);
      const r2 = await call(big, "/api/runs", { body });
      await s2.until((x) => x.id === r2.json.task.id && x.phase === "merging", 60000);
      await big.ui.close();
      assert.deepEqual(entries(big.out), []);
      s2.close();
    } finally {
      delete process.env.TENSORMERGE_WINDOW_PAUSE_MS;
      await big.close();
    }
  });
});
