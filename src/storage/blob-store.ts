/**
 * The blob store: content-addressed bytes plus the upload sessions that
 * produce them. Drivers (filesystem today, S3 later) implement this and pass
 * the shared suite in test/storage/blob-store-suite.ts.
 *
 * Contract every driver keeps:
 * - A blob is readable under its digest only after commitUpload, which the
 *   caller invokes once the digest has been verified; no partial blob is ever
 *   readable.
 * - Committing a digest that already exists is harmless (same bytes).
 * - Upload data is private to its session until committed.
 */
import type { Readable, Writable } from "node:stream";
import type { IncrementalHash } from "../hashing/incremental-hash.js";

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export interface BlobStat {
  size: number;
}

export interface AppendOptions {
  /** Where the bytes must land; the driver rejects with UploadOffsetError if the session has a different size. */
  offset: number;
  /** Abort with UploadTooLargeError past this many bytes in this append. */
  maxBytes?: number;
  /** Abort with UploadLengthError unless exactly this many bytes arrive (Content-Range / Content-Length). */
  exactBytes?: number;
  /**
   * Fed every byte of this append, in order, before it resolves (the bytes of a
   * failed append may have been fed in part). The driver feeds it from its own
   * copy of the bytes where it has one in shared memory (updateShared).
   */
  hash?: IncrementalHash;
}

export class UploadOffsetError extends Error {
  constructor(readonly currentSize: number) {
    super(`upload is at offset ${currentSize}`);
  }
}

export class UploadTooLargeError extends Error {}

export class UploadLengthError extends Error {
  constructor(readonly expected: number, readonly received: number) {
    super(`expected ${expected} bytes, received ${received}`);
  }
}

export class BlobNotFoundError extends Error {}

/** A blob held open as a local file (see BlobReader.openFile). */
export interface BlobFile {
  fd: number;
  size: number;
  /** Closes the descriptor; safe to call more than once. */
  close(): Promise<void>;
}

/** A blob whose store already answered, to be written to a client (BlobReader.openToSend). */
export interface DirectBody {
  /** Writes every byte to `out`; rejects when the store or `out` fails before the end (ClientGoneError for `out`). */
  sendTo(out: Writable): Promise<void>;
  /** Gives up without sending (closes the store's connection). */
  abort(): void;
}

/** The client's side of a direct transfer closed or failed. */
export class ClientGoneError extends Error {}

export interface BlobReader {
  stat(digest: string): Promise<BlobStat | null>;
  /** A stream of the blob (or of the inclusive range). Rejects with BlobNotFoundError. */
  read(digest: string, range?: ByteRange): Promise<Readable>;
  /**
   * A URL a client may fetch the blob from directly, or null when the driver
   * serves bytes itself (filesystem). Lets S3/CDN drivers redirect.
   */
  redirectUrl?(digest: string, options: { method: "GET" | "HEAD"; expiresInMs: number }): Promise<string | null>;
  /**
   * Optional, for drivers whose blobs are local files: the blob open for
   * reading, so the HTTP layer can send it with sendfile(2). The caller
   * closes it. Rejects with BlobNotFoundError. Drivers without local files
   * (S3) leave it out and are streamed through `read`.
   */
  openFile?(digest: string): Promise<BlobFile>;
  /**
   * Optional, for drivers that can hand bytes to a client's socket through
   * reused buffers (S3 on plain HTTP: s3-direct-read.ts): the blob (or range,
   * `length` bytes) opened, its store having answered; null when the driver
   * only streams through `read`. The caller sends or aborts it. Rejects with
   * BlobNotFoundError.
   */
  openToSend?(digest: string, range: ByteRange | undefined, length: number): Promise<DirectBody | null>;
}

/** A blob written to where it will live but not readable yet (BlobWriter.stageBlob). */
export interface StagedBlob {
  /** Bytes received. */
  size: number;
  /** Makes the bytes readable under the digest: call once the digest is verified, under its lock. */
  publish(): Promise<void>;
  /** Throws the bytes away; does nothing after publish, and may be called more than once. */
  discard(): Promise<void>;
}

export interface BlobWriter {
  startUpload(uploadId: string): Promise<void>;
  /** Current size of the session, or null if it does not exist. */
  uploadSize(uploadId: string): Promise<number | null>;
  /** Streams `source` onto the end of the session; returns the new size. */
  appendUpload(uploadId: string, source: Readable, options: AppendOptions): Promise<number>;
  /** The session's bytes so far (to re-hash after a restart). */
  readUpload(uploadId: string): Promise<Readable>;
  /** Makes the session's bytes the blob `digest` (already verified by the caller) and ends the session. */
  commitUpload(uploadId: string, digest: string): Promise<void>;
  /**
   * Optional: makes the session's bytes durable now, ahead of commitUpload
   * (which must still make sure of it). For stores where that is a flush
   * whose cost grows with the bytes written (a local disk's fdatasync): done
   * first, off the event loop, it leaves the metadata commit's own sync, which
   * may run on the event loop (SQLite), almost nothing to flush.
   */
  syncUpload?(uploadId: string): Promise<void>;
  abortUpload(uploadId: string): Promise<void>;
  /**
   * Optional: gives the session fresh storage holding the same bytes, so that
   * a previous writer which lost the session (frozen past its lease) and may
   * still hold the old storage open can no longer change what the session
   * or, after commit, the blob holds. Drivers whose writers cannot outlive
   * their request (no open files) leave it out.
   */
  detachUpload?(uploadId: string): Promise<void>;
  /** Every session the store holds, with its last modification (to purge orphans). */
  listUploads(): Promise<Array<{ id: string; modifiedAt: number }>>;
  /**
   * Optional, for stores where moving a session's bytes under their digest costs
   * another trip through the store (S3: a server-side copy): the whole blob
   * `digest`, announced before its bytes, streamed straight to where it will
   * live, unreadable until `publish`. Rejects like appendUpload (length,
   * size, store) and leaves nothing behind when it does. The caller has the
   * bytes hashed on their way (options.hash) and publishes or discards the result.
   */
  stageBlob?(digest: string, source: Readable, options: Omit<AppendOptions, "offset">): Promise<StagedBlob>;
  /** Optional, with stageBlob: throws away staged blobs started before `olderThan` that no request here is writing (a crash's leftovers). */
  purgeStaged?(olderThan: number): Promise<number>;
}

export interface BlobDeleter {
  delete(digest: string): Promise<void>;
  /**
   * Every committed blob with its last modification, in no particular order:
   * garbage collection compares it with the metadata to remove bytes that a
   * crash left behind between a commit's move and its metadata link.
   */
  listBlobs(): AsyncIterable<{ digest: string; modifiedAt: number }>;
}

export interface BlobStore extends BlobReader, BlobWriter, BlobDeleter {
  /** Releases resources; the store is unusable afterwards. */
  close(): Promise<void>;
}
