/**
 * The S3 driver on a real S3 server (Ceph RGW): the shared BlobStore suite,
 * then what only S3 has: parts of at least 5 MiB made from chunks of any
 * size, sessions continued by another driver instance (a restart or another
 * replica), multipart commits and ranged server-side copies, Range GETs,
 * orphaned multipart uploads, and start-up checks that name the config key.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { DeleteObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { S3BlobStore, type S3StoreOptions } from "../../src/storage/s3.js";
import { loadConfig } from "../../src/config/load.js";
import { startTestRegistry } from "../helpers/registry.js";
import { blobStoreSuite } from "./blob-store-suite.js";
import { s3StoreOptions, skipUnlessS3, useS3Bucket } from "../helpers/s3-rgw.js";

const MiB = 1024 * 1024;
const skip = skipUnlessS3();
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

async function keysUnder(prefix: string): Promise<string[]> {
  const page = await s3.raw.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
  return (page.Contents ?? []).map((o) => o.Key!);
}

async function multipartUploadsUnder(prefix: string): Promise<number> {
  const page = await s3.raw.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: prefix }));
  return (page.Uploads ?? []).length;
}

/** Appends `bytes` in the given chunk sizes, each append through a brand-new driver instance. */
async function appendAcrossInstances(prefix: string, id: string, bytes: Buffer, sizes: number[], start = 0): Promise<number> {
  let offset = start;
  for (const size of sizes) {
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      assert.equal(await store.uploadSize(id), offset, "a new instance sees the session's size");
      offset = await store.appendUpload(id, Readable.from([bytes.subarray(offset - start, offset - start + size)]), { offset });
    } finally {
      await store.close();
    }
  }
  return offset;
}

describe("S3 driver on Ceph RGW", { skip }, () => {
  blobStoreSuite("s3 (Ceph RGW)", async () => {
    const store = new S3BlobStore(storeOptions(`suite-${randomUUID()}`));
    return { store, cleanup: async () => undefined };
  });

  test("chunks of any size become >= 5 MiB parts, a session continues on new instances (restart, other replica), and only the commit makes it visible", async () => {
    const prefix = `chunked-${randomUUID()}/`;
    const bytes = randomBytes(12 * MiB + 3);
    const id = randomUUID();
    const first = new S3BlobStore(storeOptions(prefix));
    await first.startUpload(id);
    await first.close();
    // 1 byte, many small chunks, one chunk larger than a part, and a tail.
    const sizes = [1, 300_000, 700_000, 1_000_000, 2 * MiB, 6 * MiB + 500_000];
    sizes.push(bytes.length - sizes.reduce((a, b) => a + b, 0));
    const size = await appendAcrossInstances(prefix, id, bytes, sizes);
    assert.equal(size, bytes.length);
    const digest = digestOf(bytes);
    assert.deepEqual(await keysUnder(`${prefix}blobs/`), [], "nothing is visible under blobs/ before the commit");
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      assert.equal(await store.stat(digest), null);
      // Re-hashing on another replica reads the session back (completing its multipart upload).
      assert.ok((await collect(await store.readUpload(id))).equals(bytes));
      assert.equal(await store.stat(digest), null, "reading a session back does not publish it");
      await store.commitUpload(id, digest);
      assert.deepEqual(await store.stat(digest), { size: bytes.length });
      assert.ok((await collect(await store.read(digest))).equals(bytes));
      assert.equal(await store.uploadSize(id), null);
      assert.deepEqual(await keysUnder(`${prefix}uploads/`), [], "the commit removes the session's state, pieces and staging object");
      assert.equal(await multipartUploadsUnder(prefix), 0);
    } finally {
      await store.close();
    }
  });

  test("a session read back (completed multipart upload) still accepts more chunks, and commits every byte", async () => {
    const prefix = `reopen-${randomUUID()}/`;
    const bytes = randomBytes(11 * MiB);
    const id = randomUUID();
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([bytes.subarray(0, 6 * MiB)]), { offset: 0 });
      assert.equal((await collect(await store.readUpload(id))).length, 6 * MiB);
      assert.equal(await store.appendUpload(id, Readable.from([bytes.subarray(6 * MiB)]), { offset: 6 * MiB }), bytes.length);
      const digest = digestOf(bytes);
      await store.commitUpload(id, digest);
      assert.ok((await collect(await store.read(digest))).equals(bytes));
    } finally {
      await store.close();
    }
  });

  test("a blob above the single-copy limit is committed with ranged UploadPartCopy, and Range GETs cross part boundaries", async () => {
    const prefix = `copy-${randomUUID()}/`;
    // A 10 MiB copy limit stands in for S3's 5 GiB: the 23 MiB blob is copied in three ranges
    // (10, 8 and 5 MiB: the last range borrows from the one before to reach S3's 5 MiB minimum).
    const store = new S3BlobStore(storeOptions(prefix, { maxCopyBytes: 10 * MiB }));
    const bytes = randomBytes(23 * MiB + 17);
    const id = randomUUID();
    try {
      await store.startUpload(id);
      const parts = [bytes.subarray(0, 4 * MiB), bytes.subarray(4 * MiB, 14 * MiB), bytes.subarray(14 * MiB)];
      // Also the path that re-opens a read-back (sealed) 14 MiB session with ranged copies (9 + 5 MiB).
      await store.appendUpload(id, Readable.from(parts.slice(0, 2)), { offset: 0 });
      assert.equal((await collect(await store.readUpload(id))).length, 14 * MiB);
      await store.appendUpload(id, Readable.from(parts.slice(2)), { offset: 14 * MiB });
      const digest = digestOf(bytes);
      await store.commitUpload(id, digest);
      assert.deepEqual(await store.stat(digest), { size: bytes.length });
      assert.ok((await collect(await store.read(digest))).equals(bytes));
      for (const [start, end] of [
        [0, 0],
        [5 * MiB - 10, 5 * MiB + 10],
        [bytes.length - 1, bytes.length - 1],
        [1, bytes.length - 2],
      ]) {
        const got = await collect(await store.read(digest, { start, end }));
        assert.ok(got.equals(bytes.subarray(start, end + 1)), `range ${start}-${end}`);
      }
      assert.deepEqual(await keysUnder(`${prefix}uploads/`), []);
      assert.equal(await multipartUploadsUnder(prefix), 0);
    } finally {
      await store.close();
    }
  });

  test("a failed append after a full part leaves the session as it was, and the retry overwrites the stray part", async () => {
    const prefix = `failed-${randomUUID()}/`;
    const store = new S3BlobStore(storeOptions(prefix));
    const id = randomUUID();
    try {
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([Buffer.from("head")]), { offset: 0 });
      const big = randomBytes(7 * MiB);
      // Says 8 MiB, sends 7: the first part (5 MiB) is uploaded before the shortfall shows.
      await assert.rejects(store.appendUpload(id, Readable.from([big]), { offset: 4, exactBytes: 8 * MiB }));
      assert.equal(await store.uploadSize(id), 4);
      assert.equal((await collect(await store.readUpload(id))).toString(), "head");
      await store.appendUpload(id, Readable.from([big]), { offset: 4 });
      const all = Buffer.concat([Buffer.from("head"), big]);
      assert.ok((await collect(await store.readUpload(id))).equals(all));
      await store.commitUpload(id, digestOf(all));
      assert.ok((await collect(await store.read(digestOf(all)))).equals(all));
    } finally {
      await store.close();
    }
  });

  test("orphaned multipart uploads (a session whose state was lost) are listed and aborted", async () => {
    const prefix = `orphan-${randomUUID()}/`;
    const store = new S3BlobStore(storeOptions(prefix));
    const id = randomUUID();
    try {
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([randomBytes(6 * MiB)]), { offset: 0 });
      assert.equal(await multipartUploadsUnder(prefix), 1);
      // A crash that lost the state object: only the multipart upload and a piece remain.
      await s3.raw.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: `${prefix}uploads/${id}/state` }));
      assert.equal(await store.uploadSize(id), null);
      const listed = await store.listUploads();
      assert.ok(listed.some((u) => u.id === id && u.modifiedAt > 0), "the orphan is listed for the purge job");
      await store.abortUpload(id);
      assert.equal(await multipartUploadsUnder(prefix), 0, "the multipart upload is aborted");
      assert.deepEqual(await keysUnder(`${prefix}uploads/`), []);
      assert.deepEqual(await store.listUploads(), []);
    } finally {
      await store.close();
    }
  });

  test("listBlobs reports committed blobs only; delete removes them", async () => {
    const prefix = `list-${randomUUID()}`;
    const store = new S3BlobStore(storeOptions(prefix));
    try {
      const bytes = randomBytes(1000);
      const id = randomUUID();
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([bytes]), { offset: 0 });
      const open = randomUUID();
      await store.startUpload(open);
      await store.commitUpload(id, digestOf(bytes));
      const listed = [];
      for await (const blob of store.listBlobs()) listed.push(blob);
      assert.deepEqual(listed.map((b) => b.digest), [digestOf(bytes)]);
      await store.delete(digestOf(bytes));
      assert.equal(await store.stat(digestOf(bytes)), null);
    } finally {
      await store.close();
    }
  });

  test("start-up stops with a message naming the key and what S3 answered: missing bucket, wrong keys, unreachable endpoint", async () => {
    const base = { endpoint: s3.server.endpoint, bucket: s3.bucket, accessKeyId: s3.server.accessKeyId, secretAccessKey: s3.server.secretAccessKey };
    const start = (s3: Record<string, unknown>) => startTestRegistry({ storage: { driver: "s3", s3: { ...base, ...s3 } } });
    await assert.rejects(start({ bucket: "no-such-bucket-here" }), /storage\.s3\.bucket.*"no-such-bucket-here".*does not exist.*NoSuchBucket/);
    await assert.rejects(start({ secretAccessKey: "wrong" }), /storage\.s3\.accessKeyId \/ storage\.s3\.secretAccessKey.*SignatureDoesNotMatch/);
    await assert.rejects(start({ accessKeyId: "nobody" }), /storage\.s3\.accessKeyId.*InvalidAccessKeyId/);
    await assert.rejects(start({ endpoint: "http://127.0.0.1:1" }), /storage\.s3\.endpoint: http:\/\/127\.0\.0\.1:1 is unreachable \(ECONNREFUSED/);
    await assert.rejects(startTestRegistry({ storage: { driver: "s3" } }), /storage\.s3\.bucket: required/);
    // And the secret never appears in what start-up says.
    await assert.rejects(start({ secretAccessKey: "very-secret-value" }), (error: Error) => !error.message.includes("very-secret-value"));
  });

  test("FERRY_STORAGE__DRIVER=s3 and FERRY_STORAGE__S3__* configure the driver like the file does", async () => {
    const config = loadConfig({
      env: {
        FERRY_STORAGE__DRIVER: "s3",
        FERRY_STORAGE__S3__BUCKET: s3.bucket,
        FERRY_STORAGE__S3__ENDPOINT: s3.server.endpoint,
        FERRY_STORAGE__S3__ACCESS_KEY_ID: s3.server.accessKeyId,
        FERRY_STORAGE__S3__SECRET_ACCESS_KEY: s3.server.secretAccessKey,
        FERRY_STORAGE__S3__PART_SIZE: "8MiB",
        FERRY_STORAGE__S3__REDIRECT__ENABLED: "true",
      },
    });
    assert.equal(config.storage.driver, "s3");
    assert.equal(config.storage.s3?.bucket, s3.bucket);
    assert.equal(config.storage.s3?.partSize, 8 * MiB);
    assert.equal(config.storage.s3?.redirect.enabled, true);
    assert.equal(config.storage.s3?.redirect.expires, 15 * 60_000);
    assert.throws(() => loadConfig({ env: { FERRY_STORAGE__DRIVER: "s3", FERRY_STORAGE__S3__BUCKET: "b", FERRY_STORAGE__S3__PART_SIZE: "1MiB" } }), /partSize.*5MiB/);
  });
});
