/**
 * A foreign layer's sources in a repository are the union of the URLs its
 * manifests there name; a URL leaves with the last manifest naming it; a
 * repository is served only from its own URLs. Real sources on 127.0.0.1.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { type TestRegistry } from "../helpers/registry.js";
import { federatedRegistry, fakeSource, serveAll, blob, parseErrors, pushForeignImage, sha256 } from "./helpers.js";

const registry = federatedRegistry;

const source = fakeSource;

const all = serveAll;

async function get(r: TestRegistry, repository: string, digest: string) {
  const res = await fetch(`${r.url}/v2/${repository}/blobs/${digest}`, { redirect: "manual" });
  return { status: res.status, location: res.headers.get("location"), bytes: Buffer.from(await res.arrayBuffer()) };
}

async function deleteManifest(r: TestRegistry, repository: string, digest: string): Promise<void> {
  assert.equal((await fetch(`${r.url}/v2/${repository}/manifests/${digest}`, { method: "DELETE" })).status, 202);
}

test("proxy: a later manifest naming only a broken URL does not take away the working URL of an earlier one", async (t) => {
  const s = await source(t);
  const r = await registry(t, all("proxy"));
  const layer = blob(1000);
  const good = s.put("/good", layer.bytes);
  const broken = s.url("/broken"); // 404
  assert.equal((await pushForeignImage(r.url, "app", "a", [{ ...layer, urls: [good] }])).status, 201);
  assert.equal((await pushForeignImage(r.url, "app", "b", [{ ...layer, urls: [broken] }])).status, 201);
  const got = await get(r, "app", layer.digest);
  assert.equal(got.status, 200, "manifest A's URL still serves the layer");
  assert.equal(sha256(got.bytes), layer.digest);
  const marks = (await (await fetch(`${r.url}/ferry/v1/foreign/layers?repository=app`)).json()) as { layers: Array<{ urls: string[] }> };
  assert.deepEqual(marks.layers[0]!.urls, [good, broken], "the admin view lists the union");
});

test("redirect: after the manifest that brought a URL is deleted, the layer never redirects there again", async (t) => {
  const s = await source(t);
  const r = await registry(t, all("redirect"));
  const layer = blob(100);
  const u2 = s.put("/two", layer.bytes);
  const u1 = s.put("/one", layer.bytes);
  const b = await pushForeignImage(r.url, "app", "b", [{ ...layer, urls: [u2] }]);
  const a = await pushForeignImage(r.url, "app", "a", [{ ...layer, urls: [u1] }]);
  assert.equal(b.status, 201);
  assert.equal(a.status, 201);
  assert.equal((await get(r, "app", layer.digest)).location, u2, "both are named: the first URL of the union, not the last push");
  await deleteManifest(r, "app", b.digest);
  assert.equal((await get(r, "app", layer.digest)).location, u1, "u2 left with the only manifest that named it");
  await pushForeignImage(r.url, "app", "b", [{ ...layer, urls: [u2] }]);
  await deleteManifest(r, "app", a.digest);
  assert.equal((await get(r, "app", layer.digest)).location, u2, "u1 left with the only manifest that named it");
  await deleteManifest(r, "app", b.digest);
  assert.equal((await get(r, "app", layer.digest)).status, 404, "no manifest references the layer any more");
});

test("a repository is served only from URLs its own manifests name", async (t) => {
  const s = await source(t);
  const r = await registry(t, all("proxy"));
  const layer = blob(1000);
  const theirs = s.put("/theirs", layer.bytes);
  const mine = s.url("/mine"); // 404
  await pushForeignImage(r.url, "other", "v1", [{ ...layer, urls: [theirs] }]);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [mine] }]);
  const got = await get(r, "app", layer.digest);
  assert.equal(got.status, 502);
  const [error] = parseErrors(got.bytes.toString());
  assert.equal(error!.code, "UNAVAILABLE");
  assert.deepEqual((error!.detail?.attempts as Array<{ url: string }>).map((a) => a.url), [mine], "the other repository's URL was not tried");
  assert.equal(s.gets("/theirs"), 0);
  assert.equal((await get(r, "other", layer.digest)).status, 200);
});
