/**
 * With blobs on S3 the federation proxy cache lives in the same bucket (under
 * `<prefix>federation-cache/`), so every replica shares one cache: bytes one
 * replica fetched and verified are served by another without a new fetch.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { clientFor, createTestBucket, skipUnlessS3, startS3Server, type S3TestServer } from "../helpers/s3-rgw.js";
import { FakeSource, blob, pushForeignImage, sha256 } from "../federation/helpers.js";

const skip = skipUnlessS3();
let server: S3TestServer;
let bucket: { bucket: string; drop(): Promise<void> };
let raw: S3Client;

before(async () => {
  if (skip) return;
  server = await startS3Server();
  bucket = await createTestBucket(server);
  raw = clientFor(server);
});

after(async () => {
  raw?.destroy();
  await bucket?.drop().catch(() => undefined);
  await server?.close();
});

test("replicas on one bucket share the proxy cache: a layer verified by one is served by the other from S3", { skip }, async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-s3-fed-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const config = {
    storage: { driver: "s3", s3: { endpoint: server.endpoint, bucket: bucket.bucket, accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey, prefix: "fed" } },
    federation: { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "proxy", cache: true }], verify: { mode: "fetch" }, proxy: { allowPrivateNetworks: true } },
  };
  const replicas: TestRegistry[] = [await startTestRegistry(config, data), await startTestRegistry(config, data)];
  t.after(async () => {
    for (const replica of replicas) await replica.close();
  });
  const layer = blob(300_000);
  const url = source.put("/layer", layer.bytes);
  await pushForeignImage(replicas[0]!.url, "app", "v1", [{ ...layer, urls: [url] }]);
  assert.equal(source.gets("/layer"), 1, "verification fetched the layer once");
  for (const replica of replicas) {
    const response = await fetch(`${replica.url}/v2/app/blobs/${layer.digest}`);
    assert.equal(response.status, 200);
    assert.equal(sha256(Buffer.from(await response.arrayBuffer())), layer.digest);
  }
  assert.equal(source.gets("/layer"), 1, "both replicas served the cached copy; the source was not asked again");
  const listed = await raw.send(new ListObjectsV2Command({ Bucket: bucket.bucket, Prefix: "fed/federation-cache/blobs/" }));
  assert.ok((listed.Contents ?? []).some((object) => object.Key?.endsWith(layer.digest.slice(7))), "the cached bytes are in the bucket");
});
