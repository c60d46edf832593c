/**
 * The UI's JSON API (documented in API.md): every route checks what the request names, then
 * calls the library — the same calls the CLI makes. No merge logic lives here.
 */
import { randomBytes } from "node:crypto";
import { readdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { basename, extname, isAbsolute, join } from "node:path";
import { blockMapFor, BLOCK_PRESETS, type BlockMap } from "../blocks";
import { compareModels } from "../compare";
import { OUTPUT_DTYPES } from "../dtypes";
import { nativeAvailable } from "../engine";
import { MergeError } from "../errors";
import { openModel } from "../formats";
import { checkCompatibility } from "../library/compat";
import { getFileHashes, type HashCache } from "../library/hash-cache";
import { inspectOpenedModel } from "../library/inspect";
import { listModels } from "../library/scan";
import { METHODS } from "../methods/registry";
import { detectRecipeFormat, formatRecipe, parseJsonRecipe, parseRecipe, recipeToJson, reproduce } from "../recipes";
import { embeddedRecipe } from "../recipes/metadata";
import { runRecipe, type RecipeProgress, type RecipeRunReport } from "../recipes/run";
import { SLOTS, blockMapOf, type Recipe, type RecipeInput } from "../recipes/types";
import { HISTORY_FILE, refuseShortDisk } from "../cli/commands/run";
import { HttpError, MAX_BODY_BYTES, readJsonBody, type PathGuard } from "./security";
import type { TaskHub, TaskState } from "./tasks";

export interface ApiContext {
  guard: PathGuard;
  /** Real paths of the model folders. */
  modelDirs: string[];
  /** Real path of the output folder. */
  outDir: string;
  hub: TaskHub;
  cache: HashCache;
  version: string;
  engine?: "auto" | "native" | "js";
  threads?: number;
}

type Handler = (ctx: ApiContext, req: IncomingMessage, query: URLSearchParams) => Promise<unknown>;

const RECIPE_EXTENSIONS = [".json", ".txt"];

/** Every path the library searches: the model folders, then the output folder. */
function searchDirs(ctx: ApiContext): string[] {
  return ctx.modelDirs.includes(ctx.outDir) ? ctx.modelDirs : [...ctx.modelDirs, ctx.outDir];
}

/**
 * A model reference from a request: a path (absolute or with a folder part) must lie under the
 * allowed folders and is replaced by its real path; a bare name or hash is left to the library,
 * which looks it up in those folders only (relative to the first, so it cannot climb out).
 */
async function confineRef(ctx: ApiContext, ref: unknown, what: string): Promise<string> {
  if (typeof ref !== "string" || ref.trim() === "") throw new HttpError(400, "BAD_REQUEST", `${what} must be a model path or name`);
  const bare = !isAbsolute(ref) && !ref.includes("/") && !ref.includes("\\") && ref !== "." && ref !== "..";
  return bare ? ref : ctx.guard.confine(ref, what);
}

async function confineRecipe(ctx: ApiContext, body: Record<string, unknown>): Promise<{ recipe: Recipe; bindings: Record<string, string> }> {
  if (body.recipe === undefined) throw new HttpError(400, "BAD_REQUEST", "\"recipe\" is missing (a JSON recipe, as lib/recipes/recipe.schema.json describes)");
  const recipe = parseJsonRecipe(body.recipe);
  const fix = async (input: RecipeInput | undefined, what: string) => {
    if (input?.kind === "model") input.ref = await confineRef(ctx, input.ref, what);
  };
  for (const [i, row] of recipe.rows.entries()) {
    for (const slot of SLOTS) await fix(row.inputs[slot], `row ${i + 1} (${row.name}) ${slot.toUpperCase()}`);
    await fix(row.vae, `row ${i + 1} (${row.name}) VAE`);
    await fix(row.base, `row ${i + 1} (${row.name}) base`);
    for (const [k, m] of (row.models ?? []).entries()) await fix(m.input, `row ${i + 1} (${row.name}) model ${k + 1}`);
  }
  const bindings: Record<string, string> = {};
  if (body.bindings !== undefined) {
    if (body.bindings === null || typeof body.bindings !== "object" || Array.isArray(body.bindings)) throw new HttpError(400, "BAD_REQUEST", "\"bindings\" must be an object of NAME → model");
    for (const [name, ref] of Object.entries(body.bindings)) bindings[name] = await confineRef(ctx, ref, `__${name}__`);
  }
  return { recipe, bindings };
}

function flag(body: Record<string, unknown>, name: string): boolean {
  const v = body[name];
  if (v !== undefined && typeof v !== "boolean") throw new HttpError(400, "BAD_REQUEST", `"${name}" must be true or false`);
  return v === true;
}

function runOptions(ctx: ApiContext, bindings: Record<string, string>, body: Record<string, unknown>) {
  return {
    bindings,
    strictBindings: false,
    modelDirs: searchDirs(ctx),
    cwd: ctx.modelDirs[0]!,
    outDir: ctx.outDir,
    hashCache: ctx.cache,
    overwrite: flag(body, "overwrite"),
    skipExisting: flag(body, "skipExisting"),
    ...(ctx.engine ? { engine: ctx.engine } : {}),
    ...(ctx.threads ? { threads: ctx.threads } : {}),
  };
}

/** A run report without the plan and compiled recipe (large, and not JSON). */
function runSummary(r: RecipeRunReport) {
  return {
    dryRun: r.dryRun,
    rows: r.compiled.recipe.rows.length,
    inputs: r.inputs,
    outputs: r.outputs,
    unsaved: r.compiled.rows.filter((c) => c.outputs.length === 0).map((c) => c.row.name),
    bytesRead: r.bytesRead,
    bytesWritten: r.bytesWritten,
    passes: r.passes,
    disk: r.disk,
    engine: r.engine,
    isa: r.isa,
    threads: r.threads,
    seconds: r.seconds,
    warnings: r.warnings,
    nonFinite: r.nonFinite,
  };
}

/** Recipe progress → task state (one bar per pass, each output's state). */
function trackRecipe(update: (change: (s: TaskState) => void) => void): (e: RecipeProgress) => void {
  return (e) => update((s) => {
    if (e.phase === "hash") {
      s.phase = "hashing";
      s.hashing = { path: e.path, bytesDone: e.bytesDone, bytesTotal: e.bytesTotal };
    } else if (e.phase === "merge") {
      s.phase = "merging";
      s.hashing = null;
      const pass = e.progress.pass ?? 1;
      while (s.passes.length < e.passes) s.passes.push({ pass: s.passes.length + 1, passes: e.passes, fraction: 0, bytesDone: 0, bytesTotal: 0 });
      for (let k = 0; k < pass - 1; k++) s.passes[k]!.fraction = 1;
      s.passes[pass - 1] = { pass, passes: e.passes, fraction: e.progress.fraction, bytesDone: e.progress.bytesDone, bytesTotal: e.progress.bytesTotal };
    } else {
      if (e.state === "finishing") s.phase = "finishing";
      const o = s.outputs.find((x) => x.path === e.path);
      if (o) o.state = e.state;
      else s.outputs.push({ path: e.path, state: e.state });
    }
  });
}

function errorBody(e: unknown): { code: string; message: string; path?: string; tensor?: string } {
  if (e instanceof MergeError) return { code: e.code, message: e.message, ...(e.path ? { path: e.path } : {}), ...(e.tensor ? { tensor: e.tensor } : {}) };
  if (e instanceof HttpError) return { code: e.code, message: e.message };
  return { code: "INTERNAL", message: e instanceof Error ? e.message : String(e) };
}

function mapOut(map: BlockMap | null | undefined) {
  return map ? { id: map.id, label: map.label, names: [...map.names] } : null;
}

const GET: Record<string, Handler> = {
  "/api/info": async (ctx) => ({
    version: ctx.version, modelDirs: ctx.modelDirs, outDir: ctx.outDir, nativeEngine: nativeAvailable(),
    dtypes: ["same", ...OUTPUT_DTYPES], formats: ["safetensors", "ckpt"], historyFile: join(ctx.outDir, HISTORY_FILE), maxBodyBytes: MAX_BODY_BYTES,
  }),
  "/api/methods": async () => ({
    methods: METHODS.map((m) => ({
      name: m.name, summary: m.summary, formula: m.formula, source: m.source ?? null, inputs: [...m.inputs],
      many: m.many ? { base: m.many.base, min: m.many.min, max: m.many.max } : null,
      params: m.params.map((p) => ({ name: p.name, summary: p.summary, default: p.default, range: [...p.range], perModel: p.perModel === true, integer: p.integer === true })),
      usesMultiplier: m.usesMultiplier, clampable: m.clampable === true,
    })),
  }),
  "/api/blocks": async (ctx, _req, q) => {
    const path = q.get("path");
    const maps = { sd: mapOut(blockMapFor("sd1")), sdxl: mapOut(blockMapFor("sdxl")), flux: mapOut(blockMapFor("flux")) };
    const presets = [...BLOCK_PRESETS].map(([name, values]) => ({ name, values: [...values] }));
    if (path === null) return { maps, presets, map: null };
    const model = await openModel(await ctx.guard.confine(path, "path"));
    return { maps, presets, map: mapOut(blockMapOf(model)) };
  },
  "/api/models": async (ctx) => ({ models: await listModels(searchDirs(ctx), { hash: false, cache: ctx.cache }) }),
  "/api/models/detail": async (ctx, _req, q) => {
    const path = await ctx.guard.confine(q.get("path") ?? "", "path");
    const model = await openModel(path);
    const report = inspectOpenedModel(model);
    const hashes = await getFileHashes(path, { cache: ctx.cache, cachedOnly: true });
    const recipe = embeddedRecipe(model.metadata);
    const map = blockMapOf(model);
    return { inspect: report, hashes: hashes ?? null, recipe: recipe ? recipeToJson(recipe) : null, blocks: mapOut(map) };
  },
  "/api/tasks/current": async (ctx) => ({ task: ctx.hub.state }),
  "/api/history": async (ctx) => {
    const text = await readFile(join(ctx.outDir, HISTORY_FILE), "utf8").catch(() => "");
    const entries: unknown[] = [];
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      try {
        entries.push(JSON.parse(line));
      } catch {
        // a line cut short by a crash: skip it, keep the rest
      }
    }
    return { path: join(ctx.outDir, HISTORY_FILE), entries: entries.reverse().slice(0, 500) };
  },
  "/api/recipes": async (ctx) => {
    const names = await readdir(ctx.outDir).catch(() => [] as string[]);
    const recipes = [];
    for (const name of names.sort()) {
      if (name.startsWith(".") || !RECIPE_EXTENSIONS.includes(extname(name).toLowerCase())) continue;
      const s = await stat(join(ctx.outDir, name)).catch(() => undefined);
      if (s?.isFile()) recipes.push({ name, path: join(ctx.outDir, name), bytes: s.size, modified: new Date(s.mtimeMs).toISOString() });
    }
    return { recipes };
  },
  "/api/recipes/file": async (ctx, _req, q) => {
    const path = await ctx.guard.confine(q.get("path") ?? "", "path");
    if (!RECIPE_EXTENSIONS.includes(extname(path).toLowerCase())) throw new HttpError(400, "BAD_REQUEST", `${path}: a recipe file ends in .json or .txt`);
    const s = await stat(path);
    if (s.size > MAX_BODY_BYTES) throw new HttpError(413, "BODY_TOO_LARGE", `${path}: larger than ${MAX_BODY_BYTES} bytes`);
    const text = await readFile(path, "utf8");
    return { path, text, format: detectRecipeFormat(text), recipe: recipeToJson(parseRecipe(text)) };
  },
};

const POST: Record<string, Handler> = {
  "/api/compat": async (ctx, req) => {
    const body = await readJsonBody(req);
    const paths = pathList(body.paths, 2);
    const models = [];
    for (const [i, p] of paths.entries()) models.push(await openModel(await ctx.guard.confine(p, `paths[${i}]`)));
    return checkCompatibility(models);
  },
  "/api/check": async (ctx, req) => {
    const body = await readJsonBody(req);
    try {
      const { recipe, bindings } = await confineRecipe(ctx, body);
      const report = await runRecipe(recipe, { ...runOptions(ctx, bindings, body), dryRun: true, recipeMetadata: true });
      const plan = runSummary(report);
      refuseShortDisk(report.disk);
      return { ok: true, plan };
    } catch (e) {
      if (e instanceof HttpError && e.code === "BAD_REQUEST") throw e;
      return { ok: false, error: errorBody(e) };
    }
  },
  "/api/runs": async (ctx, req) => {
    const body = await readJsonBody(req);
    const { recipe, bindings } = await confineRecipe(ctx, body);
    const options = runOptions(ctx, bindings, body);
    const title = `board: ${recipe.rows.length} row${recipe.rows.length === 1 ? "" : "s"}`;
    return { task: ctx.hub.start("run", title, [], async (signal, update) => {
      const report = await runRecipe(recipe, {
        ...options, history: join(ctx.outDir, HISTORY_FILE), recipeSource: recipe.name ?? "tensormerge ui", signal, onProgress: trackRecipe(update),
      });
      return runSummary(report);
    }) };
  },
  "/api/reproduce": async (ctx, req) => {
    const body = await readJsonBody(req);
    const source = await ctx.guard.confine(body.path, "path");
    const dryRun = flag(body, "dryRun");
    const out = await ctx.guard.confineNew(ctx.outDir, `${basename(source, extname(source))}.reproduced${extname(source) === ".ckpt" ? ".ckpt" : ".safetensors"}`, "output");
    const options = {
      modelDirs: searchDirs(ctx), out, overwrite: flag(body, "overwrite"), hashCache: ctx.cache, dryRun,
      ...(ctx.engine ? { engine: ctx.engine } : {}), ...(ctx.threads ? { threads: ctx.threads } : {}),
    };
    return { task: ctx.hub.start("reproduce", `reproduce ${basename(source)}`, [], async (signal, update) => {
      const r = await reproduce(source, { ...options, signal, onProgress: trackRecipe(update) });
      if (r.kind === "bake") return { source: r.source, out: r.out, identical: r.identical, sourceSha256: r.sourceSha256, outSha256: r.outSha256, bake: r.record };
      return { source: r.source, out: r.out, identical: r.identical, sourceSha256: r.sourceSha256, outSha256: r.outSha256, recipe: recipeToJson(r.recipe), run: runSummary(r.run) };
    }) };
  },
  "/api/hash": async (ctx, req) => {
    const body = await readJsonBody(req);
    const paths = body.paths === undefined ? null : pathList(body.paths, 1);
    const confined = paths ? await Promise.all(paths.map((p, i) => ctx.guard.confine(p, `paths[${i}]`))) : null;
    return { task: ctx.hub.start("hash", confined ? `hash ${confined.length} model${confined.length === 1 ? "" : "s"}` : "hash every model", [], async (signal, update) => {
      const onHash = (path: string, bytesDone: number, bytesTotal: number, index: number, count: number) => update((s) => {
        s.phase = "hashing";
        s.hashing = { path, bytesDone, bytesTotal };
        s.passes = [{ pass: 1, passes: 1, fraction: count ? (index + (bytesTotal ? bytesDone / bytesTotal : 1)) / count : 1, bytesDone, bytesTotal }];
      });
      if (!confined) {
        const models = await listModels(searchDirs(ctx), {
          cache: ctx.cache, signal,
          onProgress: (p) => { if (p.phase === "hash") onHash(p.path, p.bytesDone ?? 0, p.bytesTotal ?? 0, p.index, p.count); },
        });
        return { models: models.map((m) => ({ path: m.path, sha256: m.sha256, autov2: m.autov2, legacy: m.legacyHash, cached: m.hashCached, error: m.error })) };
      }
      const out = [];
      for (const [i, p] of confined.entries()) {
        const h = await getFileHashes(p, { cache: ctx.cache, signal, onProgress: (done, total) => onHash(p, done, total, i, confined.length) });
        out.push({ path: p, sha256: h.sha256, autov2: h.autov2, legacy: h.legacy, cached: h.cached, error: null });
      }
      return { models: out };
    }) };
  },
  "/api/compare": async (ctx, req) => {
    const body = await readJsonBody(req);
    const paths = await Promise.all(pathList(body.paths, 2).map((p, i) => ctx.guard.confine(p, `paths[${i}]`)));
    return { task: ctx.hub.start("compare", `compare ${paths.length} models`, [], (signal, update) => compareModels(paths, {
      signal,
      onProgress: (p) => update((s) => {
        s.phase = "comparing";
        s.passes = [{ pass: 1, passes: 1, fraction: p.fraction, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }];
      }),
    })) };
  },
  "/api/recipes/parse": async (_ctx, req) => {
    const body = await readJsonBody(req);
    if (typeof body.text !== "string") throw new HttpError(400, "BAD_REQUEST", "\"text\" must be the recipe text");
    return { format: detectRecipeFormat(body.text), recipe: recipeToJson(parseRecipe(body.text)) };
  },
  "/api/recipes/format": async (_ctx, req) => {
    const body = await readJsonBody(req);
    if (body.format !== "classic" && body.format !== "json") throw new HttpError(400, "BAD_REQUEST", "\"format\" must be \"classic\" or \"json\"");
    return { text: formatRecipe(parseJsonRecipe(body.recipe), body.format) };
  },
  "/api/recipes/save": async (ctx, req) => {
    const body = await readJsonBody(req);
    if (typeof body.name !== "string" || typeof body.text !== "string") throw new HttpError(400, "BAD_REQUEST", "\"name\" and \"text\" must be strings");
    if (!RECIPE_EXTENSIONS.includes(extname(body.name).toLowerCase())) throw new HttpError(400, "BAD_REQUEST", "a recipe file name ends in .json or .txt");
    parseRecipe(body.text); // only a valid recipe is saved
    const path = await ctx.guard.confineNew(ctx.outDir, body.name, "name");
    const exists = await stat(path).then(() => true, () => false);
    if (exists && !flag(body, "overwrite")) throw new MergeError("OUTPUT_EXISTS", `${path} exists (save with overwrite to replace it)`, { path });
    const tmp = join(ctx.outDir, `.${body.name}.tensormerge-${randomBytes(4).toString("hex")}.tmp`);
    try {
      await writeFile(tmp, body.text, { flag: "wx" });
      await rename(tmp, path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
    return { path };
  },
};

function pathList(v: unknown, min: number): string[] {
  if (!Array.isArray(v) || v.length < min || v.length > 64 || !v.every((p) => typeof p === "string")) {
    throw new HttpError(400, "BAD_REQUEST", `"paths" must be a list of ${min} to 64 paths`);
  }
  return v as string[];
}

/** Routes one API request; returns false when no route matches. */
export async function handleApi(ctx: ApiContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
  const path = url.pathname;
  if (req.method === "GET" && path === "/api/events") {
    ctx.hub.subscribe(res);
    return true;
  }
  const cancel = /^\/api\/tasks\/([A-Za-z0-9-]{1,40})\/cancel$/.exec(path);
  if (req.method === "POST" && cancel) {
    sendJson(res, 200, { task: ctx.hub.cancel(cancel[1]!) });
    return true;
  }
  const table = req.method === "GET" ? GET : req.method === "POST" ? POST : undefined;
  const handler = table && Object.hasOwn(table, path) ? table[path] : undefined;
  if (!handler) {
    const known = Object.hasOwn(GET, path) || Object.hasOwn(POST, path);
    throw known ? new HttpError(405, "METHOD_NOT_ALLOWED", `${req.method} is not allowed on ${path}`) : new HttpError(404, "NOT_FOUND", `no API route ${path}`);
  }
  try {
    const result = await handler(ctx, req, url.searchParams);
    sendJson(res, path === "/api/runs" || path === "/api/reproduce" || path === "/api/hash" || path === "/api/compare" ? 202 : 200, result);
  } catch (e) {
    if (e instanceof HttpError) throw e;
    sendJson(res, 422, { error: errorBody(e) });
  }
  return true;
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
  res.end(body);
}

export { errorBody };
