/**
 * The UI server's defences, as Jupyter and Vite do it for a local server:
 *
 * - a random token, printed in the URL, exchanged once for an HttpOnly SameSite=Strict cookie
 *   (then a redirect strips it from the address bar and history); scripts send it as
 *   `Authorization: Bearer <token>`;
 * - the Host header must name the address the server listens on (a DNS-rebinding page reaches
 *   127.0.0.1 under its own host name, which is refused);
 * - an Origin header, when present, must be the server's own; `Sec-Fetch-Site` other than
 *   `same-origin` or `none` is refused (another port of 127.0.0.1 is "same-site"); writes must be `application/json`, which a cross-site form cannot send;
 * - no CORS headers, ever;
 * - every path a request names must resolve (realpath, so symlinks count where they lead) under
 *   the model folders or the output folder the user gave.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { realpath } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { isAbsolute, resolve, sep } from "node:path";

/** An HTTP refusal: status, a stable code (documented in API.md) and a message for people. */
export class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export const MAX_BODY_BYTES = 1 << 20;

export function newToken(): string {
  return randomBytes(24).toString("base64url");
}

/** Compares a secret in constant time. */
export function sameSecret(given: string, token: string): boolean {
  const a = Buffer.from(given), b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Cookies are not port-scoped, so two servers on one machine need two names. */
export function cookieName(port: number): string {
  return `tensormerge_ui_${port}`;
}

export function readCookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function isAuthorized(req: IncomingMessage, token: string, port: number): boolean {
  const cookie = readCookie(req, cookieName(port));
  if (cookie !== undefined && sameSecret(cookie, token)) return true;
  const auth = req.headers.authorization;
  return typeof auth === "string" && auth.startsWith("Bearer ") && sameSecret(auth.slice(7).trim(), token);
}

/** The Host values that name this server: its address and `localhost` for a loopback bind. */
export function allowedHosts(host: string, port: number): Set<string> {
  const hosts = new Set<string>();
  const add = (h: string) => hosts.add(`${h}:${port}`.toLowerCase());
  add(host.includes(":") ? `[${host}]` : host);
  if (host === "127.0.0.1" || host === "::1" || host === "localhost") ["127.0.0.1", "localhost", "[::1]"].forEach(add);
  return hosts;
}

/** Refuses a request whose Host, Origin or fetch metadata says it does not come from our own page. */
export function checkOrigin(req: IncomingMessage, hosts: Set<string>): void {
  const host = (req.headers.host ?? "").toLowerCase();
  if (!hosts.has(host)) throw new HttpError(421, "HOST_REFUSED", `Host "${req.headers.host ?? ""}" is not this server (open the address tensormerge ui printed)`);
  const origin = req.headers.origin;
  if (origin !== undefined && !(origin.toLowerCase().startsWith("http://") && hosts.has(origin.toLowerCase().slice(7)))) {
    throw new HttpError(403, "ORIGIN_REFUSED", `requests from ${origin} are refused: only the page this server serves may call it`);
  }
  // Another port of 127.0.0.1 is "same-site" (and gets SameSite=Strict cookies): only our own page ("same-origin") and a typed address ("none") pass.
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none") throw new HttpError(403, "ORIGIN_REFUSED", `${site} requests are refused`);
}

/** Reads a JSON object body of at most MAX_BODY_BYTES. */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/json") throw new HttpError(415, "BAD_REQUEST", "the body must be application/json");
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > MAX_BODY_BYTES) throw new HttpError(413, "BODY_TOO_LARGE", `the body is larger than ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, "BODY_TOO_LARGE", `the body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "BAD_REQUEST", "the body is not valid JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new HttpError(400, "BAD_REQUEST", "the body must be a JSON object");
  return value as Record<string, unknown>;
}

/** The folders requests may name, as real paths. */
export class PathGuard {
  private constructor(readonly roots: readonly string[]) {}

  static async of(dirs: readonly string[]): Promise<PathGuard> {
    const roots: string[] = [];
    for (const d of dirs) roots.push(await realpath(resolve(d)));
    return new PathGuard(roots);
  }

  contains(real: string): boolean {
    return this.roots.some((r) => real === r || real.startsWith(r.endsWith(sep) ? r : r + sep));
  }

  /**
   * The real path of `path` (absolute, or relative to the first root), which must exist and lie
   * under a root; `what` names it in the refusal.
   */
  async confine(path: unknown, what: string): Promise<string> {
    if (typeof path !== "string" || path.trim() === "" || path.includes("\0")) throw new HttpError(400, "BAD_REQUEST", `${what} must be a path`);
    const full = isAbsolute(path) ? path : resolve(this.roots[0]!, path);
    let real: string;
    try {
      real = await realpath(full);
    } catch {
      if (!this.contains(resolve(full))) throw this.refusal(what, path);
      throw new HttpError(404, "FILE_NOT_FOUND", `${what}: ${path}: no such file`);
    }
    if (!this.contains(real)) throw this.refusal(what, path);
    return real;
  }

  /** A path not yet written (an output): its folder must be a root or under one. */
  async confineNew(folder: string, name: string, what: string): Promise<string> {
    if (name === "" || name.includes("/") || name.includes("\\") || name.includes("\0") || name.startsWith(".")) {
      throw new HttpError(400, "BAD_REQUEST", `${what}: "${name}" is not a plain file name`);
    }
    const dir = await this.confine(folder, what);
    return resolve(dir, name);
  }

  private refusal(what: string, path: string): HttpError {
    return new HttpError(403, "PATH_REFUSED", `${what}: ${path} is outside the model and output folders this server was started with`);
  }
}
