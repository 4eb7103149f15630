/**
 * Blob upload use cases (distribution-spec 1.1 "Pushing blobs"): sessions,
 * chunks, monolithic pushes, completion with digest verification, mounts,
 * cancellation and purging of stale sessions.
 *
 * Bytes are hashed while they stream to storage, so a blob is read once. The
 * running hash lives in this process; after a restart (or on another
 * replica) the session's bytes are re-read once at completion instead.
 *
 * A session has exactly one writer at a time across every process and
 * replica: each PATCH, PUT and DELETE holds the session's lease in the
 * metadata store (never process memory). Appends only ever add bytes at the
 * session's current end, so while the lease is held nobody else changes the
 * bytes a running hash has seen, and the bytes committed under a digest are
 * the bytes that were hashed.
 *
 * Commit is recoverable: the verified digest is recorded on the session
 * before the bytes move under it, so a crash between the move and the
 * metadata link is finished at start-up and by the client's retried PUT,
 * and garbage collection removes bytes that no record names.
 */
import { randomUUID } from "node:crypto";
import { PassThrough, type Readable } from "node:stream";
import { RegistryError } from "../oci/errors.js";
import { createDigester, type ParsedDigest } from "../oci/digest.js";
import { handoffOffer, offerHandoff } from "../storage/body-handoff.js";
import { inlineHashes, type HashFactory, type IncrementalHash } from "../hashing/incremental-hash.js";
import {
  BlobNotFoundError,
  UploadLengthError,
  UploadOffsetError,
  UploadTooLargeError,
} from "../storage/blob-store.js";
import type { Principal } from "../auth/access.js";
import type { RegistryDeps } from "./context.js";
import { LeaseBusyError, LeaseLocks, type HeldLease } from "./leases.js";
import { crashPoint } from "./crash-points.js";

export interface UploadStatus {
  id: string;
  /** Bytes received so far. */
  size: number;
}

export interface ChunkRange {
  start: number;
  end: number;
}

export interface CommittedBlob {
  digest: string;
  size: number;
}

interface RunningHash {
  hash: IncrementalHash;
  size: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * A session lease lives 30 s without renewal (a writer that crashed blocks its
 * session that long); a request waits up to 2 s for one held by another
 * request, which covers a client retrying before the server noticed its
 * previous connection close, then gets 416 with the session's size.
 */
const SESSION_LEASE = { ttlMs: 30_000, waitMs: 2_000 };

export class UploadService {
  private readonly hashes = new Map<string, RunningHash>();
  private readonly leases: LeaseLocks;

  /** Open sessions as last counted in the store, and when (counting on every POST would cost a query each). */
  private openSessions = { count: 0, countedAt: 0 };

  constructor(
    private readonly deps: RegistryDeps,
    private readonly hashing: HashFactory = inlineHashes,
    sessionLease: { ttlMs: number; waitMs: number } = SESSION_LEASE,
    private readonly maxOpenSessions = 50_000,
  ) {
    this.leases = new LeaseLocks(deps.meta, sessionLease);
  }

  /**
   * Sessions cost a record and a file each and live until purged, so their
   * number is capped registry-wide. The count is refreshed at most once a
   * second (other processes create sessions too) and counted up locally in
   * between, so the cap holds within one second's worth of POSTs.
   */
  private async admitSession(): Promise<void> {
    const now = Date.now();
    if (now - this.openSessions.countedAt >= 1_000) {
      this.openSessions = { count: await this.deps.meta.countUploads(), countedAt: now };
    }
    if (this.openSessions.count >= this.maxOpenSessions) {
      throw new RegistryError("TOOMANYREQUESTS", "too many upload sessions are open in this registry; finish or cancel some, or retry later", {
        status: 429,
        headers: { "Retry-After": "60" },
        detail: { limit: this.maxOpenSessions },
      });
    }
    this.openSessions.count++;
  }

  /**
   * Runs `work` as the session's only writer, or answers 416 when another
   * request holds it. Taking over from a writer that never released the
   * session (frozen or cut off past its lease) first moves the session to
   * fresh storage, so that writer can no longer touch its bytes or, once
   * committed, the blob; its running hash, if this process has it, is dropped.
   * Waiting stops when `body`'s client goes away.
   */
  private async asWriter<T>(id: string, work: (lease: HeldLease) => Promise<T>, body?: Readable | null): Promise<T> {
    try {
      return await this.leases.run(
        `upload:${id}`,
        async (lease) => {
          if (lease.tookOver) {
            this.dropHash(id);
            await this.deps.blobs.detachUpload?.(id).catch((error: unknown) => {
              if (!(error instanceof BlobNotFoundError)) throw error;
            });
          }
          return work(lease);
        },
        { signal: body ? clientGoneSignal(body) : undefined },
      );
    } catch (error) {
      if (error instanceof LeaseBusyError) {
        const size = (await this.deps.blobs.uploadSize(id)) ?? 0;
        throw rangeNotSatisfiable(
          id,
          size,
          error.acquiring
            ? "another request is writing to this upload session; retry when it has finished"
            : "this request lost its hold on the upload session; nothing was stored by it",
        );
      }
      throw error;
    }
  }

  async start(repository: string): Promise<UploadStatus> {
    await this.admitSession();
    const id = randomUUID();
    const now = Date.now();
    await this.deps.blobs.startUpload(id);
    await this.deps.meta.createUpload({ id, repository, createdAt: now, updatedAt: now });
    this.hashes.set(id, { hash: this.hashing.create(), size: 0 });
    return { id, size: 0 };
  }

  async status(repository: string, id: string): Promise<UploadStatus> {
    await this.requireSession(repository, id);
    const size = await this.deps.blobs.uploadSize(id);
    if (size === null) throw uploadUnknown(id);
    return { id, size };
  }

  /** Appends a chunk (PATCH). `range` is the Content-Range the client sent, if any. */
  async append(repository: string, id: string, body: Readable, range: ChunkRange | null, contentLength: number | null): Promise<UploadStatus> {
    await this.requireSession(repository, id);
    return this.asWriter(
      id,
      async (lease) => {
        const size = await this.appendLocked(id, body, range, contentLength, lease.signal);
        await this.deps.meta.touchUpload(id, Date.now());
        return { id, size };
      },
      body,
    );
  }

  /** Completes a session (PUT ?digest=), with an optional last chunk. */
  async finish(
    repository: string,
    id: string,
    expected: ParsedDigest,
    body: Readable | null,
    range: ChunkRange | null,
    contentLength: number | null,
  ): Promise<CommittedBlob> {
    await this.requireSession(repository, id);
    return this.asWriter(id, async (lease) => {
      // Re-read under the lease: a commit may have been interrupted since the check above.
      const record = await this.deps.meta.getUpload(id);
      if (!record) throw uploadUnknown(id);
      if (record.committingDigest) {
        const resumed = await this.resumeCommit(repository, id, record.committingDigest, expected);
        if (resumed) return resumed;
      }
      if (body && (range === null || range.start === 0) && this.canStage(expected) && (await this.deps.blobs.uploadSize(id)) === 0) {
        // The whole blob in this request, its digest known: straight to its final place.
        this.dropHash(id);
        return this.commitStaged(repository, expected, body, chunkLength(id, range, contentLength), { id, lease });
      }
      if (body) await this.appendLocked(id, body, range, contentLength, lease.signal);
      return this.commit(repository, id, expected, lease);
    }, body);
  }

  /** Monolithic push in one request (POST ?digest=). The session never becomes visible. */
  async putMonolithic(repository: string, expected: ParsedDigest, body: Readable, contentLength: number | null): Promise<CommittedBlob> {
    if (this.canStage(expected)) return this.commitStaged(repository, expected, body, contentLength ?? undefined, null);
    const id = randomUUID();
    await this.deps.blobs.startUpload(id);
    this.hashes.set(id, { hash: this.hashing.create(), size: 0 });
    try {
      await this.appendLocked(id, body, null, contentLength, undefined);
      return await this.commit(repository, id, expected, null);
    } catch (error) {
      this.dropHash(id);
      await this.deps.blobs.abortUpload(id).catch(() => undefined);
      throw error;
    }
  }

  async cancel(repository: string, id: string): Promise<void> {
    await this.requireSession(repository, id);
    await this.asWriter(id, async () => {
      this.dropHash(id);
      const record = await this.deps.meta.getUpload(id);
      // A session interrupted mid-commit already became a blob: cancelling it only forgets the session.
      if (!record?.committingDigest) await this.deps.blobs.abortUpload(id);
      await this.deps.meta.deleteUpload(id);
    });
  }

  /**
   * Cross-repository mount. With `from`, the blob must be linked there and the
   * caller must be allowed to pull it; without, any repository the caller may
   * pull from will do (distribution-spec 1.1 "Mounting a blob from another repository").
   * Returns the mounted blob, or null when the client should upload instead.
   */
  async mount(repository: string, digest: string, from: string | null, principal: Principal): Promise<CommittedBlob | null> {
    const { meta, access } = this.deps;
    const already = await meta.linkedBlob(repository, digest);
    if (already) return { digest, size: already.size };
    const candidates = from === null ? await meta.repositoriesWithBlob(digest, 50) : [from];
    for (const source of candidates) {
      if (source === repository || !access.can(principal, source, "pull")) continue;
      if (!(await meta.linkedBlob(source, digest))) continue;
      // Checked again under the digest's lock, bytes included: garbage
      // collection in another process may have unlinked and deleted the blob
      // since, and linking it now would acknowledge a blob without bytes.
      const mounted = await this.deps.digestLocks.run(digest, async () => {
        const linked = await meta.linkedBlob(source, digest);
        if (!linked || (await this.deps.blobs.stat(digest)) === null) return null;
        await meta.linkBlob(repository, digest, linked.size);
        return { digest, size: linked.size };
      });
      if (mounted) return mounted;
    }
    return null;
  }

  /** Deletes sessions idle for longer than `maxIdleMs`, and session data nothing tracks. */
  async purgeStale(maxIdleMs: number): Promise<number> {
    const cutoff = Date.now() - maxIdleMs;
    let purged = 0;
    await this.recoverCommits();
    for (const upload of await this.deps.meta.staleUploads(cutoff)) {
      // A session another request is writing to right now is not stale.
      const done = await this.leases.tryRun(`upload:${upload.id}`, async () => {
        this.dropHash(upload.id);
        if (!upload.committingDigest) await this.deps.blobs.abortUpload(upload.id);
        await this.deps.meta.deleteUpload(upload.id);
        return true;
      });
      if (done) purged++;
    }
    for (const orphan of await this.deps.blobs.listUploads()) {
      if (orphan.modifiedAt >= cutoff || this.hashes.has(orphan.id)) continue;
      if (await this.deps.meta.getUpload(orphan.id)) continue;
      await this.deps.blobs.abortUpload(orphan.id);
      purged++;
    }
    // Blobs a crashed process was streaming straight to their digest's place (stageBlob).
    purged += (await this.deps.blobs.purgeStaged?.(cutoff)) ?? 0;
    return purged;
  }

  private async requireSession(repository: string, id: string): Promise<void> {
    if (!UUID.test(id)) throw uploadUnknown(id);
    const record = await this.deps.meta.getUpload(id);
    if (!record || record.repository !== repository) throw uploadUnknown(id);
  }

  /**
   * Finishes commits that a crash interrupted: bytes already moved under their
   * digest are linked into the session's repository (the session stays, so
   * the client's retried PUT still gets 201); a session whose bytes had not
   * moved yet goes back to being an ordinary open session.
   */
  async recoverCommits(): Promise<number> {
    let recovered = 0;
    for (const upload of await this.deps.meta.committingUploads()) {
      const digest = upload.committingDigest!;
      const done = await this.leases.tryRun(`upload:${upload.id}`, async () => {
        if ((await this.deps.blobs.uploadSize(upload.id)) !== null) return false;
        const stat = await this.deps.blobs.stat(digest);
        if (stat === null) return false;
        await this.deps.digestLocks.run(digest, () => this.deps.meta.linkBlob(upload.repository, digest, stat.size));
        this.deps.logger.warn({ uploadId: upload.id, digest, repository: upload.repository }, "finished a blob commit interrupted by a crash");
        return true;
      });
      if (done) recovered++;
    }
    return recovered;
  }

  /**
   * A retried PUT on a session whose commit was interrupted. Returns the blob
   * when the commit can be finished, null when the session's bytes are still
   * in the session (an ordinary commit follows).
   */
  private async resumeCommit(repository: string, id: string, committing: string, expected: ParsedDigest): Promise<CommittedBlob | null> {
    const { blobs, meta, digestLocks } = this.deps;
    if ((await blobs.uploadSize(id)) !== null) return null;
    const stat = await blobs.stat(committing);
    if (stat === null) {
      // Neither session bytes nor a blob: nothing to finish.
      await meta.deleteUpload(id);
      throw uploadUnknown(id);
    }
    if (committing !== expected.digest) {
      await meta.deleteUpload(id);
      throw new RegistryError("DIGEST_INVALID", `the uploaded content has digest ${committing}, not ${expected.digest}`, {
        detail: { expected: expected.digest, actual: committing, size: stat.size },
      });
    }
    await digestLocks.run(committing, () => meta.completeUpload(id, repository, committing, stat.size));
    return { digest: committing, size: stat.size };
  }

  private async appendLocked(
    id: string,
    body: Readable,
    range: ChunkRange | null,
    contentLength: number | null,
    lost: AbortSignal | undefined,
  ): Promise<number> {
    const { blobs } = this.deps;
    const offset = await blobs.uploadSize(id);
    if (offset === null) throw uploadUnknown(id);
    if (range && range.start !== offset) throw rangeNotSatisfiable(id, offset, `chunk starts at ${range.start} but the upload has ${offset} bytes`);
    const expectedBytes = chunkLength(id, range, contentLength);
    const running = this.hashes.get(id);
    const hashable = running !== undefined && running.size === offset;
    if (!hashable) this.dropHash(id);
    try {
      const size = await blobs.appendUpload(id, shieldBody(body, lost), {
        offset,
        exactBytes: expectedBytes,
        hash: hashable ? running.hash : undefined,
      });
      if (hashable) {
        running.size = size;
        running.hash.pause();
      }
      return size;
    } catch (error) {
      // The running hash may have seen bytes that were rolled back: re-hash at completion.
      this.dropHash(id);
      throw writeFailure(id, error);
    }
  }

  /** Whether a blob announced with this digest can go straight to its final place (stageBlob). */
  private canStage(expected: ParsedDigest): boolean {
    // The running hashes are SHA-256; other algorithms take the session path (re-read at commit).
    return this.deps.blobs.stageBlob !== undefined && expected.algorithm === "sha256";
  }

  /**
   * A whole blob whose digest came before its bytes (POST ?digest=, or PUT ?digest= with
   * the body on an empty session): the store writes it where it will live, unreadable,
   * while it is hashed; it is published only once the digest matched, under the digest's
   * lock, and only if the blob is not stored yet. Saves the session's staging and the
   * move at commit (a server-side copy on S3). A session, when there is one, is left as
   * it was by any failure (its bytes never went into it), and ends as a commit ends it.
   */
  private async commitStaged(
    repository: string,
    expected: ParsedDigest,
    body: Readable,
    exactBytes: number | undefined,
    session: { id: string; lease: HeldLease } | null,
  ): Promise<CommittedBlob> {
    const { blobs, meta, digestLocks } = this.deps;
    // Hashed on this thread: the store takes the bytes far slower than SHA-256 runs here
    // (~1 GB/s), and the worker's shared slabs cost a 100 MiB push on S3 more CPU than they
    // saved (postMessage, copies, ~6 full garbage collections in --trace-gc; docs/storage.md).
    const hash = inlineHashes.create();
    const blob = await blobs.stageBlob!(expected.digest, shieldBody(body, session?.lease.signal), { exactBytes, hash }).catch((error: unknown) => {
      hash.discard();
      throw writeFailure(session?.id ?? "", error);
    });
    try {
      const actual = await hash.digest();
      if (actual !== expected.digest) {
        if (session) {
          await blobs.abortUpload(session.id);
          await meta.deleteUpload(session.id);
        }
        throw new RegistryError("DIGEST_INVALID", `the uploaded content has digest ${actual}, not ${expected.digest}`, {
          detail: { expected: expected.digest, actual, size: blob.size },
        });
      }
      await digestLocks.run(expected.digest, async () => {
        if (session && !(await session.lease.confirm())) throw new LeaseBusyError(`upload:${session.id}`);
        if (session) await meta.markUploadCommitting(session.id, expected.digest);
        const known = await meta.blobSize(expected.digest);
        if (known === null || (await blobs.stat(expected.digest)) === null) await blob.publish(); // else identical bytes already stored
        // The session's storage goes before the crash point, as in commit: a crash from here on
        // finds the session gone and the blob there, and links it (recoverCommits).
        if (session) await blobs.abortUpload(session.id);
        crashPoint("commit-after-move");
        if (session) await meta.completeUpload(session.id, repository, expected.digest, blob.size);
        else await meta.linkBlob(repository, expected.digest, blob.size);
      });
      return { digest: expected.digest, size: blob.size };
    } finally {
      hash.discard();
      await blob.discard();
    }
  }

  /**
   * Verifies and commits a session. `lease` is the session's (null for a
   * monolithic push, whose session id nobody else knows): it is confirmed
   * before the bytes move, so a writer that lost it commits nothing.
   */
  private async commit(repository: string, id: string, expected: ParsedDigest, lease: HeldLease | null): Promise<CommittedBlob> {
    const { blobs, meta, digestLocks } = this.deps;
    const size = await blobs.uploadSize(id);
    if (size === null) throw uploadUnknown(id);
    const actual = await this.digestOfSession(id, expected, size);
    if (actual !== expected.digest) {
      await blobs.abortUpload(id);
      if (lease) await meta.deleteUpload(id);
      throw new RegistryError("DIGEST_INVALID", `the uploaded content has digest ${actual}, not ${expected.digest}`, {
        detail: { expected: expected.digest, actual, size },
      });
    }
    // The bytes go to disk before the first metadata write: SQLite syncs its WAL on the event loop,
    // and a sync there with a push's bytes still unflushed paid their flush (0.5 s with 8 concurrent
    // 100 MiB pushes, docs/benchmarks-history.md "Speed round 10"); commitUpload's own sync then finds little left.
    await blobs.syncUpload?.(id);
    await digestLocks.run(expected.digest, async () => {
      if (lease && !(await lease.confirm())) throw new LeaseBusyError(`upload:${id}`);
      if (lease) await meta.markUploadCommitting(id, expected.digest);
      const known = await meta.blobSize(expected.digest);
      if (known !== null && (await blobs.stat(expected.digest)) !== null) {
        await blobs.abortUpload(id); // identical bytes already stored
      } else {
        await blobs.commitUpload(id, expected.digest);
      }
      crashPoint("commit-after-move");
      if (lease) await meta.completeUpload(id, repository, expected.digest, size);
      else await meta.linkBlob(repository, expected.digest, size);
    });
    return { digest: expected.digest, size };
  }

  private dropHash(id: string): void {
    this.hashes.get(id)?.hash.discard();
    this.hashes.delete(id);
  }

  private async digestOfSession(id: string, expected: ParsedDigest, size: number): Promise<string> {
    const running = this.hashes.get(id);
    this.hashes.delete(id);
    if (running && running.size === size && expected.algorithm === "sha256") {
      try {
        return await running.hash.digest();
      } catch (error) {
        this.deps.logger.warn({ err: error, uploadId: id }, "running hash failed; re-reading the upload to verify it");
      }
    } else {
      running?.hash.discard();
    }
    const hash = createDigester(expected.algorithm);
    for await (const chunk of await this.deps.blobs.readUpload(id)) hash.update(chunk as Buffer);
    return `${expected.algorithm}:${hash.digest("hex")}`;
  }
}

/**
 * What storage reads instead of the request itself: the same bytes (storage
 * feeds them to the running hash, AppendOptions.hash). Storage destroys its source
 * when a write fails; on the request that would reset the connection before
 * the client could read our error, so the request is only unpiped, and the
 * HTTP server discards the rest of its body after the error response.
 */
function shieldBody(body: Readable, lost: AbortSignal | undefined): Readable {
  const tap = new PassThrough();
  // Storage attaches its listeners only after opening the session file; an
  // error before that (client gone, lease lost) must not be an uncaught one.
  // The pipeline still sees it: the tap is destroyed with it.
  tap.on("error", () => undefined);
  body.once("error", (error) => tap.destroy(error));
  // The client went away mid-body, or a writer lost the session's lease: stop writing at once.
  const stops = [clientGoneSignal(body), ...(lost ? [lost] : [])];
  const stop = (signal: AbortSignal) => () => tap.destroy(signal.reason instanceof Error ? signal.reason : new Error("the upload was stopped"));
  const listeners = stops.map((signal) => {
    const listener = stop(signal);
    if (signal.aborted) queueMicrotask(listener);
    else signal.addEventListener("abort", listener, { once: true });
    return { signal, listener };
  });
  tap.once("close", () => {
    body.unpipe(tap);
    for (const { signal, listener } of listeners) signal.removeEventListener("abort", listener);
  });
  body.pipe(tap);
  // A driver may take the rest of the body from the connection itself; it stops that when the tap is destroyed.
  return offerHandoff(tap, handoffOffer(body));
}

/** Aborts when the request body's client goes away before the body ended (also when it already has). */
function clientGoneSignal(body: Readable): AbortSignal {
  const controller = new AbortController();
  const gone = () => controller.abort(Object.assign(new Error("the client closed the connection"), { code: "ECONNRESET" }));
  if (body.destroyed && !body.readableEnded) gone();
  else body.once("close", () => {
    if (!body.readableEnded) gone();
  });
  return controller.signal;
}

/** The error a client gets for a failed write of its bytes (`id`: the session's). */
function writeFailure(id: string, error: unknown): unknown {
  if (error instanceof UploadOffsetError) return rangeNotSatisfiable(id, error.currentSize, "the upload moved on concurrently");
  if (error instanceof UploadLengthError) {
    return new RegistryError("BLOB_UPLOAD_INVALID", `the request body was ${error.received} bytes, expected ${error.expected}`, {
      detail: { expected: error.expected, received: error.received },
    });
  }
  if (error instanceof UploadTooLargeError) return new RegistryError("SIZE_INVALID", error.message, { status: 413 });
  if (error instanceof BlobNotFoundError) return uploadUnknown(id);
  if (error instanceof LeaseBusyError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    // Our problem, not the client's: say so plainly (the dispatcher logs it as an error).
    return new RegistryError("UNAVAILABLE", "the registry is out of storage space; this upload was not stored, retry later", {
      status: 507,
      detail: { reason: code === "ENOSPC" ? "no space left on the device" : "disk quota exceeded" },
    });
  }
  return error;
}

/**
 * How many bytes the request's body must have: Content-Range's length (which must agree
 * with Content-Length when both are sent), else Content-Length, else unknown.
 */
function chunkLength(id: string, range: ChunkRange | null, contentLength: number | null): number | undefined {
  if (!range) return contentLength ?? undefined;
  const length = range.end - range.start + 1;
  if (contentLength !== null && contentLength !== length) {
    throw new RegistryError("BLOB_UPLOAD_INVALID", `Content-Range covers ${length} bytes but Content-Length is ${contentLength}`, {
      detail: { contentRange: `${range.start}-${range.end}`, contentLength },
    });
  }
  return length;
}

export function uploadUnknown(id: string): RegistryError {
  return new RegistryError("BLOB_UPLOAD_UNKNOWN", "upload session not found: it was completed, cancelled or expired", {
    detail: { uploadId: id.slice(0, 64) },
  });
}

function rangeNotSatisfiable(id: string, size: number, message: string): RegistryError {
  return new RegistryError("BLOB_UPLOAD_INVALID", message, {
    status: 416,
    detail: { uploadId: id, size },
    headers: { Range: `0-${Math.max(size - 1, 0)}` },
  });
}
