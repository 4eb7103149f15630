/**
 * With blobs on S3 the federation proxy cache lives in the same bucket (under
 * `<prefix>federation-cache/`), so every replica shares one cache: bytes one
 * replica fetched and verified are served by another without a new fetch.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { skipUnlessS3, useS3Bucket } from "../helpers/s3-rgw.js";
import { FakeSource, blob, pushForeignImage, sha256 } from "../federation/helpers.js";

const skip = skipUnlessS3();
const s3 = useS3Bucket(skip);

test("replicas on one bucket share the proxy cache: a layer verified by one is served by the other from S3", { skip }, async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-s3-fed-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const config = {
    storage: { driver: "s3", s3: { endpoint: s3.server.endpoint, bucket: s3.bucket, accessKeyId: s3.server.accessKeyId, secretAccessKey: s3.server.secretAccessKey, prefix: "fed" } },
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
  const listed = await s3.raw.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: "fed/federation-cache/blobs/" }));
  assert.ok((listed.Contents ?? []).some((object) => object.Key?.endsWith(layer.digest.slice(7))), "the cached bytes are in the bucket");
});
