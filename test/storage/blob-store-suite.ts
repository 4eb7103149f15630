/**
 * The contract every BlobStore driver must keep (see src/storage/blob-store.ts).
 * A driver's test file calls `blobStoreSuite(name, factory)`.
 */
import { describe, test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID, createHash } from "node:crypto";
import { Readable } from "node:stream";
import {
  BlobNotFoundError,
  UploadLengthError,
  UploadOffsetError,
  UploadTooLargeError,
  type BlobStore,
} from "../../src/storage/blob-store.js";
import type { IncrementalHash } from "../../src/hashing/incremental-hash.js";
import { chunkedReadable } from "../helpers/chunks.js";

/**
 * Records what a driver feeds AppendOptions.hash: copies of the bytes in the
 * order fed, and shared buffers not given back yet (a driver must not reuse
 * one before its release, and each release must come exactly once).
 */
class RecordingHash implements IncrementalHash {
  private readonly parts: Buffer[] = [];
  unreleased = 0;

  update(chunk: Uint8Array): void {
    this.parts.push(Buffer.from(chunk));
  }

  updateShared(bytes: Uint8Array, release: () => void): void {
    this.parts.push(Buffer.from(bytes));
    this.unreleased++;
    let released = false;
    // Given back on a later turn, as a hashing thread would.
    setImmediate(() => {
      assert.equal(released, false, "released twice");
      released = true;
      this.unreleased--;
      release();
    });
  }

  pause(): void {}
  digest(): Promise<string> {
    return Promise.resolve(digestOf(Buffer.concat(this.parts)));
  }
  discard(): void {}
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

async function storeBlob(store: BlobStore, bytes: Buffer): Promise<string> {
  const id = randomUUID();
  await store.startUpload(id);
  await store.appendUpload(id, Readable.from([bytes]), { offset: 0 });
  const digest = digestOf(bytes);
  await store.commitUpload(id, digest);
  return digest;
}

/** Optional capabilities a driver declares it has, so the suite tests them (and fails when one goes missing). */
export interface OptionalCapabilities {
  /** BlobWriter.syncUpload: the filesystem's early flush; S3 bytes are durable once an append returns. */
  syncUpload?: boolean;
}

export function blobStoreSuite(name: string, create: () => Promise<{ store: BlobStore; cleanup: () => Promise<void> }>, has: OptionalCapabilities = {}): void {
  describe(`BlobStore contract: ${name}`, () => {
    let store: BlobStore;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await create());
    });
    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    test("an uncommitted upload is invisible under its digest; after commit the bytes read back whole", async () => {
      const bytes = randomBytes(300_000);
      const digest = digestOf(bytes);
      const id = randomUUID();
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([bytes]), { offset: 0 });
      assert.equal(await store.stat(digest), null);
      await assert.rejects(store.read(digest), BlobNotFoundError);
      await store.commitUpload(id, digest);
      assert.deepEqual(await store.stat(digest), { size: bytes.length });
      assert.ok((await collect(await store.read(digest))).equals(bytes));
      assert.equal(await store.uploadSize(id), null, "the session ends at commit");
    });

    if (has.syncUpload) test("syncUpload changes nothing a client sees, and an unknown session is not found", async () => {
      assert.ok(store.syncUpload, "the driver has syncUpload");
      const bytes = randomBytes(5 * 1024 * 1024 + 17);
      const id = randomUUID();
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([bytes]), { offset: 0 });
      await store.syncUpload(id);
      assert.equal(await store.uploadSize(id), bytes.length);
      assert.equal(await store.stat(digestOf(bytes)), null, "still not a blob");
      await store.commitUpload(id, digestOf(bytes));
      assert.ok((await collect(await store.read(digestOf(bytes)))).equals(bytes));
      await assert.rejects(store.syncUpload(randomUUID()), BlobNotFoundError);
    });

    test("ranges are inclusive on both ends", async () => {
      const bytes = Buffer.from("0123456789");
      const digest = await storeBlob(store, bytes);
      assert.equal((await collect(await store.read(digest, { start: 2, end: 5 }))).toString(), "2345");
      assert.equal((await collect(await store.read(digest, { start: 9, end: 9 }))).toString(), "9");
    });

    test("chunks append in order and the offset is enforced", async () => {
      const id = randomUUID();
      await store.startUpload(id);
      assert.equal(await store.uploadSize(id), 0);
      assert.equal(await store.appendUpload(id, Readable.from([Buffer.from("abc")]), { offset: 0 }), 3);
      await assert.rejects(store.appendUpload(id, Readable.from([Buffer.from("x")]), { offset: 0 }), (e: unknown) => {
        assert.ok(e instanceof UploadOffsetError);
        assert.equal(e.currentSize, 3);
        return true;
      });
      assert.equal(await store.appendUpload(id, Readable.from([Buffer.from("def")]), { offset: 3 }), 6);
      assert.equal((await collect(await store.readUpload(id))).toString(), "abcdef");
    });

    test("an append feeds its hash exactly the bytes it stores, in order, and gives back what it lent", async () => {
      const id = randomUUID();
      await store.startUpload(id);
      // Several 1 MiB slabs and a sub-block tail, then an append that starts mid-block.
      const first = randomBytes(3 * 1024 * 1024 + 4096 + 3);
      const second = randomBytes(100_003);
      const hash = new RecordingHash();
      await store.appendUpload(id, chunkedReadable(first, [65536, 7, 300_000]), { offset: 0, hash });
      await store.appendUpload(id, chunkedReadable(second, [65536]), { offset: first.length, hash });
      const all = Buffer.concat([first, second]);
      assert.ok(hash.bytes().equals(all), "the hash saw the stored bytes");
      assert.equal(hash.unreleased, 0, "every shared buffer was released before the append resolved");
      assert.ok((await collect(await store.readUpload(id))).equals(all));
    });

    test("a multi-chunk append stores every byte in order", async () => {
      const id = randomUUID();
      await store.startUpload(id);
      const parts = [randomBytes(70_000), randomBytes(5), randomBytes(100_000)];
      await store.appendUpload(id, Readable.from(parts), { offset: 0 });
      assert.ok((await collect(await store.readUpload(id))).equals(Buffer.concat(parts)));
    });

    test("a failed append (short body, too large, broken stream) leaves the session as it was", async () => {
      const id = randomUUID();
      await store.startUpload(id);
      await store.appendUpload(id, Readable.from([Buffer.from("keep")]), { offset: 0 });
      await assert.rejects(store.appendUpload(id, Readable.from([Buffer.from("ab")]), { offset: 4, exactBytes: 5 }), UploadLengthError);
      assert.equal(await store.uploadSize(id), 4);
      await assert.rejects(store.appendUpload(id, Readable.from([Buffer.alloc(10)]), { offset: 4, maxBytes: 5 }), UploadTooLargeError);
      assert.equal(await store.uploadSize(id), 4);
      const broken = new Readable({
        read() {
          this.push(Buffer.from("partial"));
          this.destroy(new Error("client went away"));
        },
      });
      await assert.rejects(store.appendUpload(id, broken, { offset: 4 }));
      assert.equal(await store.uploadSize(id), 4);
      assert.equal((await collect(await store.readUpload(id))).toString(), "keep");
    });

    test("committing the same digest twice is harmless", async () => {
      const bytes = randomBytes(1000);
      const first = await storeBlob(store, bytes);
      const second = await storeBlob(store, bytes);
      assert.equal(first, second);
      assert.ok((await collect(await store.read(first))).equals(bytes));
    });

    test("abort removes the session; delete removes the blob", async () => {
      const id = randomUUID();
      await store.startUpload(id);
      await store.abortUpload(id);
      assert.equal(await store.uploadSize(id), null);
      const digest = await storeBlob(store, Buffer.from("bye"));
      await store.delete(digest);
      assert.equal(await store.stat(digest), null);
      await store.delete(digest); // deleting twice is fine
    });

    test("listUploads reports open sessions", async () => {
      const id = randomUUID();
      await store.startUpload(id);
      const listed = await store.listUploads();
      assert.ok(listed.some((u) => u.id === id && u.modifiedAt > 0));
    });
  });
}
