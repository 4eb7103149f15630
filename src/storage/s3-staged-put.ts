/**
 * A blob whose digest the client announced before sending it (POST ?digest=,
 * or PUT ?digest= with the whole body on an empty session) is written
 * straight to its final key, `blobs/sha256/<hex>`, instead of into a session
 * that a server-side copy then moves: a multipart upload at that key, whose
 * parts upload while the next ones fill from the socket, and which is only
 * completed once the caller has verified the digest. An incomplete multipart
 * upload is never readable, so nothing partial appears under the digest; a
 * failure or a wrong digest aborts it. A blob smaller than one part never
 * starts a multipart upload: it stays in its (pooled) part buffer until the
 * digest is verified and is then one PutObject.
 *
 * Compared with the session path this saves, per 100 MiB push, the piece
 * object for the tail (written, read back and uploaded again as the last
 * part), the state versions, CompleteMultipartUpload into the staging key,
 * CopyObject and five deletes: ~250 ms of serial S3 requests after the body
 * ended, in a timeline of one push through `ferry serve` (docs/storage.md).
 *
 * Concurrent pushes of one digest each have their own multipart upload; the
 * caller publishes under the digest's lock and only when the blob is not
 * stored yet, and the bytes are identical anyway. A crashed process leaves an
 * incomplete upload at the key, which `abortStale` (the upload purge) aborts.
 */
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { UploadLengthError, UploadTooLargeError, type AppendOptions, type StagedBlob } from "./blob-store.js";
import { isMissing, storeUnavailable } from "./s3-client.js";
import type { PartBufferPool } from "./s3-piece-cache.js";

export interface StagedPutTarget {
  client: S3Client;
  bucket: string;
  key: string;
  partSize: number;
  pool: PartBufferPool;
  /** Parts uploading at once while the next one fills (extra buffers come from the pool's process-wide budget). */
  partsInFlight: number;
  /** Multipart uploads started here and not finished yet, so the purge leaves them alone. */
  active: Set<string>;
}

interface Part {
  n: number;
  etag: string;
}

interface Slot {
  buffer: Buffer;
  /** Counted against the pool's process-wide extra budget. */
  extra: boolean;
  /** Not from the pool (a small blob's own buffer): nothing to give back. */
  own?: boolean;
}

/** S3 allows 10,000 parts per multipart upload. */
const MAX_PARTS = 10_000;

export async function stagePut(
  target: StagedPutTarget,
  source: Readable,
  options: Omit<AppendOptions, "offset">,
): Promise<StagedBlob> {
  const { client, bucket, key, partSize, pool } = target;
  const { exactBytes, maxBytes, hash } = options;
  let upload: Promise<string> | null = null;
  const createUpload = (): Promise<string> => {
    upload ??= attempt("starting a multipart upload", () => client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }))).then((out) => {
      target.active.add(out.UploadId!);
      return out.UploadId!;
    });
    return upload;
  };
  // A body announced as larger than a part needs a multipart upload: start it while the first part fills.
  if (exactBytes !== undefined && exactBytes > partSize) createUpload().catch(() => undefined);

  const parts: Part[] = [];
  let partCount = 0;
  const inflight: Array<{ done: Promise<unknown>; slot: Slot }> = [];
  let failure: unknown = null;
  let slot: Slot | null = null;
  let baseOut = false;
  let filled = 0;
  let written = 0;

  const release = (s: Slot) => {
    if (s.own) return;
    if (s.extra) pool.giveExtra(s.buffer);
    else {
      pool.give(s.buffer);
      baseOut = false;
    }
  };
  const settleOldest = async () => {
    const entry = inflight.shift()!;
    await entry.done;
    release(entry.slot);
  };
  // A body announced smaller than a part is one PutObject from a buffer of its own size: a
  // pooled 16 MiB buffer per small push would keep part-sized memory resident for blobs of
  // kilobytes (16 KiB pushes in the bench's mix), and the pool's buffers stay in use.
  const small = exactBytes !== undefined && exactBytes < partSize;
  const nextSlot = async (): Promise<Slot> => {
    if (small) return { buffer: Buffer.allocUnsafe(exactBytes), extra: false, own: true };
    for (;;) {
      if (!baseOut) {
        baseOut = true;
        return { buffer: pool.take(), extra: false };
      }
      if (inflight.length < target.partsInFlight) {
        const extra = pool.tryTakeExtra();
        if (extra) return { buffer: extra, extra: true };
      }
      await settleOldest();
      if (failure !== null) throw failure;
    }
  };
  const sendPart = (length: number) => {
    const n = ++partCount;
    if (n > MAX_PARTS) throw new UploadTooLargeError(`more than ${MAX_PARTS} parts of ${partSize} bytes`);
    const body = slot!.buffer.subarray(0, length);
    const done = createUpload()
      .then((uploadId) =>
        attempt("storing upload data", () =>
          client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: body, ContentLength: length })),
        ),
      )
      .then(
        (out) => void (parts[n - 1] = { n, etag: out.ETag ?? "" }),
        (error: unknown) => void (failure ??= error),
      );
    inflight.push({ done, slot: slot! });
    slot = null;
    filled = 0;
  };
  const abort = async () => {
    if (upload === null) return;
    const uploadId = await upload.catch(() => null);
    if (uploadId === null) return;
    target.active.delete(uploadId);
    // If this fails too, the upload purge finds the upload later.
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
  };

  try {
    for await (const data of source) {
      if (failure !== null) throw failure;
      const chunk = Buffer.isBuffer(data) ? data : Buffer.from(data as Uint8Array);
      written += chunk.length;
      if (maxBytes !== undefined && written > maxBytes) throw new UploadTooLargeError(`more than ${maxBytes} bytes`);
      if (exactBytes !== undefined && written > exactBytes) throw new UploadLengthError(exactBytes, written);
      const hashing = hash?.update(chunk);
      if (hashing) await hashing;
      for (let at = 0; at < chunk.length; ) {
        slot ??= await nextSlot();
        const n = Math.min(chunk.length - at, partSize - filled);
        chunk.copy(slot.buffer, filled, at, at + n);
        filled += n;
        at += n;
        if (filled === partSize) sendPart(filled);
      }
    }
    if (exactBytes !== undefined && written !== exactBytes) throw new UploadLengthError(exactBytes, written);
    if (upload === null) {
      // Smaller than a part: kept in memory until the digest is verified, then one PutObject.
      const held = slot;
      slot = null;
      return smallBlob(target, held?.buffer.subarray(0, filled) ?? Buffer.alloc(0), () => {
        if (held) release(held);
      });
    }
    if (filled > 0) sendPart(filled); // the last part may be smaller than S3's minimum
    while (inflight.length > 0) await settleOldest();
    if (failure !== null) throw failure;
    return largeBlob(target, await upload, parts, written);
  } catch (error) {
    // No part of this upload may still be in flight when it is aborted (or its buffer reused).
    while (inflight.length > 0) await settleOldest();
    await abort();
    throw error;
  } finally {
    if (slot !== null) release(slot);
  }
}

function smallBlob(target: StagedPutTarget, body: Buffer, release: () => void): StagedBlob {
  const size = body.length;
  let open = true;
  const end = () => {
    if (open) release();
    open = false;
  };
  return {
    size,
    async publish() {
      if (!open) throw new Error("staged blob already ended");
      try {
        await attempt("storing a blob", () =>
          target.client.send(new PutObjectCommand({ Bucket: target.bucket, Key: target.key, Body: body, ContentLength: size })),
        );
      } finally {
        end();
      }
    },
    async discard() {
      end();
    },
  };
}

function largeBlob(target: StagedPutTarget, uploadId: string, parts: Part[], size: number): StagedBlob {
  const { client, bucket, key } = target;
  let open = true;
  return {
    size,
    async publish() {
      if (!open) throw new Error("staged blob already ended");
      open = false;
      target.active.delete(uploadId);
      try {
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
          }),
        );
      } catch (error) {
        // The SDK retried a Complete whose answer was lost, and the upload id is gone (RGW answers
        // 500, AWS 404): an object of the right size at the key is that completion.
        const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch((e: unknown) => {
          if (isMissing(e)) return null;
          throw storeUnavailable(e, "storing a blob");
        });
        if (head?.ContentLength !== size) {
          await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
          throw storeUnavailable(error, "storing a blob");
        }
      }
    },
    async discard() {
      if (!open) return;
      open = false;
      target.active.delete(uploadId);
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
    },
  };
}

async function attempt<T>(action: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw storeUnavailable(error, action);
  }
}
