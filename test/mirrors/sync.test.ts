/**
 * Scheduled sync copies the matching tags of a mirrored repository, with
 * every blob, and records what it did; `ferry mirror status` shows it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildImage, pushImage } from "../helpers/images.js";
import { startTestRegistry } from "../helpers/registry.js";
import { ferry } from "../client/harness.js";
import { loadConfig } from "../../src/config/load.js";

interface SyncAnswer {
  sync: Array<{ from: string; lastRun: { tagsMatched: number; tagsUpdated: string[]; blobsFetched: number; bytesFetched: number; errors: unknown[] } | null }>;
}

test("sync copies the tags matching its patterns (manifests and blobs) and records the run; ferry mirror status prints it", async (t) => {
  const upstream = await startTestRegistry();
  t.after(() => upstream.close());
  const images = {
    "3.18": await buildImage({ layers: [{ "v": "3.18\n" }] }),
    "3.19": await buildImage({ layers: [{ "v": "3.19\n" }] }),
    edge: await buildImage({ layers: [{ "v": "edge\n" }] }),
  };
  for (const [tag, image] of Object.entries(images)) await pushImage(upstream.url, "lib/alpine", tag, image);
  const mirror = await startTestRegistry({
    mirrors: [{ prefix: "up/", upstream: upstream.url }],
    sync: [{ from: "up/lib/alpine", tags: ["3.*"], interval: "1s" }],
  });
  t.after(() => mirror.close());

  let answer: SyncAnswer | undefined;
  for (let i = 0; i < 100; i++) {
    answer = (await (await fetch(`${mirror.url}/ferry/v1/mirrors`)).json()) as SyncAnswer;
    if (answer.sync[0]?.lastRun) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const run = answer!.sync[0]!.lastRun!;
  assert.equal(run.tagsMatched, 2);
  assert.deepEqual(run.tagsUpdated, ["3.18", "3.19"]);
  assert.equal(run.blobsFetched, 4, "config and layer of both tags");
  assert.deepEqual(run.errors, []);
  const meta = mirror.registry.deps.meta;
  for (const tag of ["3.18", "3.19"] as const) {
    const image = images[tag];
    assert.equal((await meta.getTaggedManifest("up/lib/alpine", tag))?.digest, image.manifestDigest);
    for (const blob of [image.config, ...image.layers]) assert.equal((await meta.linkedBlob("up/lib/alpine", blob.digest))?.size, blob.size);
  }
  assert.equal(await meta.getTaggedManifest("up/lib/alpine", "edge"), null, "edge does not match 3.*");

  // Synced content is served with the upstream gone.
  await upstream.close();
  const offline = await fetch(`${mirror.url}/v2/up/lib/alpine/blobs/${images["3.19"].layers[0]!.digest}`);
  assert.equal(offline.status, 200);
  await offline.arrayBuffer();

  const status = await ferry(["mirror", "status", mirror.host]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /up\/ -> http:\/\/127\.0\.0\.1:\d+/);
  assert.match(status.stdout, /sync up\/lib\/alpine \[3\.\*\] every 1s/);
  assert.match(status.stdout, /bytes: .* from cache, .* fetched from the upstream/);
});

test("a sync from a repository under no mirror prefix stops start-up with the key named", () => {
  assert.throws(
    () => loadConfig({ env: {}, overrides: { mirrors: [{ prefix: "hub/", upstream: "https://registry-1.docker.io" }], sync: [{ from: "quay/app", interval: "1h" }] } }),
    /sync\.0\.from.*under no mirror's prefix|sync\[0\]\.from.*under no mirror's prefix/s,
  );
});

test("mirror config mistakes are refused at start-up: a prefix without its slash, an upstream with a path, two mirrors on one prefix", () => {
  const bad = [
    { prefix: "hub", upstream: "https://registry-1.docker.io" },
    { prefix: "hub/", upstream: "https://registry-1.docker.io/v2/" },
  ];
  for (const mirror of bad) assert.throws(() => loadConfig({ env: {}, overrides: { mirrors: [mirror] } }));
  assert.throws(
    () => loadConfig({ env: {}, overrides: { mirrors: [{ prefix: "a/", upstream: "http://127.0.0.1:1" }, { prefix: "a/", upstream: "http://127.0.0.1:2" }] } }),
    /used by two mirrors/,
  );
});
