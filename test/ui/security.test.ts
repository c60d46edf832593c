/**
 * The UI server's defences over real HTTP: token → cookie, Host and Origin checks, no CORS,
 * paths confined to the model and output folders, bounded and checked bodies.
 */
import assert from "node:assert/strict";
import { symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { call, startFixture, writeBlockModel, type Fixture } from "./helpers";

describe("ui server: security", function () {
  let f: Fixture;
  let outside: string;
  before(async () => {
    f = await startFixture({}, (models) => {
      writeBlockModel(join(models, "a.safetensors"), 1);
      writeBlockModel(join(models, "b.safetensors"), 2);
    });
    // A model outside both folders, and a symlink to it from inside the model folder.
    outside = join(f.root, "outside.safetensors");
    writeBlockModel(outside, 3);
    symlinkSync(outside, join(f.models, "link.safetensors"));
  });
  after(() => f.close());

  it("exchanges the URL's token for an HttpOnly SameSite=Strict cookie and strips it from the address", async () => {
    assert.match(f.ui.url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]{20,}$/);
    const r = await call(f, `/?token=${f.ui.token}`, { auth: "none" });
    assert.equal(r.status, 303);
    assert.equal(r.headers.location, "/");
    const cookie = String(r.headers["set-cookie"]);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    const pair = cookie.split(";")[0]!;
    const page = await call(f, "/", { auth: { cookie: pair } });
    assert.equal(page.status, 200);
    assert.match(page.text, /<title>tensormerge<\/title>/);
    assert.equal((await call(f, "/api/info", { auth: { cookie: pair } })).status, 200);
    const kept = await call(f, `/?x=1&token=${f.ui.token}`, { auth: "none" });
    assert.equal(kept.headers.location, "/?x=1");
  });

  it("refuses a wrong token, a wrong cookie and no credentials", async () => {
    const wrong = await call(f, "/?token=not-the-token", { auth: "none" });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.code, "TOKEN_REFUSED");
    assert.equal(wrong.headers["set-cookie"], undefined);
    assert.equal((await call(f, "/api/info", { auth: "none" })).json.error.code, "TOKEN_REFUSED");
    assert.equal((await call(f, "/api/info", { auth: { cookie: `tensormerge_ui_${f.ui.port}=${f.ui.token.slice(1)}x` } })).status, 401);
    assert.equal((await call(f, "/api/info", { auth: "none", headers: { authorization: "Bearer nope" } })).status, 401);
    assert.equal((await call(f, "/", { auth: "none" })).status, 401);
  });

  it("refuses a Host that is not the server's (DNS rebinding), even with the token", async () => {
    for (const host of ["evil.example:" + f.ui.port, "127.0.0.1:1", "127.0.0.1", `127.0.0.1.evil.example:${f.ui.port}`]) {
      const r = await call(f, "/api/info", { headers: { host } });
      assert.equal(r.status, 421, host);
      assert.equal(r.json.error.code, "HOST_REFUSED");
    }
    assert.equal((await call(f, "/api/info", { headers: { host: `localhost:${f.ui.port}` } })).status, 200);
    assert.equal((await call(f, `/?token=${f.ui.token}`, { auth: "none", headers: { host: "rebind.example" } })).status, 421);
  });

  it("refuses foreign Origins and cross-site fetches, and sends no CORS headers", async () => {
    const body = { text: "a = __A__ + __B__, 0.5" };
    for (const origin of ["http://evil.example", "https://127.0.0.1:" + f.ui.port, "null", `http://127.0.0.1:${f.ui.port}.evil.example`]) {
      const r = await call(f, "/api/recipes/parse", { body, headers: { origin } });
      assert.equal(r.status, 403, origin);
      assert.equal(r.json.error.code, "ORIGIN_REFUSED");
      assert.equal(r.headers["access-control-allow-origin"], undefined);
    }
    for (const site of ["cross-site", "same-site"]) assert.equal((await call(f, "/api/info", { headers: { "sec-fetch-site": site } })).status, 403, site);
    assert.equal((await call(f, "/api/info", { headers: { "sec-fetch-site": "same-origin" } })).status, 200);
    const own = await call(f, "/api/recipes/parse", { body, headers: { origin: `http://127.0.0.1:${f.ui.port}` } });
    assert.equal(own.status, 200);
    for (const h of Object.keys(own.headers)) assert.ok(!h.startsWith("access-control-"), h);
    const preflight = await call(f, "/api/runs", { method: "OPTIONS", headers: { origin: "http://evil.example", "access-control-request-method": "POST" } });
    assert.equal(preflight.headers["access-control-allow-origin"], undefined);
    assert.notEqual(preflight.status, 200);
  });

  it("refuses paths outside the model and output folders (absolute, relative, through a symlink)", async () => {
    for (const path of [outside, "../outside.safetensors", join(f.models, "..", "outside.safetensors"), join(f.models, "link.safetensors"), "/etc/passwd"]) {
      const r = await call(f, `/api/models/detail?path=${encodeURIComponent(path)}`);
      assert.equal(r.status, 403, path);
      assert.equal(r.json.error.code, "PATH_REFUSED", path);
    }
    const compare = await call(f, "/api/compare", { body: { paths: [join(f.models, "a.safetensors"), outside] } });
    assert.equal(compare.json.error.code, "PATH_REFUSED");
    const compat = await call(f, "/api/compat", { body: { paths: [join(f.models, "a.safetensors"), join(f.models, "link.safetensors")] } });
    assert.equal(compat.json.error.code, "PATH_REFUSED");
    // In a recipe: a model input, a VAE, a binding; and as a reproduce source and a recipe file.
    const row = (a: unknown, extra = {}) => ({ recipe: { rows: [{ name: "m", a, b: { model: join(f.models, "b.safetensors") }, multiplier: 0.5, ...extra }] } });
    for (const body of [row({ model: outside }), row({ model: "../outside.safetensors" }), row({ var: "X" }, {}), row({ model: join(f.models, "a.safetensors") }, { vae: { model: outside } })]) {
      const r = await call(f, "/api/check", { body: { ...body, bindings: { X: outside } } });
      assert.equal(r.json.ok, false);
      assert.equal(r.json.error.code, "PATH_REFUSED", JSON.stringify(body));
      const run = await call(f, "/api/runs", { body: { ...body, bindings: { X: outside } } });
      assert.equal(run.status, 403);
    }
    assert.equal((await call(f, "/api/reproduce", { body: { path: outside } })).json.error.code, "PATH_REFUSED");
    assert.equal((await call(f, `/api/recipes/file?path=${encodeURIComponent("/etc/hostname")}`)).json.error.code, "PATH_REFUSED");
    assert.equal((await call(f, "/api/recipes/save", { body: { name: "../x.txt", text: "a = __A__ + __B__, 0.5" } })).json.error.code, "BAD_REQUEST");
  });

  it("refuses oversized, non-JSON and malformed bodies", async () => {
    const big = await call(f, "/api/recipes/parse", { raw: JSON.stringify({ text: "x".repeat(1100 * 1024) }) });
    assert.equal(big.status, 413);
    assert.equal(big.json.error.code, "BODY_TOO_LARGE");
    const form = await call(f, "/api/recipes/parse", { raw: "text=a", headers: { "content-type": "application/x-www-form-urlencoded" } });
    assert.equal(form.status, 415);
    assert.equal((await call(f, "/api/recipes/parse", { raw: "{not json" })).status, 400);
    assert.equal((await call(f, "/api/recipes/parse", { raw: "[1,2]" })).status, 400);
    assert.equal((await call(f, "/api/recipes/parse", { body: { text: 5 } })).status, 400);
    assert.equal((await call(f, "/api/compare", { body: { paths: "a" } })).status, 400);
    const proto = await call(f, "/api/recipes/parse", { raw: '{"__proto__": {"text": "a = __A__ + __B__, 0.5"}}' });
    assert.equal(proto.status, 400);
  });

  it("serves only the static page's own files", async () => {
    const js = await call(f, "/app.js");
    assert.equal(js.status, 200);
    assert.match(String(js.headers["content-type"]), /text\/javascript/);
    assert.match(String(js.headers["content-security-policy"]), /default-src 'self'/);
    for (const p of ["/../package.json", "/%2e%2e/package.json", "/static/../../server.js", "/%2e%2e%2fpackage.json", "/nope.js", "/api.js/../../../package.json"]) {
      assert.equal((await call(f, p)).status, 404, p);
    }
    assert.equal((await call(f, "/api/nope")).status, 404);
    assert.equal((await call(f, "/api/info", { method: "DELETE" })).status, 405);
    writeFileSync(join(f.out, "note.json"), "{}");
    assert.equal((await call(f, "/note.json")).status, 404);
  });
});
