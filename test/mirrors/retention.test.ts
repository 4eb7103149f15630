/**
 * Cached content is ordinary content for garbage collection, and a mirror's
 * retention drops tags no client pulled for that long; GC then frees their blobs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildImage, pushImage } from "../helpers/images.js";
import { startTestRegistry } from "../helpers/registry.js";

test("GC keeps what a cached tag references, including blobs fetched after its manifest; retention drops tags nobody pulls and GC then frees them", async (t) => {
  const upstream = await startTestRegistry();
  t.after(() => upstream.close());
  const kept = await buildImage({ layers: [{ "k": "kept\n" }] });
  const dropped = await buildImage({ layers: [{ "d": "dropped\n" }] });
  await pushImage(upstream.url, "app", "kept", kept);
  await pushImage(upstream.url, "app", "dropped", dropped);
  const mirror = await startTestRegistry({ mirrors: [{ prefix: "up/", upstream: upstream.url, retention: "1s", tagTtl: "1h" }] });
  t.after(() => mirror.close());
  const pull = async (tag: string, image: typeof kept) => {
    assert.equal((await fetch(`${mirror.url}/v2/up/app/manifests/${tag}`, { headers: { Accept: image.mediaType } })).status, 200);
    for (const blob of [image.config, ...image.layers]) await (await fetch(`${mirror.url}/v2/up/app/blobs/${blob.digest}`)).arrayBuffer();
  };
  await pull("kept", kept);
  await pull("dropped", dropped);
  const meta = mirror.registry.deps.meta;
  // A fetched blob is committed a moment after its last byte went out: wait for every one (a bound, not a guess of how long).
  const all = [kept.config, ...kept.layers, dropped.config, ...dropped.layers];
  const committedBy = Date.now() + 10_000;
  while (!(await Promise.all(all.map((blob) => meta.linkedBlob("up/app", blob.digest)))).every(Boolean)) {
    assert.ok(Date.now() < committedBy, "every pulled blob is committed to the mirror's store");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await mirror.registry.gc({ gracePeriodMs: 0, untagged: true });
  for (const blob of all) assert.ok(await meta.linkedBlob("up/app", blob.digest), "referenced by a cached tag: kept");

  // Keep pulling one tag (from the cache: the TTL is an hour) past the retention; leave the other alone.
  // At least 2.5 s (past the 1 s retention), then until the sweep has dropped the idle tag, up to 15 s on a loaded machine.
  const started = Date.now();
  while (Date.now() - started < 2500 || (await meta.getTaggedManifest("up/app", "dropped")) !== null) {
    assert.ok(Date.now() - started < 15_000, "not pulled for longer than the retention: dropped");
    assert.equal((await fetch(`${mirror.url}/v2/up/app/manifests/kept`, { headers: { Accept: kept.mediaType } })).status, 200);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(await meta.getTaggedManifest("up/app", "kept"));
  await mirror.registry.gc({ gracePeriodMs: 0, untagged: true });
  for (const blob of dropped.layers) assert.equal(await meta.linkedBlob("up/app", blob.digest), null, "freed by GC");
  for (const blob of kept.layers) assert.ok(await meta.linkedBlob("up/app", blob.digest));
  // Dropped content comes back from the upstream on the next pull.
  await pull("dropped", dropped);
});
