/**
 * `tensormerge ui`: the merge board in a browser, served by the package on 127.0.0.1.
 *
 * The server is thin: it authenticates (security.ts), serves the static page (static/, plain ES
 * modules, no build step) and routes the JSON API (api.ts) to the library. Long work runs as
 * tasks (tasks.ts) whose state every open page receives over Server-Sent Events.
 *
 * @example
 * const ui = await startUiServer({ modelDirs: ["/sd/models/Stable-diffusion"], outDir: "/sd/out" });
 * console.log(ui.url); // http://127.0.0.1:7870/?token=…
 * await ui.close();    // cancels a running merge; the library removes what it staged
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, relative, sep } from "node:path";
import { MergeError } from "../errors";
import { HashCache } from "../library/hash-cache";
import { errorBody, handleApi, sendJson, type ApiContext } from "./api";
import { HttpError, PathGuard, allowedHosts, checkOrigin, cookieName, isAuthorized, newToken, sameSecret } from "./security";
import { TaskHub } from "./tasks";

export interface UiServerOptions {
  /** Model folders (A1111's models/Stable-diffusion, ComfyUI's models/checkpoints, …). */
  modelDirs: string[];
  /** Where outputs, saved recipes and the history go (default: the first model folder). */
  outDir?: string;
  /** Address to bind (default 127.0.0.1). */
  host?: string;
  /** Port (default 7870; 0 picks a free one). */
  port?: number;
  /** The secret of the printed URL (default: random). */
  token?: string;
  engine?: "auto" | "native" | "js";
  threads?: number;
}

export interface UiServer {
  /** The address to open, token included. */
  url: string;
  port: number;
  token: string;
  server: Server;
  /** Stops: cancels a running task, waits for the library to clean up, closes every connection. */
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml", ".json": "application/json; charset=utf-8", ".png": "image/png", ".ico": "image/x-icon",
};

const SECURITY_HEADERS = {
  "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
};

/**
 * The static page: lib/ui/static, beside the compiled server in dist/lib/ui in a clone and in an
 * installed package alike (package.json "files" ships lib/ui/static).
 */
export function staticDir(): string {
  for (const dir of [join(__dirname, "static"), join(__dirname, "..", "..", "..", "lib", "ui", "static")]) {
    if (existsSync(join(dir, "index.html"))) return dir;
  }
  throw new MergeError("FILE_NOT_FOUND", `tensormerge ui: the page (lib/ui/static/index.html) is missing from ${join(__dirname, "..", "..", "..")}`);
}

/** Every file of the static folder by URL path: nothing else can be served, whatever the URL says. */
function staticFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (TYPES[extname(name)]) files.set(`/${relative(dir, full).split(sep).join("/")}`, full);
    }
  };
  walk(dir);
  files.set("/", join(dir, "index.html"));
  return files;
}

function version(): string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require("../../../package.json") as { version: string }).version;
  } catch {
    return "unknown";
  }
}

const UNAUTHORIZED_PAGE = `<!doctype html><meta charset="utf-8"><title>tensormerge ui</title>
<p>This page needs the address <code>tensormerge ui</code> printed in its terminal (with <code>?token=…</code>).</p>`;

/** Starts the UI server. The model and output folders must exist. */
export async function startUiServer(options: UiServerOptions): Promise<UiServer> {
  if (!Array.isArray(options.modelDirs) || options.modelDirs.length === 0) throw new MergeError("INVALID_ARGUMENT", "tensormerge ui needs at least one model folder (--model-dir DIR)");
  const modelGuard = await PathGuard.of(options.modelDirs).catch((e: NodeJS.ErrnoException) => {
    throw new MergeError("FILE_NOT_FOUND", `a model folder does not exist: ${e.path ?? e.message}`, e.path ? { path: e.path } : {});
  });
  const modelDirs = [...modelGuard.roots];
  const outDir = (await PathGuard.of([options.outDir ?? modelDirs[0]!]).catch((e: NodeJS.ErrnoException) => {
    throw new MergeError("FILE_NOT_FOUND", `the output folder does not exist: ${e.path ?? options.outDir}`, { path: options.outDir ?? "" });
  })).roots[0]!;
  if (!statSync(outDir).isDirectory()) throw new MergeError("INVALID_ARGUMENT", `${outDir} is not a folder`, { path: outDir });
  const guard = await PathGuard.of([...modelDirs, outDir]);
  const host = options.host ?? "127.0.0.1";
  const token = options.token ?? newToken();
  const files = staticFiles(staticDir());
  const hub = new TaskHub();
  const ctx: ApiContext = {
    guard, modelDirs, outDir, hub, cache: await HashCache.open(), version: version(),
    ...(options.engine ? { engine: options.engine } : {}), ...(options.threads ? { threads: options.threads } : {}),
  };
  let hosts = new Set<string>();
  let port = 0;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    try {
      checkOrigin(req, hosts);
      const url = new URL(req.url ?? "/", "http://localhost");
      const given = url.searchParams.get("token");
      if (given !== null) {
        if (req.method !== "GET") throw new HttpError(400, "BAD_REQUEST", "the token goes in the page address only");
        // Exchanged for a cookie, then removed from the address (history, bookmarks, screen shares).
        if (!sameSecret(given, token)) throw new HttpError(401, "TOKEN_REFUSED", "wrong token: open the address tensormerge ui printed");
        url.searchParams.delete("token");
        res.writeHead(303, {
          "Set-Cookie": `${cookieName(port)}=${token}; HttpOnly; SameSite=Strict; Path=/`,
          Location: url.pathname + url.search,
          "Cache-Control": "no-store",
        });
        res.end();
        return;
      }
      if (!isAuthorized(req, token, port)) {
        if (req.method === "GET" && !url.pathname.startsWith("/api/")) {
          res.writeHead(401, { "Content-Type": "text/html; charset=utf-8" });
          res.end(UNAUTHORIZED_PAGE);
          return;
        }
        throw new HttpError(401, "TOKEN_REFUSED", "not signed in: open the address tensormerge ui printed, or send Authorization: Bearer <token>");
      }
      if (url.pathname.startsWith("/api/")) {
        await handleApi(ctx, req, res, url);
        return;
      }
      const file = files.get(url.pathname);
      if (!file) throw new HttpError(404, "NOT_FOUND", `no page ${url.pathname}`);
      if (req.method !== "GET" && req.method !== "HEAD") throw new HttpError(405, "METHOD_NOT_ALLOWED", `${req.method} is not allowed on ${url.pathname}`);
      const body = await readFile(file);
      res.writeHead(200, { "Content-Type": TYPES[extname(file)]!, "Content-Length": body.length, "Cache-Control": "no-cache" });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch (e) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof HttpError) sendJson(res, e.status, { error: errorBody(e) });
      else sendJson(res, 500, { error: errorBody(e) });
    }
  };

  const server = createServer((req, res) => { void handle(req, res); });
  server.requestTimeout = 60_000;
  await new Promise<void>((resolveListen, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => reject(e.code === "EADDRINUSE"
      ? new MergeError("INVALID_ARGUMENT", `port ${options.port ?? 7870} is in use (another tensormerge ui?); pick one with --port`)
      : e));
    server.listen(options.port ?? 7870, host, () => resolveListen());
  });
  port = (server.address() as AddressInfo).port;
  hosts = allowedHosts(host, port);
  const shown = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shown}:${port}/?token=${token}`,
    port,
    token,
    server,
    close: () => (closing ??= (async () => {
      await hub.close();
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      });
    })()),
  };
}
