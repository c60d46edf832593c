/**
 * The board in a real browser (Debian's chromium driven by playwright-core; no browser is ever
 * downloaded): build a three-row board with a sweep and an O1 reference by clicking and typing,
 * see a live check refuse a bad row, run it, watch the progress reach 100%, compare the outputs
 * with the library's own result for the same recipe; load a classic recipe text into the board;
 * build a TIES row (a base, two models with their own weight and density), run it, compare with
 * the library's merge(), see classic export refuse it and JSON bring it back; draw the compare chart. Screenshots of each page go to build/test-artifacts/ui (not committed).
 * Without chromium the test is skipped locally and fails under CI=true.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Browser, Page } from "playwright-core";
import { merge } from "../../lib/merge";
import { parseJsonRecipe, runRecipe } from "../../lib/recipes";
import { readModel, writeModel } from "../helpers/models";
import { entries, startFixture, writeBlockModel, type Fixture } from "./helpers";

const CHROMIUM = "/usr/bin/chromium";
const SHOTS = resolve(__dirname, "..", "..", "..", "build", "test-artifacts", "ui");

describe("ui in a browser (chromium)", function () {
  this.timeout(60000);
  let f: Fixture;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      if (process.env.CI === "true") throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); CI must run the browser test`);
      this.skip();
    }
    const { chromium } = await import("playwright-core");
    // The TS engine, one thread: multiply difference (a pow per element; C differs from A and B, or the
    // engines skip the pow) of the big models below is still running when Cancel is clicked (and
    // the small board's outputs are checked against a native-engine library run: same bits).
    f = await startFixture({ engine: "js", threads: 1 }, (models) => {
      for (const [name, seed] of [["base", 1], ["style", 2], ["sd15", 3]] as const) writeBlockModel(join(models, `${name}.safetensors`), seed);
      const n = 8 << 20;
      for (const [name, fill] of [["bigx", 1], ["bigy", 2], ["bigz", 3]] as const) {
        writeModel(join(models, `${name}.safetensors`), { "model.diffusion_model.out.2.weight": { dtype: "F32", shape: [n], raw: new Uint8Array(n * 4).fill(fill) } });
      }
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("pageerror", (e) => pageErrors.push(e.message));
    mkdirSync(SHOTS, { recursive: true });
    await page.goto(f.ui.url);
    await page.waitForSelector("body[data-ready=true]");
  });
  after(async () => {
    await browser?.close();
    await f?.close();
  });
  afterEach(() => assert.deepEqual(pageErrors, [], "no script errors on the page"));

  const row = (n: number) => page.locator(`#rows > li:nth-child(${n})`);
  const pick = async (n: number, slot: string, text: string) => {
    const input = row(n).locator(`.row-${slot}`);
    await input.fill(text);
    await input.press("Tab");
  };
  const checkText = () => page.locator("#check").textContent();

  it("signs in through the token (the address loses it) and builds a three-row board with a sweep and an O1 reference", async () => {
    assert.ok(!page.url().includes("token="), page.url());
    await row(1).locator(".row-name").fill("mix");
    await pick(1, "a", "base");
    await pick(1, "b", "style");
    await row(1).locator(".row-multiplier").fill("0.3");
    await page.getByRole("button", { name: "Add row" }).click();
    await row(2).locator(".row-name").fill("sweep");
    await row(2).locator(".row-method").selectOption("add-difference");
    await pick(2, "a", "O1 mix");
    await pick(2, "b", "style");
    // A live check refuses the row: add-difference without C, with the CLI's message.
    await page.locator("#check", { hasText: /needs model C/ }).waitFor();
    assert.match((await checkText())!, /RECIPE_INVALID.*row 2 \(sweep\).*needs model C/);
    assert.match((await row(2).getAttribute("class"))!, /\bbad\b/);
    assert.equal(await page.locator("#run").isDisabled(), true);
    await page.screenshot({ path: join(SHOTS, "board-refused.png"), fullPage: true });
    await pick(2, "c", "sd15");
    await row(2).locator(".row-multiplier").fill("0.1:0.2:0.1");
    await page.getByRole("button", { name: "Add row" }).click();
    await row(3).locator(".row-name").fill("half");
    await pick(3, "a", "O1 mix");
    await pick(3, "b", "sd15");
    await row(3).locator(".row-dtype").selectOption("fp16");
    await page.locator("#check", { hasText: /^OK/ }).waitFor();
    assert.equal(await page.locator("#plan-outputs tr").count(), 4);
    await page.screenshot({ path: join(SHOTS, "board-planned.png"), fullPage: true });
  });

  it("runs it, shows the progress reach 100% and the results, equal to the library's own run", async () => {
    await page.locator("#run").click();
    await page.locator("#task-state", { hasText: /^done$/ }).waitFor({ timeout: 30000 });
    await page.waitForSelector("#result-table");
    const bars = await page.locator("#task-bars progress").evaluateAll((els) => els.map((e) => (e as unknown as { value: number }).value));
    assert.ok(bars.length >= 1 && bars.every((v) => v === 1), `progress ${JSON.stringify(bars)}`);
    const names = await page.locator("#result-table td:nth-child(2)").allTextContents();
    assert.deepEqual(names, ["mix.safetensors", "sweep-0.1.safetensors", "sweep-0.2.safetensors", "half.safetensors"]);
    const hashes = await page.locator("#result-table td.hash").allTextContents();
    assert.ok(hashes.every((h) => /^[0-9a-f]{64}$/.test(h)), JSON.stringify(hashes));
    await page.screenshot({ path: join(SHOTS, "board-results.png"), fullPage: true });

    // The same recipe through the library directly: every tensor identical.
    const mine = mkdtempSync(join(tmpdir(), "tm-ui-lib-"));
    try {
      const m = (n: string) => ({ model: join(f.models, `${n}.safetensors`) });
      await runRecipe(parseJsonRecipe({ rows: [
        { name: "mix", method: "weighted-sum", a: m("base"), b: m("style"), multiplier: "0.3" },
        { name: "sweep", method: "add-difference", a: { row: "mix" }, b: m("style"), c: m("sd15"), multiplier: "0.1:0.2:0.1" },
        { name: "half", method: "weighted-sum", a: { row: "mix" }, b: m("sd15"), multiplier: "0.5", dtype: "fp16" },
      ] }), { outDir: mine, modelDirs: [f.models] });
      for (const name of names) {
        const ours = readModel(join(f.out, name)), theirs = readModel(join(mine, name));
        assert.deepEqual(ours.order, theirs.order, name);
        for (const k of ours.order) assert.ok(Buffer.from(ours.tensors.get(k)!.bytes).equals(Buffer.from(theirs.tensors.get(k)!.bytes)), `${name} ${k}`);
      }
    } finally {
      rmSync(mine, { recursive: true, force: true });
    }
  });

  it("builds a TIES row (base + two models, per-model weight and density), runs it, equal to the library's merge()", async () => {
    for (let k = 0; k < 3; k++) await page.getByRole("button", { name: "Remove row 1", exact: true }).click();
    await page.getByRole("button", { name: "Add row" }).click();
    await row(1).locator(".row-name").fill("tie");
    await row(1).locator(".row-method").selectOption("ties");
    assert.equal(await row(1).locator(".row-a").count(), 0);
    assert.equal(await row(1).locator(".row-model").count(), 1, "ties takes at least one model");
    assert.equal(await row(1).getByRole("button", { name: "Remove model 1 of row 1" }).isDisabled(), true);
    await pick(1, "base", "base");
    await pick(1, "model", "style");
    await row(1).getByRole("button", { name: "Add model to row 1" }).click();
    const second = row(1).locator(".row-model").nth(1);
    await second.fill("sd15");
    await second.press("Tab");
    await row(1).locator(".row-model-density").first().fill("0.5");
    await row(1).locator(".row-model-weight").nth(1).fill("0.7");
    await row(1).locator(".row-multiplier").fill("0.8");
    // The check after the last edit (an earlier board's "OK" may still show until it answers).
    await page.locator("#plan-outputs", { hasText: "tie.safetensors" }).waitFor();
    await page.locator("#check", { hasText: /^OK/ }).waitFor();
    assert.deepEqual(await page.locator("#plan-outputs td:nth-child(2)").allTextContents(), ["tie.safetensors"]);
    await page.screenshot({ path: join(SHOTS, "board-ties.png"), fullPage: true });
    await page.locator("#run").click();
    await page.locator("#task-state", { hasText: /^done$/ }).waitFor({ timeout: 30000 });
    await page.locator("#result-table", { hasText: "tie.safetensors" }).waitFor();
    const bars = await page.locator("#task-bars progress").evaluateAll((els) => els.map((e) => (e as unknown as { value: number }).value));
    assert.ok(bars.length >= 1 && bars.every((v) => v === 1), `progress ${JSON.stringify(bars)}`);

    const mine = mkdtempSync(join(tmpdir(), "tm-ui-lib-"));
    try {
      const m = (n: string) => join(f.models, `${n}.safetensors`);
      await merge({ method: "ties", base: m("base"), models: [m("style"), m("sd15")], modelWeights: [1, 0.7], modelParams: [{ density: 0.5 }, {}], multiplier: 0.8, out: join(mine, "tie.safetensors") });
      const ours = readModel(join(f.out, "tie.safetensors")), theirs = readModel(join(mine, "tie.safetensors"));
      assert.deepEqual(ours.order, theirs.order);
      for (const k of ours.order) assert.ok(Buffer.from(ours.tensors.get(k)!.bytes).equals(Buffer.from(theirs.tensors.get(k)!.bytes)), k);
      // density 0.5 trimmed something: the output is not the untrimmed merge.
      await merge({ method: "ties", base: m("base"), models: [m("style"), m("sd15")], modelWeights: [1, 0.7], multiplier: 0.8, out: join(mine, "untrimmed.safetensors") });
      const untrimmed = readModel(join(mine, "untrimmed.safetensors"));
      assert.ok(ours.order.some((k) => !Buffer.from(ours.tensors.get(k)!.bytes).equals(Buffer.from(untrimmed.tensors.get(k)!.bytes))));
    } finally {
      rmSync(mine, { recursive: true, force: true });
    }
  });

  it("refuses a TIES row as classic text, and brings it back from JSON", async () => {
    await page.getByRole("tab", { name: "Recipes" }).click();
    await page.locator("#recipe-export-classic").click();
    await page.locator("#recipe-status", { hasText: /RECIPE_INVALID.*base and list of models/ }).waitFor({ timeout: 10000 });
    await page.locator("#recipe-export-json").click();
    await page.locator("#recipe-status", { hasText: /^The board as JSON/ }).waitFor({ timeout: 10000 });
    const json = JSON.parse(await page.locator("#recipe-text").inputValue());
    assert.deepEqual(json.rows[0].models.map((e: { weight?: number; params?: unknown }) => [e.weight ?? null, e.params ?? null]), [[null, { density: 0.5 }], [0.7, null]]);
    // Per-key and per-block values of a named parameter: the board does not edit them, but shows
    // them and writes them back as they were (it once dropped them on the way through).
    const weights = { density: [{ pattern: "cond_stage_model\\.", value: 1 }] }, blocks = { density: "GRAD_V" };
    await page.locator("#recipe-text").fill(JSON.stringify({ ...json, rows: [{ ...json.rows[0], weights, blocks }] }));
    await page.getByRole("button", { name: "Load into the board" }).click();
    await page.locator("#recipe-status", { hasText: /Loaded 1 row/ }).waitFor({ timeout: 10000 });
    await page.getByRole("tab", { name: "Board" }).click();
    await row(1).locator(".row-kept", { hasText: /density per key \(cond_stage_model\\.=1\); density per block \(GRAD_V\)/ }).waitFor({ timeout: 10000 });
    await page.getByRole("tab", { name: "Recipes" }).click();
    await page.locator("#recipe-export-json").click();
    await page.locator("#recipe-status", { hasText: /^The board as JSON/ }).waitFor({ timeout: 10000 });
    const again = JSON.parse(await page.locator("#recipe-text").inputValue());
    assert.deepEqual([again.rows[0].weights, again.rows[0].blocks], [weights, blocks]);
    await page.locator("#recipe-text").fill(JSON.stringify(json));
    await page.getByRole("button", { name: "Load into the board" }).click();
    await page.locator("#recipe-status", { hasText: /Loaded 1 row/ }).waitFor({ timeout: 10000 });
    await page.getByRole("tab", { name: "Board" }).click();
    assert.equal(await row(1).locator(".row-method").inputValue(), "ties");
    assert.equal(await row(1).locator(".row-base").inputValue(), "base");
    assert.deepEqual(await row(1).locator(".row-model").evaluateAll((els) => els.map((e) => (e as unknown as { value: string }).value)), ["style", "sd15"]);
    assert.equal(await row(1).locator(".row-model-density").first().inputValue(), "0.5");
    assert.equal(await row(1).locator(".row-model-weight").nth(1).inputValue(), "0.7");
    assert.equal(await row(1).locator(".row-multiplier").inputValue(), "0.8");
    await page.locator("#check", { hasText: /tie\.safetensors|OUTPUT_EXISTS|^OK/ }).waitFor();
  });

  it("loads a classic recipe text into the same board", async () => {
    await page.getByRole("tab", { name: "Recipes" }).click();
    await page.locator("#recipe-text").fill("# classic\nmix = __BASE__ + __STYLE__, 0.3\nsweep = __O1__ + __STYLE__ + __SD15__, 0.1:0.2:0.1\n");
    await page.getByRole("button", { name: "Load into the board" }).click();
    await page.locator("#recipe-status", { hasText: /Loaded 2 rows/ }).waitFor({ timeout: 10000 }).catch(async (e) => {
      throw new Error(`${(e as Error).message}; status: ${await page.locator("#recipe-status").textContent()}`);
    });
    await page.screenshot({ path: join(SHOTS, "recipes.png"), fullPage: true });
    await page.getByRole("tab", { name: "Board" }).click();
    assert.deepEqual(await page.locator(".row-name").evaluateAll((els) => els.map((e) => (e as unknown as { value: string }).value)), ["mix", "sweep"]);
    assert.deepEqual(await page.locator(".row-method").evaluateAll((els) => els.map((e) => (e as unknown as { value: string }).value)), ["weighted-sum", "add-difference"]);
    assert.equal(await row(2).locator(".row-a").inputValue(), "O1 mix");
    assert.equal(await row(2).locator(".row-multiplier").inputValue(), "0.1,0.2");
    for (const [v, model] of [["BASE", "base"], ["STYLE", "style"], ["SD15", "sd15"]]) await page.locator(`#var-${v}`).fill(model!), await page.locator(`#var-${v}`).press("Tab");
    // Classic rows without "safetensors" write .ckpt, as the classic tool does: a new plan.
    await page.locator("#plan-outputs", { hasText: "mix.ckpt" }).waitFor();
    assert.match((await checkText())!, /^OK/);
    assert.deepEqual(await page.locator("#plan-outputs td:nth-child(2)").allTextContents(), ["mix.ckpt", "sweep-0.1.ckpt", "sweep-0.2.ckpt"]);
  });

  it("re-runs an output from the history: its row back in the board", async () => {
    await page.getByRole("tab", { name: "Recipes" }).click();
    await page.getByRole("button", { name: "Re-run mix.safetensors" }).click();
    assert.deepEqual(await page.locator(".row-name").evaluateAll((els) => els.map((e) => (e as unknown as { value: string }).value)), ["mix-again"]);
    assert.equal(await row(1).locator(".row-a").inputValue(), "base");
    assert.equal(await row(1).locator(".row-b").inputValue(), "style");
    assert.equal(await row(1).locator(".row-multiplier").inputValue(), "0.3");
    await page.locator("#plan-outputs", { hasText: "mix-again.safetensors" }).waitFor();
    // Block weights: a preset fills one value per block of A's architecture (SD 1.x: 26).
    await page.getByLabel("Block weights (row 1)").check();
    await row(1).getByLabel("Preset").selectOption("GRAD_V");
    assert.equal(await row(1).locator(".block-grid input").count(), 26);
    assert.equal(await row(1).getByLabel("IN00 (row 1)").inputValue(), "1");
    await page.locator("#check", { hasText: /^OK/ }).waitFor();
    await row(1).locator(".row-multiplier").fill("0.1,0.2");
    await page.locator("#check", { hasText: /sweep would write the same model/ }).waitFor();
    await page.getByLabel("Block weights (row 1)").uncheck();
    await page.locator("#check", { hasText: /^OK/ }).waitFor();
  });

  it("cancels a run from the page and leaves nothing", async () => {
    const before = entries(f.out);
    await page.getByRole("tab", { name: "Recipes" }).click();
    await page.locator("#recipe-text").fill("big = bigx + bigy + bigz, 0.5, multiply-difference, safetensors\n");
    await page.getByRole("button", { name: "Load into the board" }).click();
    await page.getByRole("tab", { name: "Board" }).click();
    await page.locator("#plan-outputs", { hasText: "big.safetensors" }).waitFor();
    // The engine's test knob: a pause after each 1M-element chunk (the job's worker copies the
    // environment when the run starts), so the run is still merging when Cancel is clicked.
    process.env.TENSORMERGE_WINDOW_PAUSE_MS = "1000";
    try {
      await page.locator("#run").click();
      await page.locator("#task-state", { hasText: /^merging$/ }).waitFor({ timeout: 30000 }).catch(async (e) => {
        throw new Error(`${(e as Error).message}; check: ${await checkText()}; task: ${await page.locator("#task").textContent()}`);
      });
      await page.locator("#cancel").click();
      await page.locator("#task-state", { hasText: /^cancelled$/ }).waitFor({ timeout: 30000 });
    } finally {
      delete process.env.TENSORMERGE_WINDOW_PAUSE_MS;
    }
    await page.locator("#results", { hasText: "Cancelled: nothing was written." }).waitFor();
    await page.screenshot({ path: join(SHOTS, "board-cancelled.png"), fullPage: true });
    assert.deepEqual(entries(f.out), before);
  });

  it("lists the models and draws the compare chart, one series per model", async () => {
    await page.getByRole("tab", { name: "Models" }).click();
    await page.waitForSelector("#models tbody tr");
    assert.ok((await page.locator("#models tbody tr").count()) >= 7);
    await page.getByRole("button", { name: "mix", exact: true }).click();
    await page.waitForSelector(".tree");
    await page.screenshot({ path: join(SHOTS, "models.png"), fullPage: true });
    await page.getByRole("tab", { name: "Compare" }).click();
    await page.locator("#compare-base").fill("base");
    await page.locator(".compare-model").first().fill("mix");
    await page.getByRole("button", { name: "Add a model" }).click();
    await page.locator(".compare-model").nth(1).fill("style");
    await page.getByRole("button", { name: "Compare", exact: true }).click();
    await page.waitForSelector("#compare-svg");
    assert.equal(await page.locator("#compare-svg g.series").count(), 2);
    assert.deepEqual(await page.locator("#compare-svg g.series").evaluateAll((els) => els.map((e) => e.getAttribute("data-model"))), ["mix.safetensors", "style.safetensors"]);
    await page.screenshot({ path: join(SHOTS, "compare.png"), fullPage: true });
  });
});
