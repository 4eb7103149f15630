/**
 * `ferry serve` with storage.driver s3 on a real S3 server (Ceph RGW):
 * chunked pushes in small PATCHes, Range pulls, HEAD from metadata, 307 to
 * presigned URLs, purge of orphaned multipart uploads, and skopeo copying an
 * image in and out.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, writeLayout, sha256, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { skipUnlessS3, useS3Bucket } from "../helpers/s3-rgw.js";
import { skopeo } from "./clients.js";

const MiB = 1024 * 1024;
const skip = skipUnlessS3();
const registries: TestRegistry[] = [];
// Registered first, so it runs first: the registries close before the bucket goes.
after(async () => {
  for (const registry of registries) await registry.close();
});
const s3 = useS3Bucket(skip);

async function s3Registry(prefix: string, extra: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Promise<TestRegistry> {
  const registry = await startTestRegistry({
    storage: {
      driver: "s3",
      s3: {
        endpoint: s3.server.endpoint,
        bucket: s3.bucket,
        accessKeyId: s3.server.accessKeyId,
        secretAccessKey: s3.server.secretAccessKey,
        prefix,
        partSize: "5MiB",
        ...extra,
      },
    },
    ...top,
  });
  registries.push(registry);
  return registry;
}

async function startSession(url: string, repository: string): Promise<string> {
  const response = await fetch(`${url}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  assert.equal(response.status, 202);
  return new URL(response.headers.get("location")!, url).toString();
}

test("a blob pushed in small PATCH chunks to one replica and finished on another reads back whole, with Range, and HEAD answers from metadata", { skip }, async () => {
  const prefix = "chunked/";
  // Two registries on one bucket and one metadata database stand in for two replicas.
  const first = await s3Registry(prefix);
  const bytes = randomBytes(11 * MiB + 5);
  const digest = sha256(bytes);
  let location = await startSession(first.url, "s3/app");
  let offset = 0;
  for (const size of [1, 65_536, 3 * MiB, 2 * MiB]) {
    const response = await fetch(location, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": `${offset}-${offset + size - 1}` },
      body: new Uint8Array(bytes.subarray(offset, offset + size)),
    });
    assert.equal(response.status, 202, await response.text());
    offset += size;
    location = new URL(response.headers.get("location")!, first.url).toString();
  }
  // The rest goes with the PUT to a second registry process sharing the data directory.
  const second = await startTestRegistry(
    { storage: { driver: "s3", s3: { endpoint: s3.server.endpoint, bucket: s3.bucket, accessKeyId: s3.server.accessKeyId, secretAccessKey: s3.server.secretAccessKey, prefix, partSize: "5MiB" } } },
    first.dataDir,
  );
  registries.push(second);
  const put = await fetch(`${location.replace(first.url, second.url)}${location.includes("?") ? "&" : "?"}digest=${digest}`, {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream" },
    body: new Uint8Array(bytes.subarray(offset)),
  });
  assert.equal(put.status, 201, await put.text());
  const got = await fetch(`${first.url}/v2/s3/app/blobs/${digest}`);
  assert.equal(got.status, 200);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
  const ranged = await fetch(`${second.url}/v2/s3/app/blobs/${digest}`, { headers: { Range: `bytes=${5 * MiB - 3}-${5 * MiB + 3}` } });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers.get("content-range"), `bytes ${5 * MiB - 3}-${5 * MiB + 3}/${bytes.length}`);
  assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(5 * MiB - 3, 5 * MiB + 4)));
  const head = await fetch(`${first.url}/v2/s3/app/blobs/${digest}`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), String(bytes.length));
  const leftovers = await s3.raw.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `${prefix}uploads/` }));
  assert.equal(leftovers.KeyCount ?? 0, 0, "the finished session left nothing in the bucket");
});

test("with redirect.enabled a blob GET answers 307 to a presigned URL that serves the bytes; HEAD stays 200 from metadata", { skip }, async () => {
  const registry = await s3Registry("redirect/", { redirect: { enabled: true, expires: "2m" } });
  const bytes = randomBytes(100_000);
  const digest = sha256(bytes);
  const push = await fetch(`${registry.url}/v2/s3/redir/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) });
  assert.equal(push.status, 201);
  const got = await fetch(`${registry.url}/v2/s3/redir/blobs/${digest}`, { redirect: "manual" });
  assert.equal(got.status, 307);
  const location = got.headers.get("location")!;
  assert.ok(location.startsWith(`${s3.server.endpoint}/${s3.bucket}/redirect/blobs/sha256/`), location);
  assert.match(location, /X-Amz-Expires=120/);
  const direct = await fetch(location);
  assert.equal(direct.status, 200);
  assert.ok(Buffer.from(await direct.arrayBuffer()).equals(bytes));
  const head = await fetch(`${registry.url}/v2/s3/redir/blobs/${digest}`, { method: "HEAD", redirect: "manual" });
  assert.equal(head.status, 200);
  // An unknown blob is still 404, not a redirect to nothing.
  const unknown = await fetch(`${registry.url}/v2/s3/redir/blobs/${sha256("nope")}`, { redirect: "manual" });
  assert.equal(unknown.status, 404);
});

test("the purge job aborts the multipart upload of an abandoned session", { skip }, async () => {
  const prefix = "purge/";
  const registry = await s3Registry(prefix, {}, { uploads: { purgeAfter: "1ms", purgeInterval: 0 } });
  const location = await startSession(registry.url, "s3/purge");
  const patch = await fetch(location, { method: "PATCH", body: new Uint8Array(randomBytes(6 * MiB)) });
  assert.equal(patch.status, 202);
  const uploads = async () => (await s3.raw.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: prefix }))).Uploads ?? [];
  assert.equal((await uploads()).length, 1);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok((await registry.registry.purgeUploads()) >= 1);
  assert.equal((await uploads()).length, 0);
  const left = await s3.raw.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `${prefix}uploads/` }));
  assert.equal(left.KeyCount ?? 0, 0);
  assert.equal((await fetch(location)).status, 404);
});

const skopeoSkip = skip || skipUnless("skopeo");

test("skopeo copies an image into Ferry on S3 and back out, byte for byte", { skip: skopeoSkip }, async () => {
  const registry = await s3Registry("skopeo/");
  const work = await mkdtemp(join(tmpdir(), "ferry-s3-e2e-"));
  try {
    const image: TestImage = await buildImage({ layers: [{ "a.txt": "layer one\n" }, { "big.bin": randomBytes(6 * MiB) }] });
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${registry.host}/s3e2e/app:v1`);
    const raw = await skopeo("inspect", "--tls-verify=false", "--raw", `docker://${registry.host}/s3e2e/app:v1`);
    assert.equal(raw, image.manifest.toString());
    const out = join(work, "pulled");
    await skopeo("copy", "--src-tls-verify=false", `docker://${registry.host}/s3e2e/app:v1`, `oci:${out}:x`);
    for (const layer of image.layers) {
      assert.equal(sha256(await readFile(join(out, "blobs", "sha256", layer.digest.slice(7)))), layer.digest);
    }
    assert.ok((await readFile(join(out, "blobs", "sha256", image.manifestDigest.slice(7)))).equals(image.manifest));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});
