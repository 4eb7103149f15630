/**
 * Blobs announced with their digest and streamed straight to their final key
 * (s3-staged-put.ts), on a real S3 server (Ceph RGW): nothing is readable
 * under the digest before publish, nothing is left behind by a failure, a
 * discard or a crash (the purge aborts it), and through `ferry serve` a wrong
 * digest, a client that goes away and two concurrent pushes of one digest
 * all end with the right bytes or none.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { request } from "node:http";
import { Readable } from "node:stream";
import { ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { S3BlobStore, type S3StoreOptions } from "../../src/storage/s3.js";
import { BlobNotFoundError, UploadLengthError } from "../../src/storage/blob-store.js";
import { InlineSha256 } from "../../src/hashing/incremental-hash.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { s3StoreOptions, skipUnlessS3, useS3Bucket } from "../helpers/s3-rgw.js";

const MiB = 1024 * 1024;
const skip = skipUnlessS3();
const registries: TestRegistry[] = [];
// Registered first, so it runs first: the registries close before the bucket goes.
after(async () => {
  for (const registry of registries) await registry.close();
});
const s3 = useS3Bucket(skip);

function storeOptions(prefix: string, extra: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return s3StoreOptions(s3, prefix, extra);
}

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function multipartUploadsUnder(prefix: string): Promise<number> {
  const page = await s3.raw.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: prefix }));
  return (page.Uploads ?? []).length;
}

async function keysUnder(prefix: string): Promise<string[]> {
  const page = await s3.raw.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
  return (page.Contents ?? []).map((o) => o.Key!);
}

/** Yields `bytes` in 1 MiB pieces, then fails. */
async function* failingAfter(bytes: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += MiB) yield bytes.subarray(at, at + MiB);
  throw new Error("the client went away");
}

describe("S3 staged blobs on Ceph RGW", { skip }, () => {
  test("a multipart blob is unreadable under its digest until published, then reads back whole; nothing else is left", async () => {
    const prefix = `staged-${randomUUID()}/`;
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      const bytes = randomBytes(12 * MiB + 3);
      const digest = digestOf(bytes);
      const hash = new InlineSha256();
      const staged = await store.stageBlob(digest, Readable.from([bytes.subarray(0, 7 * MiB), bytes.subarray(7 * MiB)]), { exactBytes: bytes.length, hash });
      assert.equal(staged.size, bytes.length);
      assert.equal(await hash.digest(), digest, "the bytes staged were fed to the hash");
      assert.equal(await multipartUploadsUnder(prefix), 1, "the parts went to a multipart upload");
      assert.equal(await store.stat(digest), null, "nothing under the digest before publish");
      await assert.rejects(store.read(digest), BlobNotFoundError);
      await staged.publish();
      assert.deepEqual(await store.stat(digest), { size: bytes.length });
      assert.ok((await collect(await store.read(digest))).equals(bytes));
      assert.ok((await collect(await store.read(digest, { start: 5 * MiB - 2, end: 10 * MiB + 1 }))).equals(bytes.subarray(5 * MiB - 2, 10 * MiB + 2)));
      await staged.discard(); // after publish: does nothing
      assert.deepEqual(await store.stat(digest), { size: bytes.length });
      assert.equal(await multipartUploadsUnder(prefix), 0);
      assert.deepEqual(await keysUnder(`${prefix}uploads/`), [], "no session objects");
    } finally {
      await store.close();
    }
  });

  test("a blob smaller than a part starts no multipart upload and is one PUT at publish; an empty blob works too", async () => {
    const prefix = `staged-small-${randomUUID()}/`;
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      for (const bytes of [randomBytes(3 * MiB + 1), Buffer.alloc(0)]) {
        const digest = digestOf(bytes);
        const staged = await store.stageBlob(digest, Readable.from(bytes.length > 0 ? [bytes] : []), {});
        assert.equal(await multipartUploadsUnder(prefix), 0);
        assert.equal(await store.stat(digest), null);
        await staged.publish();
        assert.ok((await collect(await store.read(digest))).equals(bytes));
      }
    } finally {
      await store.close();
    }
  });

  test("discard, a failing source and a wrong length leave no multipart upload and nothing under the digest", async () => {
    const prefix = `staged-fail-${randomUUID()}/`;
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      const bytes = randomBytes(11 * MiB);
      const digest = digestOf(bytes);
      const discarded = await store.stageBlob(digest, Readable.from([bytes]), {});
      assert.equal(await multipartUploadsUnder(prefix), 1);
      await discarded.discard();
      assert.equal(await multipartUploadsUnder(prefix), 0);

      await assert.rejects(store.stageBlob(digest, Readable.from(failingAfter(bytes)), {}), /went away/);
      await assert.rejects(store.stageBlob(digest, Readable.from([bytes]), { exactBytes: bytes.length + 1 }), UploadLengthError);
      await assert.rejects(store.stageBlob(digest, Readable.from([bytes]), { exactBytes: 6 * MiB }), UploadLengthError);
      await assert.rejects(store.stageBlob(digest, Readable.from([bytes]), { maxBytes: 6 * MiB }), /more than/);
      assert.equal(await multipartUploadsUnder(prefix), 0, "every failure aborted its upload");
      assert.equal(await store.stat(digest), null);
    } finally {
      await store.close();
    }
  });

  test("the purge aborts staged uploads a crashed process left, but not those a request here is still writing", async () => {
    const prefix = `staged-purge-${randomUUID()}/`;
    const crashed = new S3BlobStore(storeOptions(prefix));
    const alive = new S3BlobStore(storeOptions(prefix));
    try {
      const bytes = randomBytes(6 * MiB);
      await crashed.stageBlob(digestOf(bytes), Readable.from([bytes]), {}); // never published nor discarded
      const held = await alive.stageBlob(digestOf(bytes), Readable.from([bytes]), {});
      assert.equal(await multipartUploadsUnder(prefix), 2);
      assert.equal(await alive.purgeStaged(Date.now() - 3_600_000), 0, "younger than the cutoff: kept");
      assert.equal(await alive.purgeStaged(Date.now() + 60_000), 1, "the other process's upload is aborted, this one's is not");
      assert.equal(await multipartUploadsUnder(prefix), 1);
      await held.publish();
      assert.ok((await collect(await alive.read(digestOf(bytes)))).equals(bytes));
      assert.equal(await multipartUploadsUnder(prefix), 0);
    } finally {
      await crashed.close();
      await alive.close();
    }
  });
});

describe("monolithic pushes to ferry on S3 go straight to the digest's key", { skip }, () => {
  async function s3Registry(prefix: string): Promise<TestRegistry> {
    const registry = await startTestRegistry({
      storage: {
        driver: "s3",
        s3: { endpoint: s3.server.endpoint, bucket: s3.bucket, accessKeyId: s3.server.accessKeyId, secretAccessKey: s3.server.secretAccessKey, prefix, partSize: "5MiB" },
      },
    });
    registries.push(registry);
    return registry;
  }

  test("PUT ?digest= with the body on an empty session: 201, bytes readable, session over, nothing left in the bucket but the blob", async () => {
    const prefix = `mono-put-${randomUUID()}/`;
    const registry = await s3Registry(prefix);
    const bytes = randomBytes(12 * MiB + 7);
    const digest = digestOf(bytes);
    const start = await fetch(`${registry.url}/v2/s3/put/blobs/uploads/`, { method: "POST" });
    assert.equal(start.status, 202);
    const location = new URL(start.headers.get("location")!, registry.url).toString();
    const put = await fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${digest}`, { method: "PUT", body: new Uint8Array(bytes) });
    assert.equal(put.status, 201, await put.text());
    const got = await fetch(`${registry.url}/v2/s3/put/blobs/${digest}`);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
    assert.equal((await fetch(location)).status, 404, "the session is over");
    assert.equal(await multipartUploadsUnder(prefix), 0);
    assert.deepEqual(await keysUnder(prefix), [`${prefix}blobs/sha256/${digest.slice(7)}`]);
  });

  test("a wrong digest is DIGEST_INVALID and leaves nothing: no blob, no multipart upload; the session of a PUT is gone", async () => {
    const prefix = `mono-bad-${randomUUID()}/`;
    const registry = await s3Registry(prefix);
    const bytes = randomBytes(7 * MiB);
    const claimed = digestOf(randomBytes(10));
    const post = await fetch(`${registry.url}/v2/s3/bad/blobs/uploads/?digest=${claimed}`, { method: "POST", body: new Uint8Array(bytes) });
    assert.equal(post.status, 400);
    assert.equal(((await post.json()) as { errors: Array<{ code: string }> }).errors[0].code, "DIGEST_INVALID");

    const start = await fetch(`${registry.url}/v2/s3/bad/blobs/uploads/`, { method: "POST" });
    const location = new URL(start.headers.get("location")!, registry.url).toString();
    const put = await fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${claimed}`, { method: "PUT", body: new Uint8Array(bytes) });
    assert.equal(put.status, 400);
    assert.equal((await fetch(location)).status, 404);

    assert.equal((await fetch(`${registry.url}/v2/s3/bad/blobs/${claimed}`, { method: "HEAD" })).status, 404);
    assert.equal(await multipartUploadsUnder(prefix), 0);
    assert.deepEqual(await keysUnder(prefix), []);
  });

  test("a client that goes away mid-push leaves no multipart upload, and its session can still be pushed to", async () => {
    const prefix = `mono-gone-${randomUUID()}/`;
    const registry = await s3Registry(prefix);
    const bytes = randomBytes(16 * MiB);
    const digest = digestOf(bytes);
    const start = await fetch(`${registry.url}/v2/s3/gone/blobs/uploads/`, { method: "POST" });
    const location = new URL(start.headers.get("location")!, registry.url).toString();
    const target = new URL(`${location}${location.includes("?") ? "&" : "?"}digest=${digest}`);
    await new Promise<void>((resolve) => {
      const req = request(target, { method: "PUT", headers: { "Content-Length": String(bytes.length), "Content-Type": "application/octet-stream" } });
      req.on("error", () => resolve());
      // More than a part, so a multipart upload is under way when the client disappears.
      req.write(bytes.subarray(0, 11 * MiB), () => setTimeout(() => req.destroy(), 300));
    });
    let left = -1;
    for (let i = 0; i < 50 && left !== 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      left = await multipartUploadsUnder(prefix);
    }
    assert.equal(left, 0, "the multipart upload was aborted");
    assert.equal((await fetch(`${registry.url}/v2/s3/gone/blobs/${digest}`, { method: "HEAD" })).status, 404);
    const status = await fetch(location);
    assert.equal(status.status, 204, "the session is as it was");
    const retry = await fetch(target, { method: "PUT", body: new Uint8Array(bytes) });
    assert.equal(retry.status, 201, await retry.text());
    assert.ok(Buffer.from(await (await fetch(`${registry.url}/v2/s3/gone/blobs/${digest}`)).arrayBuffer()).equals(bytes));
  });

  test("concurrent pushes of one digest (POSTs and a PUT on a session) all succeed with the same bytes and leave one object", async () => {
    const prefix = `mono-same-${randomUUID()}/`;
    const registry = await s3Registry(prefix);
    const bytes = randomBytes(13 * MiB);
    const digest = digestOf(bytes);
    const start = await fetch(`${registry.url}/v2/s3/same/blobs/uploads/`, { method: "POST" });
    const location = new URL(start.headers.get("location")!, registry.url).toString();
    const pushes = await Promise.all([
      fetch(`${registry.url}/v2/s3/same/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) }),
      fetch(`${registry.url}/v2/s3/other/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) }),
      fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${digest}`, { method: "PUT", body: new Uint8Array(bytes) }),
    ]);
    for (const push of pushes) assert.equal(push.status, 201, await push.text());
    for (const repository of ["s3/same", "s3/other"]) {
      const got = await fetch(`${registry.url}/v2/${repository}/blobs/${digest}`);
      assert.equal(got.status, 200);
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
    }
    assert.equal(await multipartUploadsUnder(prefix), 0, "the pushes that found the blob stored aborted theirs");
    assert.deepEqual(await keysUnder(prefix), [`${prefix}blobs/sha256/${digest.slice(7)}`]);
  });
});
