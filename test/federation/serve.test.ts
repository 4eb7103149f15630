/**
 * Blob HEAD/GET of foreign layers per serve mode (error, redirect, proxy with
 * and without cache), 502 naming every failed source, the client capability
 * gate, source health and the admin API — against real sources on 127.0.0.1.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { federatedRegistry, fakeSource, serveAll, FakeSource, blob, parseErrors, pushForeignImage, sha256 } from "./helpers.js";
import { verifySignedUrl } from "../../src/federation/signer.js";

const registry = federatedRegistry;

const source = fakeSource;

const everything = serveAll;

async function getBlob(r: TestRegistry, repository: string, digest: string, headers: Record<string, string> = {}, method = "GET") {
  const res = await fetch(`${r.url}/v2/${repository}/blobs/${digest}`, { method, headers, redirect: "manual" });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** A raw GET that reports whether the body arrived complete or the connection was cut. */
function rawGet(url: string): Promise<{ status: number; received: number; complete: boolean }> {
  return new Promise((resolve) => {
    const req = request(url, (res) => {
      let received = 0;
      res.on("data", (chunk: Buffer) => (received += chunk.length));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, received, complete: res.complete }));
      res.on("aborted", () => resolve({ status: res.statusCode ?? 0, received, complete: false }));
      res.on("error", () => resolve({ status: res.statusCode ?? 0, received, complete: false }));
    });
    // Cut before the headers went out: no response at all, which is just as incomplete.
    req.on("error", () => resolve({ status: 0, received: 0, complete: false }));
    req.end();
  });
}

test("error mode: 404 BLOB_UNKNOWN saying the layer is foreign and where it lives; HEAD is 404 too", async (t) => {
  const s = await source(t);
  const r = await registry(t, {});
  const layer = blob(100);
  const urls = [s.put("/a", layer.bytes), "https://mirror.example.com/a"];
  assert.equal((await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls }])).status, 201);
  const got = await getBlob(r, "app", layer.digest);
  assert.equal(got.status, 404);
  const [error] = parseErrors(got.bytes.toString());
  assert.equal(error!.code, "BLOB_UNKNOWN");
  assert.match(error!.message, /is a foreign layer/);
  for (const url of urls) assert.ok(error!.message.includes(url));
  assert.deepEqual(error!.detail?.urls, urls);
  assert.equal((await getBlob(r, "app", layer.digest, {}, "HEAD")).status, 404);
  assert.equal(s.requests.length, 0);
});

test("redirect mode: 307 to the first URL, skipping a source known to be down", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...everything("redirect"), verify: { mode: "head", onFailure: "warn" } });
  const layer = blob(100);
  const down = await new FakeSource().start();
  const downUrl = down.url("/a");
  await down.down();
  const upUrl = s.put("/a", layer.bytes);
  // Push-time verification records the first source as failing.
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [downUrl, upUrl] }]);
  assert.equal(pushed.status, 201);
  const got = await getBlob(r, "app", layer.digest);
  assert.equal(got.status, 307);
  assert.equal(got.headers.get("location"), upUrl);
  assert.equal(got.headers.get("docker-content-digest"), layer.digest);
  const followed = await fetch(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(sha256(Buffer.from(await followed.arrayBuffer())), layer.digest);

  const layer2 = blob(50);
  const first = s.put("/b1", layer2.bytes);
  s.put("/b2", layer2.bytes);
  await pushForeignImage(r.url, "app", "v2", [{ ...layer2, urls: [first, s.url("/b2")] }]);
  assert.equal((await getBlob(r, "app", layer2.digest)).headers.get("location"), first);
});

test("redirect mode with sign: the Location carries an expiry and an HMAC the CDN can verify", async (t) => {
  const s = await source(t);
  const secret = "a-secret-of-at-least-16-chars";
  const r = await registry(t, everything("redirect", { sign: { secret, expires: "10m" } }));
  const layer = blob(100);
  const url = s.put("/a", layer.bytes);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
  const got = await getBlob(r, "app", layer.digest);
  assert.equal(got.status, 307);
  const location = got.headers.get("location")!;
  assert.ok(location.startsWith(`${url}?ferry-expires=`), location);
  const check = verifySignedUrl(location, secret);
  assert.equal(check.valid, true);
  const expires = check.valid ? check.expires * 1000 : 0;
  assert.ok(expires > Date.now() + 9 * 60_000 && expires <= Date.now() + 10 * 60_000 + 1000);
  // The manifest keeps the unsigned URL.
  const manifest = await (await fetch(`${r.url}/v2/app/manifests/v1`)).text();
  assert.ok(manifest.includes(`"${url}"`) && !manifest.includes("ferry-signature"));
});

test("proxy mode: streams verified bytes, serves Range, HEAD answers from the mark without touching the source", async (t) => {
  const s = await source(t);
  const r = await registry(t, everything("proxy"));
  const layer = blob(200_000);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.put("/a", layer.bytes)] }]);
  const head = await getBlob(r, "app", layer.digest, {}, "HEAD");
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), "200000");
  assert.equal(head.headers.get("docker-content-digest"), layer.digest);
  assert.equal(s.requests.length, 0);

  const got = await getBlob(r, "app", layer.digest, { Authorization: "Basic dXNlcjpwYXNz", Cookie: "session=1" });
  assert.equal(got.status, 200);
  assert.deepEqual(got.bytes, layer.bytes);
  assert.equal(s.requests[0]!.headers.authorization, undefined, "client credentials must never reach a source");
  assert.equal(s.requests[0]!.headers.cookie, undefined);

  const range = await getBlob(r, "app", layer.digest, { Range: "bytes=1000-1999" });
  assert.equal(range.status, 206);
  assert.equal(range.headers.get("content-range"), "bytes 1000-1999/200000");
  assert.deepEqual(range.bytes, layer.bytes.subarray(1000, 2000));
  assert.equal(s.gets("/a"), 2, "without a cache every GET goes to the source");
});

test("proxy mode: wrong bytes abort the response and mark the source bad; the next URL is used when one fails first", async (t) => {
  const s = await source(t);
  // The streaming path (large blobs); small blobs are verified before serving (serving.test.ts).
  const r = await registry(t, { ...everything("proxy"), proxy: { verifyBeforeServe: false } });
  const layer = blob(300_000);
  s.put("/wrong", layer.bytes);
  s.behave("/wrong", { kind: "wrong-bytes" });
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.url("/wrong")] }]);
  const cut = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(cut.status, 200);
  assert.equal(cut.complete, false, "a mismatching blob must never arrive complete");
  assert.ok(cut.received < layer.size);
  const sources = (await (await fetch(`${r.url}/ferry/v1/foreign/sources`)).json()) as { sources: Array<{ host: string; failures: number; lastError: string; healthy: boolean }> };
  const health = sources.sources.find((x) => x.host === `127.0.0.1:${s.port}`)!;
  assert.equal(health.failures, 1);
  assert.match(health.lastError, /digest mismatch/);
  assert.equal(health.healthy, false);

  const layer2 = blob(1000);
  s.behave("/gone", { kind: "status", status: 404 });
  await pushForeignImage(r.url, "app", "v2", [{ ...layer2, urls: [s.url("/gone"), s.put("/b", layer2.bytes)] }]);
  const got = await getBlob(r, "app", layer2.digest);
  assert.equal(got.status, 200);
  assert.deepEqual(got.bytes, layer2.bytes);
});

test("proxy mode: when no source works, 502 naming every URL and its failure", async (t) => {
  const s = await source(t);
  const r = await registry(t, everything("proxy"));
  const layer = blob(1000);
  s.behave("/e500", { kind: "status", status: 500 });
  s.put("/stall", layer.bytes);
  const down = await new FakeSource().start();
  const downUrl = down.url("/x");
  await down.down();
  const silent = await new FakeSource().start();
  t.after(() => silent.close());
  silent.delayMs = 5000;
  const urls = [s.url("/e500"), s.url("/missing"), downUrl, silent.url("/slow")];
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls }]);
  const got = await getBlob(r, "app", layer.digest);
  assert.equal(got.status, 502);
  const [error] = parseErrors(got.bytes.toString());
  assert.equal(error!.code, "UNAVAILABLE");
  assert.ok(urls.every((u) => error!.message.includes(u)), error!.message);
  const attempts = error!.detail?.attempts as Array<{ url: string; error: string }>;
  assert.deepEqual(
    Object.fromEntries(attempts.map((a) => [a.url, a.error])),
    { [urls[0]!]: "HTTP 500", [urls[1]!]: "HTTP 404", [urls[2]!]: "connection refused", [urls[3]!]: "timed out after 1s without an answer" },
  );
  // HEAD still answers from the mark.
  assert.equal((await getBlob(r, "app", layer.digest, {}, "HEAD")).status, 200);
});

test("proxy + cache: one fetch for many concurrent requests, later requests and Ranges from the cache", async (t) => {
  const s = await source(t);
  const r = await registry(t, everything("proxy", { cache: true }));
  const layer = blob(1_000_000);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.put("/a", layer.bytes)] }]);
  s.delayMs = 200; // let the requests pile up before the source answers
  const results = await Promise.all(
    Array.from({ length: 6 }, (_, i) => getBlob(r, "app", layer.digest, i === 5 ? { Range: "bytes=10-19" } : {})),
  );
  for (const res of results.slice(0, 5)) {
    assert.equal(res.status, 200);
    assert.equal(sha256(res.bytes), layer.digest);
  }
  assert.equal(results[5]!.status, 206);
  assert.deepEqual(results[5]!.bytes, layer.bytes.subarray(10, 20));
  assert.equal(s.gets("/a"), 1, "concurrent requests for one uncached layer must fetch it once");

  await s.down();
  const later = await getBlob(r, "app", layer.digest, { Range: "bytes=999990-" });
  assert.equal(later.status, 206);
  assert.equal(later.headers.get("content-range"), "bytes 999990-999999/1000000");
  assert.deepEqual(later.bytes, layer.bytes.subarray(999_990));
  assert.equal(sha256((await getBlob(r, "app", layer.digest)).bytes), layer.digest);
  const layers = (await (await fetch(`${r.url}/ferry/v1/foreign/layers?repository=app`)).json()) as { layers: Array<{ digest: string; cached: boolean }> };
  assert.equal(layers.layers.find((l) => l.digest === layer.digest)?.cached, true);
});

test("proxy + cache: a wrong blob is never cached; TTL expiry refetches; the byte budget evicts least recently used", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...everything("proxy", { cache: true }), proxy: { cacheTtl: "1s", cacheMaxBytes: 2500, verifyBeforeServe: false } });
  const [a, b, c] = [blob(1000), blob(1000), blob(1000)];
  await pushForeignImage(r.url, "app", "v1", [
    { ...a, urls: [s.put("/a", a.bytes)] },
    { ...b, urls: [s.put("/b", b.bytes)] },
    { ...c, urls: [s.put("/c", c.bytes)] },
  ]);
  s.behave("/a", { kind: "wrong-bytes" });
  const wrong = await rawGet(`${r.url}/v2/app/blobs/${a.digest}`);
  assert.ok(wrong.status !== 200 || !wrong.complete, "wrong bytes never arrive as a complete 200 (a 502 when no byte went out yet)");
  s.behave("/a", { kind: "ok" });
  assert.deepEqual((await getBlob(r, "app", a.digest)).bytes, a.bytes);
  assert.equal(s.gets("/a"), 2, "the wrong bytes must not have been cached");

  await getBlob(r, "app", b.digest);
  await getBlob(r, "app", a.digest); // a is now more recently used than b
  await getBlob(r, "app", c.digest); // 3000 bytes > 2500: b goes
  assert.equal(s.gets("/a"), 2);
  const cache = r.registry.services.federation as unknown as { cache: { has(d: string): boolean } };
  assert.deepEqual([a, b, c].map((x) => cache.cache.has(x.digest)), [true, false, true]);

  await new Promise((resolve) => setTimeout(resolve, 1100));
  await getBlob(r, "app", a.digest);
  assert.equal(s.gets("/a"), 3, "an expired entry is fetched again");
});

test("proxy + cache: the cache survives a restart", async (t) => {
  const s = await source(t);
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = await mkdtemp(join(tmpdir(), "ferry-fed-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const config = everything("proxy", { cache: true });
  const layer = blob(2000);
  const first = await startTestRegistry({ federation: { ...config, proxy: { allowPrivateNetworks: true } } }, dir);
  await pushForeignImage(first.url, "app", "v1", [{ ...layer, urls: [s.put("/a", layer.bytes)] }]);
  assert.deepEqual((await getBlob(first, "app", layer.digest)).bytes, layer.bytes);
  await first.close();
  await s.down();
  const second = await registry(t, config, dir);
  assert.deepEqual((await getBlob(second, "app", layer.digest)).bytes, layer.bytes);
});

test("requireClientSupport: a manifest with foreign layers is refused to clients that do not declare support", async (t) => {
  const r = await registry(t, { requireClientSupport: true });
  const layer = blob(10);
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: ["https://cdn.example.com/x"] }]);
  const accept = { Accept: "application/vnd.oci.image.manifest.v1+json" };
  const refused = await fetch(`${r.url}/v2/app/manifests/v1`, { headers: accept });
  assert.equal(refused.status, 406);
  const [error] = parseErrors(await refused.text());
  assert.equal(error!.code, "UNSUPPORTED");
  assert.match(error!.message, /foreign layer/);
  assert.match(error!.message, /Ferry-Foreign-Layers: supported/);
  assert.equal((await fetch(`${r.url}/v2/app/manifests/${pushed.digest}`, { method: "HEAD", headers: accept })).status, 406);
  const allowed = await fetch(`${r.url}/v2/app/manifests/v1`, { headers: { ...accept, "Ferry-Foreign-Layers": "supported" } });
  assert.equal(allowed.status, 200);
  assert.deepEqual(Buffer.from(await allowed.arrayBuffer()), pushed.manifest);

  // An image without foreign layers is not gated; nor is an index over one with them? It is: its children count.
  const config = Buffer.from("{}");
  await fetch(`${r.url}/v2/app/blobs/uploads/?digest=${sha256(config)}`, { method: "POST", body: config });
  const plain = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: 2 }, layers: [] }));
  await fetch(`${r.url}/v2/app/manifests/plain`, { method: "PUT", headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" }, body: plain });
  assert.equal((await fetch(`${r.url}/v2/app/manifests/plain`, { headers: accept })).status, 200);
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: pushed.digest, size: pushed.manifest.length }] }));
  await fetch(`${r.url}/v2/app/manifests/multi`, { method: "PUT", headers: { "Content-Type": "application/vnd.oci.image.index.v1+json" }, body: index });
  assert.equal((await fetch(`${r.url}/v2/app/manifests/multi`, { headers: { Accept: "application/vnd.oci.image.index.v1+json" } })).status, 406);
});

test("admin API: layers with their per-URL policy, source health, and verify on demand", async (t) => {
  const s = await source(t);
  const r = await registry(t, everything("redirect"));
  const layer = blob(100);
  const url = s.put("/a", layer.bytes);
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url, "https://elsewhere.example/a"] }]);
  const listed = (await (await fetch(`${r.url}/ferry/v1/foreign/layers?repository=app`)).json()) as {
    layers: Array<{ digest: string; verification: string; manifests: string[]; policy: Array<{ url: string; serve: string; rule: string }> }>;
  };
  assert.equal(listed.layers.length, 1);
  assert.equal(listed.layers[0]!.verification, "unverified");
  assert.deepEqual(listed.layers[0]!.manifests, [pushed.digest]);
  assert.deepEqual(listed.layers[0]!.policy.map((p) => [p.url, p.serve, p.rule]), [
    [url, "redirect", "rules[0] (^http:\\/\\/127\\.0\\.0\\.1:)"],
    ["https://elsewhere.example/a", "error", "default"],
  ]);

  const verified = await fetch(`${r.url}/ferry/v1/foreign/verify?repository=app&reference=v1&mode=fetch`, { method: "POST" });
  assert.equal(verified.status, 200);
  const result = (await verified.json()) as { ok: boolean; manifest: string; layers: Array<{ digest: string; verified: boolean; attempts: Array<{ url: string; answer: string }> }> };
  assert.equal(result.ok, true);
  assert.equal(result.manifest, pushed.digest);
  assert.match(result.layers[0]!.attempts[0]!.answer, /digest verified/);
  assert.equal((await r.registry.deps.meta.getForeignLayer("app", layer.digest))?.verification, "verified");

  s.behave("/a", { kind: "status", status: 410 });
  const failed = (await (await fetch(`${r.url}/ferry/v1/foreign/verify?repository=app&reference=${pushed.digest}`, { method: "POST" })).json()) as { ok: boolean };
  assert.equal(failed.ok, false);
  assert.equal((await r.registry.deps.meta.getForeignLayer("app", layer.digest))?.verification, "failed");

  const sources = (await (await fetch(`${r.url}/ferry/v1/foreign/sources`)).json()) as { sources: Array<Record<string, unknown>> };
  const health = sources.sources.find((x) => x.host === `127.0.0.1:${s.port}`)!;
  assert.equal(health.successes, 1);
  assert.equal(health.failures, 1);
  assert.equal(health.lastError, "HTTP 410");
  assert.equal(typeof health.lastSuccessAt, "number");
  assert.equal(typeof health.averageLatencyMs, "number");

  const unknown = await fetch(`${r.url}/ferry/v1/foreign/verify?repository=app&reference=nope`, { method: "POST" });
  assert.equal(unknown.status, 404);
  const missing = await fetch(`${r.url}/ferry/v1/foreign/verify?repository=app`, { method: "POST" });
  assert.equal(missing.status, 400);
});
