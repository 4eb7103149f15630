/** Online garbage collection and purging of stale uploads, through a running registry. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { buildImage, pushBlob, pushImage, sha256 } from "../helpers/images.js";

test("gc deletes unreferenced blobs past the grace period and keeps what manifests use", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const image = await buildImage();
  await pushImage(r.url, "gc/app", "v1", image);
  const stray = await pushBlob(r.url, "gc/app", Buffer.from("nobody references me"));

  const withGrace = await r.registry.gc({ gracePeriodMs: 3_600_000 });
  assert.equal(withGrace.blobsDeleted, 0, "fresh uploads are protected by the grace period");
  assert.equal((await fetch(`${r.url}/v2/gc/app/blobs/${stray}`, { method: "HEAD" })).status, 200);

  const report = await r.registry.gc({ gracePeriodMs: -1000 });
  assert.equal(report.blobsDeleted, 1);
  assert.equal((await fetch(`${r.url}/v2/gc/app/blobs/${stray}`, { method: "HEAD" })).status, 404);
  assert.equal(await r.registry.deps.blobs.stat(stray), null, "the bytes are gone too");
  for (const blob of [image.config, ...image.layers]) {
    const response = await fetch(`${r.url}/v2/gc/app/blobs/${blob.digest}`);
    assert.equal(response.status, 200);
    assert.equal(sha256(Buffer.from(await response.arrayBuffer())), blob.digest);
  }
  assert.equal((await fetch(`${r.url}/v2/gc/app/manifests/v1`)).status, 200);
});

test("gc --untagged removes manifests nothing keeps, then their blobs", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const image = await buildImage({ layers: [{ "x": "untagged" }] });
  await pushImage(r.url, "gc/untagged", "temp", image);
  assert.equal((await fetch(`${r.url}/v2/gc/untagged/manifests/temp`, { method: "DELETE" })).status, 202);
  const kept = await r.registry.gc({ gracePeriodMs: -1000, untagged: false });
  assert.equal(kept.manifestsDeleted, 0);
  assert.equal((await fetch(`${r.url}/v2/gc/untagged/manifests/${image.manifestDigest}`)).status, 200);
  const swept = await r.registry.gc({ gracePeriodMs: -1000, untagged: true });
  assert.equal(swept.manifestsDeleted, 1);
  assert.equal(swept.blobsDeleted, 2);
  assert.equal((await fetch(`${r.url}/v2/gc/untagged/manifests/${image.manifestDigest}`)).status, 404);
});

test("a blob shared by two repositories survives until neither references it", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const image = await buildImage({ layers: [{ "shared": "yes" }] });
  await pushImage(r.url, "share/a", "v1", image);
  await pushImage(r.url, "share/b", "v1", image);
  await fetch(`${r.url}/v2/share/a/manifests/${image.manifestDigest}`, { method: "DELETE" });
  const first = await r.registry.gc({ gracePeriodMs: -1000 });
  assert.equal(first.blobsDeleted, 0);
  assert.equal((await fetch(`${r.url}/v2/share/b/blobs/${image.layers[0]!.digest}`)).status, 200);
});

test("stale upload sessions are purged (data and record) and answer 404 afterwards", async (t) => {
  const r = await startTestRegistry({ uploads: { purgeAfter: "1ms", purgeInterval: 0 } });
  t.after(() => r.close());
  const start = await fetch(`${r.url}/v2/purge/me/blobs/uploads/`, { method: "POST" });
  assert.equal(start.status, 202);
  const location = start.headers.get("location")!;
  await new Promise((resolve) => setTimeout(resolve, 20));
  const purged = await r.registry.purgeUploads();
  assert.ok(purged >= 1);
  const status = await fetch(`${r.url}${location}`);
  assert.equal(status.status, 404);
  const body = (await status.json()) as { errors: Array<{ code: string }> };
  assert.equal(body.errors[0]!.code, "BLOB_UPLOAD_UNKNOWN");
  assert.deepEqual(await r.registry.deps.blobs.listUploads(), []);
});
