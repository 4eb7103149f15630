/**
 * Mirror blob fetching against a fake upstream: one upstream fetch however
 * many clients pull at once, clients that leave do not hurt the others,
 * wrong bytes leave nothing behind, rate limits become a clear 503, upstream
 * credentials stay between the mirror and the upstream, and the mirror's
 * fetcher follows no redirect to addresses the operator did not configure.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { FakeUpstream, imageManifest } from "./fake-upstream.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { sha256 } from "../helpers/images.js";

type After = { after(fn: () => Promise<void>): void };

async function setup(t: After, options: { basic?: string; mirror?: Record<string, unknown>; registry?: Record<string, unknown> } = {}): Promise<{ upstream: FakeUpstream; mirror: TestRegistry }> {
  const upstream = await new FakeUpstream(options.basic ? { basic: options.basic } : {}).start();
  t.after(() => upstream.close());
  const mirror = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream: upstream.url, ...options.mirror }], ...options.registry });
  t.after(() => mirror.close());
  return { upstream, mirror };
}

/** Reads a response body, hashing it as it comes (100 MiB bodies are never held whole). */
async function hashBody(response: Response, stopAfter?: number): Promise<{ digest: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  const reader = response.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    hash.update(value);
    bytes += value.length;
    if (stopAfter !== undefined && bytes >= stopAfter) {
      await reader.cancel();
      break;
    }
  }
  return { digest: `sha256:${hash.digest("hex")}`, bytes };
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function fetchesInProgress(mirror: TestRegistry): Promise<number> {
  const status = (await (await fetch(`${mirror.url}/ferry/v1/mirrors`)).json()) as { mirrors: Array<{ fetchesInProgress: number }> };
  return status.mirrors[0]!.fetchesInProgress;
}

describe("mirror blob fetches", () => {
  test("8 concurrent pulls of a 100 MiB blob fetch it from the upstream once; a client that leaves early does not stop the others", async (t) => {
    const { upstream, mirror } = await setup(t);
    const bytes = randomBytes(100 * 1024 * 1024);
    const digest = upstream.addBlob("big", bytes);
    // Slow enough that every client arrives while the fetch is running.
    upstream.pace = { chunk: 1024 * 1024, delayMs: 10 };
    const url = `${mirror.url}/v2/m/big/blobs/${digest}`;
    const quitter = fetch(url).then((response) => hashBody(response, 5 * 1024 * 1024));
    const pulls = Array.from({ length: 7 }, () => fetch(url).then((response) => {
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-length"), String(bytes.length));
      return hashBody(response);
    }));
    const results = await Promise.all(pulls);
    for (const result of results) assert.deepEqual(result, { digest, bytes: bytes.length });
    assert.ok((await quitter).bytes >= 5 * 1024 * 1024);
    assert.equal(upstream.count("GET", "/blobs/"), 1, "one upstream fetch");
    await waitFor(async () => (await fetchesInProgress(mirror)) === 0, "the fetch to be committed");
    // Stored and verified: the next pull comes from the cache.
    const again = await fetch(url);
    assert.deepEqual(await hashBody(again), { digest, bytes: bytes.length });
    assert.equal(upstream.count("GET", "/blobs/"), 1);
  });

  test("a client that disconnects alone does not abort the fetch: the blob is stored for the next pull", async (t) => {
    const { upstream, mirror } = await setup(t);
    const bytes = randomBytes(8 * 1024 * 1024);
    const digest = upstream.addBlob("lonely", bytes);
    upstream.pace = { chunk: 256 * 1024, delayMs: 5 };
    const controller = new AbortController();
    const response = await fetch(`${mirror.url}/v2/m/lonely/blobs/${digest}`, { signal: controller.signal });
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    await waitFor(async () => (await fetchesInProgress(mirror)) === 0, "the fetch to finish");
    const again = await fetch(`${mirror.url}/v2/m/lonely/blobs/${digest}`);
    assert.deepEqual(await hashBody(again), { digest, bytes: bytes.length });
    assert.equal(upstream.count("GET", "/blobs/"), 1);
  });

  test("an upstream that sends wrong bytes: every client's connection is cut before the last byte and nothing is stored", async (t) => {
    const { upstream, mirror } = await setup(t);
    const bytes = randomBytes(3 * 1024 * 1024);
    const digest = upstream.addBlob("liar", bytes);
    const wrong = Buffer.from(bytes);
    wrong[wrong.length - 1] ^= 0xff;
    upstream.corrupt.set(digest, wrong);
    const url = `${mirror.url}/v2/m/liar/blobs/${digest}`;
    const attempts = await Promise.all([0, 1, 2].map(() => fetch(url).then((r) => hashBody(r)).then((r) => r, (error: unknown) => error)));
    for (const attempt of attempts) {
      if (attempt instanceof Error) continue; // cut mid-body: what we want
      const result = attempt as { digest: string; bytes: number };
      assert.ok(result.bytes < bytes.length, "never a complete body");
    }
    await waitFor(async () => (await fetchesInProgress(mirror)) === 0, "the fetch to fail");
    // Nothing visible under the digest: the mirror fetches again (the upstream now tells the truth).
    upstream.corrupt.delete(digest);
    const retry = await fetch(url);
    assert.deepEqual(await hashBody(retry), { digest, bytes: bytes.length });
    assert.equal(upstream.count("GET", "/blobs/"), 2);
    await waitFor(async () => (await fetchesInProgress(mirror)) === 0, "the second fetch to be committed");
    assert.equal(await mirror.registry.deps.meta.linkedBlob("m/liar", digest).then((b) => b?.size), bytes.length);
  });

  test("an upstream answering 429: the client gets 503 with Retry-After naming the upstream, and the mirror stays away meanwhile; cached tags are served stale", async (t) => {
    const { upstream, mirror } = await setup(t, { mirror: { tagTtl: "1ms" } });
    const config = Buffer.from("{}");
    const configDigest = upstream.addBlob("rl", config);
    const manifest = imageManifest({ digest: configDigest, size: config.length }, []);
    upstream.addManifest("rl", "v1", manifest);
    assert.equal((await fetch(`${mirror.url}/v2/m/rl/manifests/v1`)).status, 200);
    upstream.rateLimit = "30";
    const blob = await fetch(`${mirror.url}/v2/m/rl/blobs/${configDigest}`);
    assert.equal(blob.status, 503);
    assert.ok(Number(blob.headers.get("retry-after")) >= 29);
    const body = (await blob.json()) as { errors: Array<{ code: string; message: string }> };
    assert.equal(body.errors[0]!.code, "UNAVAILABLE");
    assert.ok(body.errors[0]!.message.includes(upstream.url));
    const before = upstream.count("GET", "/") + upstream.count("HEAD", "/");
    const stale = await fetch(`${mirror.url}/v2/m/rl/manifests/v1`);
    assert.equal(stale.status, 200);
    assert.match(stale.headers.get("warning") ?? "", /rate-limited/);
    assert.equal(upstream.count("GET", "/") + upstream.count("HEAD", "/"), before, "no request while the upstream asked us to wait");
  });

  test("Basic credentials go to the upstream only: the client needs none and never sees them", async (t) => {
    const { upstream, mirror } = await setup(t, { basic: "mirror-bot:upstream-secret", mirror: { credentials: { username: "mirror-bot", password: "upstream-secret" } } });
    const layer = randomBytes(4096);
    const layerDigest = upstream.addBlob("private/app", layer);
    const config = Buffer.from('{"os":"linux"}');
    const configDigest = upstream.addBlob("private/app", config);
    const manifest = imageManifest({ digest: configDigest, size: config.length }, [{ digest: layerDigest, size: layer.length }]);
    upstream.addManifest("private/app", "v1", manifest);
    const pulled = await fetch(`${mirror.url}/v2/m/private/app/manifests/v1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
    assert.equal(pulled.status, 200);
    assert.deepEqual(Buffer.from(await pulled.arrayBuffer()), manifest);
    const blob = await fetch(`${mirror.url}/v2/m/private/app/blobs/${layerDigest}`);
    assert.equal(sha256(Buffer.from(await blob.arrayBuffer())), layerDigest);
    for (const response of [pulled, blob]) {
      for (const [name, value] of response.headers) {
        assert.ok(!/upstream-secret|bWlycm9yLWJvdDp1cHN0cmVhbS1zZWNyZXQ/.test(value), `header ${name} leaks the upstream credentials`);
        assert.notEqual(name, "www-authenticate");
      }
    }
    assert.ok(upstream.authorizations.every((value) => value === `Basic ${Buffer.from("mirror-bot:upstream-secret").toString("base64")}`));
    // Wrong upstream credentials: a 502 that names the upstream, not a 401 sending the client to log in somewhere.
    const wrongMirror = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream: upstream.url, credentials: { username: "mirror-bot", password: "nope" } }] });
    t.after(() => wrongMirror.close());
    const refused = await fetch(`${wrongMirror.url}/v2/m/private/app/manifests/v1`);
    assert.equal(refused.status, 502);
    const text = await refused.text();
    assert.ok(!text.includes("nope"));
  });

  test("a redirect from the upstream to another loopback address is refused: only the configured upstream's own address is exempt", async (t) => {
    const other = await new FakeUpstream().start("127.0.0.2").catch(() => null);
    if (!other) return t.skip("127.0.0.2 is not available here");
    t.after(() => other.close());
    const { upstream, mirror } = await setup(t);
    const bytes = randomBytes(1000);
    const digest = upstream.addBlob("redir", bytes);
    other.addBlob("redir", bytes);
    upstream.redirectBlobsTo = other.url;
    const response = await fetch(`${mirror.url}/v2/m/redir/blobs/${digest}`);
    assert.equal(response.status, 502);
    const body = (await response.json()) as { errors: Array<{ code: string; message: string }> };
    assert.match(body.errors[0]!.message, /refused to connect to 127\.0\.0\.2/);
    assert.equal(other.count("GET", "/"), 0, "the redirect target was never contacted");
  });

  test("an upstream manifest larger than the registry's manifest limit is refused (502), never read whole or stored", async (t) => {
    const { upstream, mirror } = await setup(t, { registry: { manifests: { maxBytes: "64KiB" } } });
    const huge = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", annotations: { pad: "x".repeat(200_000) } }));
    upstream.addManifest("huge", "v1", huge);
    const response = await fetch(`${mirror.url}/v2/m/huge/manifests/v1`);
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { errors: Array<{ message: string }> }).errors[0]!.message, /65536/);
    assert.equal(await mirror.registry.deps.meta.getTaggedManifest("m/huge", "v1"), null);
  });

  test("an upstream manifest whose foreign layer federation's policy refuses is not stored: 502 saying why, never a 400 for a pull", async (t) => {
    const { upstream, mirror } = await setup(t);
    const config = Buffer.from("{}");
    const configDigest = upstream.addBlob("win", config);
    const manifest = imageManifest({ digest: configDigest, size: config.length }, [
      { digest: sha256("foreign"), size: 7, urls: ["ftp://files.example/base.tar"], mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" },
    ]);
    upstream.addManifest("win", "v1", manifest);
    const response = await fetch(`${mirror.url}/v2/m/win/manifests/v1`);
    assert.equal(response.status, 502);
    const error = ((await response.json()) as { errors: Array<{ code: string; message: string }> }).errors[0]!;
    assert.equal(error.code, "UNAVAILABLE");
    assert.match(error.message, /does not accept the upstream's manifest/);
    assert.equal(await mirror.registry.deps.meta.getTaggedManifest("m/win", "v1"), null);
  });

  test("concurrent pulls of one tag share one upstream check and fetch", async (t) => {
    const { upstream, mirror } = await setup(t);
    const config = Buffer.from('{"a":1}');
    const configDigest = upstream.addBlob("tagged", config);
    upstream.addManifest("tagged", "v1", imageManifest({ digest: configDigest, size: config.length }, []));
    const answers = await Promise.all(Array.from({ length: 8 }, () => fetch(`${mirror.url}/v2/m/tagged/manifests/v1`).then(async (r) => [r.status, await r.arrayBuffer()] as const)));
    for (const [status] of answers) assert.equal(status, 200);
    assert.equal(upstream.count("HEAD", "/manifests/v1"), 1);
    assert.equal(upstream.count("GET", "/manifests/"), 1);
  });
});
