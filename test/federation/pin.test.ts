/**
 * The cache is filled by push-time verification, `cache: pin` keeps a
 * permanent verified copy, and the cache (bytes behind the blob store, index
 * in the metadata store) is shared by every process over the same data:
 * one cache, one byte budget, eviction that never touches a pinned layer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestRegistry } from "../helpers/registry.js";
import { federatedRegistry, fakeSource, blob, pushForeignImage, sha256 } from "./helpers.js";

type After = { after(fn: () => Promise<void>): void };

const registry = federatedRegistry;

const source = fakeSource;

async function tempDir(t: After): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-pin-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const proxy = (cache: boolean | "pin") => ({ rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "proxy", cache }] });

async function getBytes(r: TestRegistry, repository: string, digest: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(`${r.url}/v2/${repository}/blobs/${digest}`);
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

interface AdminLayers {
  layers: Array<{ repository: string; digest: string; cached: boolean; pinned: boolean }>;
  cache: { entries: number; bytes: number; maxBytes: number; pinnedEntries: number; pinnedBytes: number };
}
async function admin(r: TestRegistry): Promise<AdminLayers> {
  return (await (await fetch(`${r.url}/ferry/v1/foreign/layers`)).json()) as AdminLayers;
}

test("verify: fetch keeps the verified bytes in the cache: one download serves the push and the pulls", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...proxy(true), verify: { mode: "fetch" } });
  const layer = blob(5000);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.put("/a", layer.bytes)] }]);
  assert.equal(s.gets("/a"), 1, "the push-time verification");
  const got = await getBytes(r, "app", layer.digest);
  assert.equal(got.status, 200);
  assert.equal(sha256(got.bytes), layer.digest);
  assert.equal(s.gets("/a"), 1, "the pull came from the cache the verification filled");
  assert.equal((await admin(r)).layers[0]!.cached, true);
});

test("verify: fetch does not keep bytes for a rule without a cache", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...proxy(false), verify: { mode: "fetch" } });
  const layer = blob(5000);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.put("/a", layer.bytes)] }]);
  await getBytes(r, "app", layer.digest);
  assert.equal(s.gets("/a"), 2);
  assert.equal((await admin(r)).cache.entries, 0);
});

test("cache: pin keeps a verified copy that outlives its source, the TTL and the byte budget, until no manifest needs it", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...proxy("pin"), verify: { mode: "head" }, proxy: { cacheTtl: "1s", cacheMaxBytes: 100 } });
  const layer = blob(5000); // fifty times the budget
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.put("/licensed", layer.bytes)] }]);
  assert.equal(pushed.status, 201, pushed.body);
  assert.equal(s.gets("/licensed"), 1, "a pinned layer is fetched at push (a HEAD cannot pin)");
  await s.down(); // the licensed layer disappeared
  await new Promise((resolve) => setTimeout(resolve, 1100)); // past cacheTtl
  const other = blob(90);
  const s2 = await source(t);
  await pushForeignImage(r.url, "app", "v2", [{ ...other, urls: [s2.put("/o", other.bytes)] }]); // verified + pinned too: fills
  const got = await getBytes(r, "app", layer.digest);
  assert.equal(got.status, 200);
  assert.equal(sha256(got.bytes), layer.digest);
  const view = await admin(r);
  assert.equal(view.layers.find((l) => l.digest === layer.digest)?.pinned, true);
  assert.equal(view.cache.pinnedBytes >= 5000, true);

  await fetch(`${r.url}/v2/app/manifests/${pushed.digest}`, { method: "DELETE" });
  const after = await admin(r);
  assert.equal(after.layers.some((l) => l.digest === layer.digest), false);
  const cache = (r.registry.services.federation as unknown as { cache: { evict(): Promise<void>; has(d: string): boolean } }).cache;
  await cache.evict();
  assert.equal(cache.has(layer.digest), false, "unpinned once no manifest references it, then expired and evicted");
});

test("two processes over the same data share one cache: what one fetched, the other serves", async (t) => {
  const s = await source(t);
  const dir = await tempDir(t);
  const one = await registry(t, proxy(true), dir);
  const two = await registry(t, proxy(true), dir);
  const layer = blob(5000);
  await pushForeignImage(one.url, "app", "v1", [{ ...layer, urls: [s.put("/a", layer.bytes)] }]);
  assert.equal(sha256((await getBytes(one, "app", layer.digest)).bytes), layer.digest);
  assert.equal(s.gets("/a"), 1);
  await s.down();
  const fromTwo = await getBytes(two, "app", layer.digest);
  assert.equal(fromTwo.status, 200, "the second process serves what the first cached");
  assert.equal(sha256(fromTwo.bytes), layer.digest);
});

test("the byte budget holds across processes and never evicts a pinned layer", async (t) => {
  const s = await source(t);
  const dir = await tempDir(t);
  const config = { rules: [{ match: "/pinned/", serve: "proxy", cache: "pin" }, { match: "^http://127\\.0\\.0\\.1:", serve: "proxy", cache: true }], proxy: { cacheMaxBytes: 2500 } };
  const one = await registry(t, config, dir);
  const two = await registry(t, config, dir);
  const [pinned, a, b] = [blob(3000), blob(1000), blob(2000)];
  await pushForeignImage(one.url, "app", "v1", [
    { ...pinned, urls: [s.put("/pinned/p", pinned.bytes)] },
    { ...a, urls: [s.put("/a", a.bytes)] },
    { ...b, urls: [s.put("/b", b.bytes)] },
  ]);
  assert.equal((await getBytes(one, "app", pinned.digest)).status, 200);
  assert.equal((await getBytes(one, "app", a.digest)).status, 200);
  assert.equal((await getBytes(two, "app", b.digest)).status, 200); // 1000 + 2000 > 2500: a goes, whoever cached it
  const view = await admin(two);
  assert.deepEqual(
    Object.fromEntries(view.layers.map((l) => [l.digest, l.cached])),
    { [pinned.digest]: true, [a.digest]: false, [b.digest]: true },
  );
  assert.equal(view.cache.bytes, 2000);
  assert.equal(view.cache.pinnedBytes, 3000);
  await s.down();
  assert.equal((await getBytes(one, "app", pinned.digest)).status, 200);
  assert.equal((await getBytes(one, "app", a.digest)).status, 502, "evicted by the other process: the bytes are gone");
});

test("the admin view's `cached` is true only where blob requests are answered from the cache", async (t) => {
  const s = await source(t);
  const r = await registry(t, {
    rules: [
      { match: "/cached/", serve: "proxy", cache: true },
      { match: "^http://127\\.0\\.0\\.1:", serve: "proxy" },
    ],
    verify: { mode: "fetch" },
  });
  const layer = blob(5000);
  await pushForeignImage(r.url, "withcache", "v1", [{ ...layer, urls: [s.put("/cached/a", layer.bytes)] }]);
  await pushForeignImage(r.url, "nocache", "v1", [{ ...layer, urls: [s.put("/plain/a", layer.bytes)] }]);
  const layers = (await admin(r)).layers;
  assert.equal(layers.find((l) => l.repository === "withcache")?.cached, true);
  assert.equal(layers.find((l) => l.repository === "nocache")?.cached, false, "its rule proxies without the cache, so its pulls go to the source");
  const before = s.gets("/plain/a");
  assert.equal((await getBytes(r, "nocache", layer.digest)).status, 200);
  assert.equal(s.gets("/plain/a"), before + 1, "and indeed the pull went to the source");
});
