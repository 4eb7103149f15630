/**
 * Pull-through mirroring against another Ferry as the upstream (issue 16):
 * manifests by tag and digest, blobs streamed and kept, tag TTL, stale
 * serving, fail mode, read-only prefix, ns= routing, status endpoint.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { buildImage, pushImage, sha256 } from "../helpers/images.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";

const ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

async function get(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const response = await fetch(url, { ...init, headers: { Accept: ACCEPT, ...(init.headers as Record<string, string>) } });
  return { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
}

interface MirrorStatusBody {
  mirrors: Array<{ prefix: string; fetchesInProgress: number; counters: Record<string, number>; upstreamHealth: { ok: boolean } }>;
}

/** The mirror's status once its upstream fetches are committed (a client may finish reading before the commit). */
async function settledStatus(url: string, prefix = "up/"): Promise<MirrorStatusBody["mirrors"][number]> {
  for (let i = 0; ; i++) {
    const status = (await (await fetch(`${url}/ferry/v1/mirrors`)).json()) as MirrorStatusBody;
    const mirror = status.mirrors.find((m) => m.prefix === prefix)!;
    if (mirror.fetchesInProgress === 0 || i > 100) return mirror;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("pull-through mirror of a Ferry upstream", () => {
  let upstream: TestRegistry;
  let mirror: TestRegistry;
  let stale: TestRegistry;
  let failing: TestRegistry;

  before(async () => {
    upstream = await startTestRegistry();
    const mirrorConfig = (extra: Record<string, unknown>) => ({ mirrors: [{ prefix: "up/", upstream: upstream.url, tagTtl: "1s", ...extra }] });
    mirror = await startTestRegistry(mirrorConfig({}));
    stale = await startTestRegistry(mirrorConfig({ onUpstreamDown: "serve-stale" }));
    failing = await startTestRegistry(mirrorConfig({ onUpstreamDown: "fail" }));
  });
  after(async () => {
    await mirror?.close();
    await stale?.close();
    await failing?.close();
    await upstream?.close();
  });

  test("an image pulled through the mirror is byte-identical to the upstream's and then served from the cache", async () => {
    const image = await buildImage({ layers: [{ "a.txt": "mirror me\n" }] });
    await pushImage(upstream.url, "library/app", "v1", image);

    const manifest = await get(`${mirror.url}/v2/up/library/app/manifests/v1`);
    assert.equal(manifest.status, 200, manifest.body.toString());
    assert.deepEqual(manifest.body, image.manifest);
    assert.equal(manifest.headers.get("docker-content-digest"), image.manifestDigest);
    for (const blob of [image.config, ...image.layers]) {
      const pulled = await get(`${mirror.url}/v2/up/library/app/blobs/${blob.digest}`);
      assert.equal(pulled.status, 200);
      assert.equal(sha256(pulled.body), blob.digest);
    }
    const byDigest = await get(`${mirror.url}/v2/up/library/app/manifests/${image.manifestDigest}`);
    assert.equal(byDigest.status, 200);

    const up = await settledStatus(mirror.url);
    assert.equal(up.counters.blobMisses, 2);
    assert.equal(up.counters.bytesFetched, image.config.size + image.layers[0]!.size);
    assert.equal(up.upstreamHealth.ok, true);

    // Second pull of the blobs: from the cache.
    for (const blob of [image.config, ...image.layers]) assert.equal((await get(`${mirror.url}/v2/up/library/app/blobs/${blob.digest}`)).status, 200);
    const upAfter = await settledStatus(mirror.url);
    assert.equal(upAfter.counters.blobMisses, 2, "no new upstream fetch");
    assert.equal(upAfter.counters.blobHits, 2);
    assert.equal(upAfter.counters.bytesFromCache, image.config.size + image.layers[0]!.size);
  });

  test("a tag moved upstream is seen after the TTL, not before", async () => {
    const first = await buildImage({ layers: [{ "v.txt": "one\n" }] });
    const second = await buildImage({ layers: [{ "v.txt": "two\n" }] });
    await pushImage(upstream.url, "moving", "latest", first);
    assert.equal((await get(`${mirror.url}/v2/up/moving/manifests/latest`)).headers.get("docker-content-digest"), first.manifestDigest);
    await pushImage(upstream.url, "moving", "latest", second);
    assert.equal((await get(`${mirror.url}/v2/up/moving/manifests/latest`)).headers.get("docker-content-digest"), first.manifestDigest, "fresh within the TTL");
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const moved = await get(`${mirror.url}/v2/up/moving/manifests/latest`);
    assert.equal(moved.headers.get("docker-content-digest"), second.manifestDigest);
    assert.deepEqual(moved.body, second.manifest);
  });

  test("unknown upstream content is 404 in the spec's format", async () => {
    const missing = await get(`${mirror.url}/v2/up/nothing/here/manifests/v1`);
    assert.equal(missing.status, 404);
    assert.equal((JSON.parse(missing.body.toString()) as { errors: Array<{ code: string }> }).errors[0]!.code, "MANIFEST_UNKNOWN");
    const blob = await get(`${mirror.url}/v2/up/nothing/blobs/${sha256("nope")}`);
    assert.equal(blob.status, 404);
    assert.equal((JSON.parse(blob.body.toString()) as { errors: Array<{ code: string }> }).errors[0]!.code, "BLOB_UNKNOWN");
  });

  test("pushes, uploads and deletes under the mirror prefix are refused with 405 and a message; other repositories stay writable", async () => {
    const image = await buildImage({ layers: [{ "w.txt": "write\n" }] });
    const upload = await fetch(`${mirror.url}/v2/up/library/app/blobs/uploads/`, { method: "POST" });
    assert.equal(upload.status, 405);
    const body = (await upload.json()) as { errors: Array<{ code: string; message: string }> };
    assert.equal(body.errors[0]!.code, "UNSUPPORTED");
    assert.match(body.errors[0]!.message, /read-only/);
    const put = await fetch(`${mirror.url}/v2/up/library/app/manifests/v9`, { method: "PUT", headers: { "Content-Type": image.mediaType }, body: new Uint8Array(image.manifest) });
    assert.equal(put.status, 405);
    await put.arrayBuffer();
    const del = await fetch(`${mirror.url}/v2/up/library/app/manifests/v1`, { method: "DELETE" });
    assert.equal(del.status, 405);
    await del.arrayBuffer();
    await pushImage(mirror.url, "local/app", "v1", image);
  });

  test("containerd's ns= parameter routes to the mirror of that upstream", async () => {
    const image = await buildImage({ layers: [{ "ns.txt": "ns\n" }] });
    await pushImage(upstream.url, "library/nsapp", "v1", image);
    const ns = upstream.host;
    const manifest = await get(`${mirror.url}/v2/library/nsapp/manifests/v1?ns=${encodeURIComponent(ns)}`);
    assert.equal(manifest.status, 200, manifest.body.toString());
    assert.deepEqual(manifest.body, image.manifest);
    const blob = await get(`${mirror.url}/v2/library/nsapp/blobs/${image.layers[0]!.digest}?ns=${encodeURIComponent(ns)}`);
    assert.equal(blob.status, 200);
    assert.equal(sha256(blob.body), image.layers[0]!.digest);
    // An unknown namespace is not mirrored: the local repository (which does not exist) answers.
    assert.equal((await get(`${mirror.url}/v2/library/nsapp/manifests/v1?ns=quay.io`)).status, 404);
  });

  test("upstream down: serve-stale answers cached tags with a Warning, fail answers 502 naming the upstream", async () => {
    const image = await buildImage({ layers: [{ "s.txt": "stale\n" }] });
    await pushImage(upstream.url, "stale/app", "v1", image);
    assert.equal((await get(`${stale.url}/v2/up/stale/app/manifests/v1`)).status, 200);
    assert.equal((await get(`${failing.url}/v2/up/stale/app/manifests/v1`)).status, 200);
    const url = upstream.url;
    const dataDir = upstream.dataDir;
    await upstream.registry.close();
    await new Promise((resolve) => setTimeout(resolve, 1100)); // past the TTL
    try {
      const served = await get(`${stale.url}/v2/up/stale/app/manifests/v1`);
      assert.equal(served.status, 200);
      assert.deepEqual(served.body, image.manifest);
      assert.match(served.headers.get("warning") ?? "", /^299 - ".*upstream .* is unavailable/);
      const failed = await get(`${failing.url}/v2/up/stale/app/manifests/v1`);
      assert.equal(failed.status, 502);
      const error = (JSON.parse(failed.body.toString()) as { errors: Array<{ code: string; message: string }> }).errors[0]!;
      assert.equal(error.code, "UNAVAILABLE");
      assert.ok(error.message.includes(url), error.message);
      // Nothing cached: both modes answer 502.
      assert.equal((await get(`${stale.url}/v2/up/stale/other/manifests/v1`)).status, 502);
    } finally {
      // The upstream comes back on the same port and data for the tests after this one.
      upstream = await startTestRegistry({ listen: `127.0.0.1:${new URL(url).port}` }, dataDir);
    }
  });

  test("a mirror with the empty prefix (dockerd registry-mirrors) serves upstream names as they are and refuses every push", async (t) => {
    const whole = await startTestRegistry({ mirrors: [{ prefix: "", upstream: upstream.url }] });
    t.after(() => whole.close());
    const image = await buildImage({ layers: [{ "d.txt": "dockerd\n" }] });
    await pushImage(upstream.url, "library/dockerd", "v1", image);
    const manifest = await get(`${whole.url}/v2/library/dockerd/manifests/v1`);
    assert.equal(manifest.status, 200);
    assert.deepEqual(manifest.body, image.manifest);
    const push = await fetch(`${whole.url}/v2/mine/app/blobs/uploads/`, { method: "POST" });
    assert.equal(push.status, 405);
    await push.arrayBuffer();
  });
});
