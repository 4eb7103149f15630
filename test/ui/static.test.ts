/**
 * The built UI at /ui/: content types, caching (hashed assets for a year,
 * the page revalidated), gzip, security headers, no path traversal, the
 * first-load budget, and `ui.enabled: false`.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { gunzipSync } from "node:zlib";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { DEFAULT_UI_DIR } from "../../src/browse/static.js";
import { startServeProcess } from "../helpers/serve-process.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";

let registry: TestRegistry;

before(async () => {
  registry = await startTestRegistry();
});
after(() => registry.close());

/** A raw request: fetch() would normalise "..", which is exactly what an attacker's client does not do. */
function raw(path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(`${registry.url}/`, { path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function assets(): Promise<string[]> {
  const html = (await raw("/ui/")).body.toString("utf8");
  return [...html.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)].map((m) => m[1]!);
}

test("/ui redirects to /ui/, which is the page: HTML, revalidated, with a strict CSP", async () => {
  const redirect = await raw("/ui");
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.location, "/ui/");
  const page = await raw("/ui/");
  assert.equal(page.status, 200);
  assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
  assert.equal(page.headers["cache-control"], "no-cache");
  assert.equal(page.headers["x-content-type-options"], "nosniff");
  assert.match(String(page.headers["content-security-policy"]), /default-src 'self'/);
  assert.match(String(page.headers["content-security-policy"]), /frame-ancestors 'none'/);
  assert.match(page.body.toString(), /<div id="app">/);
  // Nothing fetched from elsewhere at run time.
  assert.doesNotMatch(page.body.toString(), /(src|href)="(https?:)?\/\//);
});

test("hashed assets: right content type, cached for a year, gzip when asked", async () => {
  const list = await assets();
  assert.ok(list.some((a) => a.endsWith(".js")) && list.some((a) => a.endsWith(".css")), `assets: ${list.join(", ")}`);
  for (const asset of list) {
    const plain = await raw(asset);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers["content-type"], asset.endsWith(".js") ? "text/javascript; charset=utf-8" : "text/css; charset=utf-8");
    assert.equal(plain.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.equal(plain.headers["content-encoding"], undefined);
    const zipped = await raw(asset, { "accept-encoding": "gzip, br" });
    assert.equal(zipped.headers["content-encoding"], "gzip");
    assert.deepEqual(gunzipSync(zipped.body), plain.body);
    const refused = await raw(asset, { "accept-encoding": "gzip;q=0" });
    assert.equal(refused.headers["content-encoding"], undefined);
    const head = await new Promise<number>((resolve, reject) => {
      const req = request(`${registry.url}${asset}`, { method: "HEAD" }, (res) => {
        res.resume();
        res.on("end", () => resolve(Number(res.headers["content-length"])));
      });
      req.on("error", reject);
      req.end();
    });
    assert.equal(head, plain.body.length);
  }
});

test("first load (page + its JS and CSS) is under 150 KB compressed", async () => {
  let total = (await raw("/ui/", { "accept-encoding": "gzip" })).body.length;
  for (const asset of await assets()) total += (await raw(asset, { "accept-encoding": "gzip" })).body.length;
  console.log(`# ui first load: ${total} bytes gzip (budget 153600)`);
  assert.ok(total <= 150 * 1024, `${total} bytes`);
  // The served page is the build output, byte for byte.
  assert.deepEqual((await raw("/ui/index.html")).body, await readFile(join(DEFAULT_UI_DIR, "index.html")));
});

test("no path traversal: only the UI's own files are ever served", async () => {
  const attempts = [
    "/ui/../package.json",
    "/ui/..%2fpackage.json",
    "/ui/%2e%2e/package.json",
    "/ui/assets/../../package.json",
    "/ui/assets/..%2f..%2fpackage.json",
    "/ui/..\\package.json",
    "/ui//etc/passwd",
    "/ui/%00",
    "/ui/assets/",
    "/ui/../../../../../../etc/passwd",
    "/ui/does-not-exist.js",
  ];
  for (const path of attempts) {
    const response = await raw(path);
    assert.equal(response.status, 404, path);
    assert.equal(response.headers["content-type"], "application/json", path);
    assert.doesNotMatch(response.body.toString(), /ferry-registry|root:/, path);
  }
  const post = await fetch(`${registry.url}/ui/`, { method: "POST" });
  assert.equal(post.status, 404);
});

test("ui.enabled: false serves neither the UI nor its API", async (t) => {
  const off = await startTestRegistry({ ui: { enabled: false } });
  t.after(() => off.close());
  for (const path of ["/ui/", "/ferry/v1/repositories", "/ferry/v1/session", "/ferry/v1/gc"]) {
    const response = await fetch(`${off.url}${path}`);
    assert.equal(response.status, 404, path);
  }
  // The registry itself is untouched.
  assert.equal((await fetch(`${off.url}/v2/`)).status, 200);
});

test("`ferry serve` (the README's quick start) serves the UI at /ui/ with no configuration", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-ui-serve-"));
  const serve = await startServeProcess({ data });
  t.after(async () => {
    await serve.stop();
    await rm(data, { recursive: true, force: true });
  });
  const page = await fetch(`${serve.url}/ui/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<div id="app">/);
  assert.equal((await fetch(`${serve.url}/ferry/v1/repositories`)).status, 200);
});
