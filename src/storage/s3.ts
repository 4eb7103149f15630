/**
 * S3 blob store (AWS S3, Ceph RGW, MinIO, R2, …). Key layout and the session
 * state object: s3-layout.ts.
 *
 * Uploads: the bytes of an append are collected in memory until they make a
 * whole part (partSize; at least 5 MiB, S3's minimum for every part but the
 * last), which goes to the session's multipart upload as soon as it is full
 * while the next part fills (up to PARTS_IN_FLIGHT per append, within a
 * process-wide budget of extra buffers), and nothing is written to local disk. What an append leaves over (less than a part) is
 * stored as a small "piece" object, and the next append, on any replica,
 * starts its first part with those pieces. The state object, written last,
 * is the commit point of an append: a failed append leaves it, and so the
 * session, as it was (a part it uploaded is overwritten by the retry; pieces
 * it wrote are never referenced).
 *
 * Commit: a session smaller than a part is one PutObject of its pieces;
 * otherwise the multipart upload is completed into the session's staging
 * object, which a server-side copy (ranged UploadPartCopy above 5 GiB) makes
 * the blob; then the session's objects are deleted. A blob key only ever
 * appears whole, and only after the caller verified its digest.
 *
 * A blob whose digest is known before its bytes (monolithic pushes) skips the
 * session altogether: stageBlob, s3-staged-put.ts.
 */
import { randomBytes } from "node:crypto";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import {
  BlobNotFoundError,
  UploadLengthError,
  UploadOffsetError,
  UploadTooLargeError,
  type AppendOptions,
  type BlobStat,
  type BlobStore,
  type ByteRange,
  type DirectBody,
  type StagedBlob,
} from "./blob-store.js";
import { stagePut } from "./s3-staged-put.js";
import { DirectGetError, openDirectGet } from "./s3-direct-read.js";
import { createS3Client, S3_IDLE_TIMEOUT_MS, isMissing, isPreconditionFailed, storeUnavailable, type S3ConnectionOptions } from "./s3-client.js";
import {
  chainPart,
  emptySession,
  encodeSessionState,
  MAX_PIECES,
  parseSessionState,
  S3Layout,
  STATE_METADATA_KEY,
  WRITER_METADATA_KEY,
  type Piece,
  type SessionState,
  type UploadedPart,
} from "./s3-layout.js";
import { KnownParts, PartBufferPool, PieceCache, RecentStates } from "./s3-piece-cache.js";

export interface S3StoreOptions extends S3ConnectionOptions {
  /** Key prefix inside the bucket ("" for the root). */
  prefix: string;
  /** Multipart part size for uploads, 5 MiB to 5 GiB. */
  partSize: number;
  /** Answer blob GETs with 307 to a presigned URL valid this long; off when absent. */
  redirectExpiresMs?: number;
  /** Largest single server-side copy (S3 allows 5 GiB); larger blobs are copied in ranges of this size. */
  maxCopyBytes?: number;
  /** Blob GETs through reused buffers on a plain-HTTP endpoint (s3-direct-read.ts); default on. */
  directReads?: boolean;
}

export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024;
/** Ranged server-side copies of one large blob in flight at once. */
const COPY_CONCURRENCY = 4;
/** Parts of one append uploading at once while the next one fills (see PartBufferPool for the process-wide cap). */
const PARTS_IN_FLIGHT = 2;
/** A direct blob read whose store sends nothing for this long fails (as SDK requests do). */
const DIRECT_READ_IDLE_MS = S3_IDLE_TIMEOUT_MS;

export class S3BlobStore implements BlobStore {
  readonly client: S3Client;
  readonly layout: S3Layout;
  private readonly bucket: string;
  private readonly partSize: number;
  private readonly maxCopyBytes: number;
  private readonly directReads: boolean;
  /** Pieces this process wrote lately, so a monolithic push does not read its own bytes back at commit. */
  private readonly pieceCache = new PieceCache();
  /** ETags of parts this process uploaded, by multipart upload. */
  private readonly knownParts = new KnownParts();
  private readonly partBuffers: PartBufferPool;
  /** Sessions' latest states as this process last read (walking every version) or wrote them. */
  private readonly recent = new RecentStates();
  /** Multipart uploads of staged blobs (stageBlob) this process is writing or holding. */
  private readonly staging = new Set<string>();

  constructor(private readonly options: S3StoreOptions, client?: S3Client) {
    if (options.partSize < MIN_PART_BYTES || options.partSize > MAX_PART_BYTES) throw new Error("partSize must be between 5MiB and 5GiB");
    this.client = client ?? createS3Client(options);
    this.layout = new S3Layout(options.prefix);
    this.bucket = options.bucket;
    this.partSize = options.partSize;
    this.partBuffers = new PartBufferPool(options.partSize);
    this.maxCopyBytes = options.maxCopyBytes ?? MAX_PART_BYTES;
    // Blob GETs through reused buffers need a plain-HTTP endpoint (TLS goes through the SDK's streams).
    this.directReads = options.endpoint !== undefined && new URL(options.endpoint).protocol === "http:" && options.directReads !== false;
    if (this.maxCopyBytes < 2 * MIN_PART_BYTES || this.maxCopyBytes > MAX_PART_BYTES) throw new Error("maxCopyBytes must be between 10MiB and 5GiB");
  }

  // ---- blobs -------------------------------------------------------------------------------

  async stat(digest: string): Promise<BlobStat | null> {
    const head = await this.orMissing("looking up a blob", () =>
      this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.layout.blob(digest) })),
    );
    return head === null ? null : { size: head.ContentLength ?? 0 };
  }

  async read(digest: string, range?: ByteRange): Promise<Readable> {
    return this.readObject(this.layout.blob(digest), "reading a blob", range, () => new BlobNotFoundError(digest));
  }

  async openToSend(digest: string, range: ByteRange | undefined, length: number): Promise<DirectBody | null> {
    if (!this.directReads) return null;
    const command = new GetObjectCommand({ Bucket: this.bucket, Key: this.layout.blob(digest) });
    const url = await this.attempt("signing a blob URL", () => getSignedUrl(this.client, command, { expiresIn: 300 }));
    try {
      return await openDirectGet(url, range, length, DIRECT_READ_IDLE_MS);
    } catch (error) {
      if (error instanceof DirectGetError && error.status === 404) throw new BlobNotFoundError(digest);
      throw storeUnavailable(error, "reading a blob");
    }
  }

  async redirectUrl(digest: string, options: { method: "GET" | "HEAD"; expiresInMs: number }): Promise<string | null> {
    // HEAD is answered from metadata: a redirect would only cost the client a round trip.
    if (this.options.redirectExpiresMs === undefined || options.method !== "GET") return null;
    const command = new GetObjectCommand({ Bucket: this.bucket, Key: this.layout.blob(digest) });
    return this.attempt("signing a blob URL", () =>
      getSignedUrl(this.client, command, { expiresIn: Math.max(1, Math.floor(this.options.redirectExpiresMs! / 1000)) }),
    );
  }

  async delete(digest: string): Promise<void> {
    await this.attempt("deleting a blob", () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.layout.blob(digest) })));
  }

  async *listBlobs(): AsyncIterable<{ digest: string; modifiedAt: number }> {
    for await (const object of this.listObjects(this.layout.blobsPrefix(), "listing blobs")) {
      const digest = this.layout.digestOfKey(object.key);
      if (digest) yield { digest, modifiedAt: object.modifiedAt };
    }
  }

  // ---- upload sessions ---------------------------------------------------------------------

  async startUpload(uploadId: string): Promise<void> {
    try {
      await this.client.send(this.hintCommand(uploadId, emptySession(), true));
    } catch (error) {
      if (isPreconditionFailed(error)) throw new Error(`upload session ${uploadId} already exists`);
      throw storeUnavailable(error, "starting an upload");
    }
  }

  async stageBlob(digest: string, source: Readable, options: Omit<AppendOptions, "offset">): Promise<StagedBlob> {
    const target = {
      client: this.client,
      bucket: this.bucket,
      key: this.layout.blob(digest),
      partSize: this.partSize,
      pool: this.partBuffers,
      partsInFlight: PARTS_IN_FLIGHT,
      active: this.staging,
    };
    return stagePut(target, source, options);
  }

  async purgeStaged(olderThan: number): Promise<number> {
    let aborted = 0;
    for await (const upload of this.listMultipartUploads(this.layout.blobsPrefix())) {
      if (upload.initiatedAt >= olderThan || this.staging.has(upload.uploadId)) continue;
      await this.orMissing("aborting a staged blob", () =>
        this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.key, UploadId: upload.uploadId })),
      );
      aborted++;
    }
    return aborted;
  }

  async uploadSize(uploadId: string): Promise<number | null> {
    return (await this.getState(uploadId))?.size ?? null;
  }

  async appendUpload(uploadId: string, source: Readable, options: AppendOptions): Promise<number> {
    const initial = await this.currentState(uploadId);
    if (initial === null) throw new BlobNotFoundError(uploadId);
    if (initial.size !== options.offset) throw new UploadOffsetError(initial.size);
    const start = initial.size;
    const { maxBytes, exactBytes, hash } = options;
    let state = initial.sealed ? await this.unseal(uploadId, initial) : initial;
    // Pieces folded into an uploaded part or a merged piece: deleted once the new state no longer names them.
    const consumed: string[] = [];
    const uploaded: UploadedPart[] = [];
    // The next part is assembled in one buffer: the session's pieces (read back only if the part
    // fills) go in front, this request's bytes after them. Buffers come from a pool, so their
    // pages are not faulted in again for every push.
    let pending = state.pieces.reduce((sum, piece) => sum + piece.size, 0);
    // Pieces are only ever written below S3's minimum part size, which no partSize is under.
    if (pending >= MIN_PART_BYTES) throw storeUnavailable(new Error("pieces exceed a part"), "storing upload data");
    let part: Buffer | null = null;
    let filled = 0;
    let written = 0;
    let leftover: { key: string; body: Buffer } | null = null;
    // Full parts upload while the next one fills from the socket (oldest first). Each holds its
    // buffer until S3 has it; settled results never reject, so a failure waits to be read here.
    const inflight: Array<{ done: Promise<{ part?: UploadedPart; error?: unknown }>; buffer: Buffer; extra: boolean }> = [];
    let failure: unknown = null;
    // The part chain as of the parts S3 has confirmed, in order (the in-flight ones are added as they settle).
    let ph = state.ph;
    let baseOut = false; // the one buffer an append may take outside the process-wide extra budget
    let partExtra = false;
    const settleOldest = async () => {
      const entry = inflight.shift()!;
      const result = await entry.done;
      if (entry.extra) this.partBuffers.giveExtra(entry.buffer);
      else {
        this.partBuffers.give(entry.buffer);
        baseOut = false;
      }
      if (result.part) {
        uploaded.push(result.part);
        ph = chainPart(ph, result.part);
      } else failure ??= result.error;
    };
    const nextBuffer = async (): Promise<Buffer> => {
      for (;;) {
        if (!baseOut) {
          baseOut = true;
          partExtra = false;
          return this.partBuffers.take();
        }
        if (inflight.length < PARTS_IN_FLIGHT) {
          const extra = this.partBuffers.tryTakeExtra();
          if (extra) {
            partExtra = true;
            return extra;
          }
        }
        await settleOldest();
        if (failure !== null) throw failure;
      }
    };
    const sendPart = async (length: number) => {
      const started = await this.beginPart(uploadId, state, part!, length, consumed);
      state = started.state;
      inflight.push({ done: started.done.then((p) => ({ part: p }), (error: unknown) => ({ error })), buffer: part!, extra: partExtra });
      part = null;
      pending = 0;
      filled = 0;
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
          part ??= await nextBuffer();
          const n = Math.min(chunk.length - at, this.partSize - pending - filled);
          chunk.copy(part, pending + filled, at, at + n);
          filled += n;
          at += n;
          if (pending + filled === this.partSize) await sendPart(pending + filled);
        }
      }
      if (exactBytes !== undefined && written !== exactBytes) throw new UploadLengthError(exactBytes, written);
      const size = start + written;
      if (part !== null && pending + filled >= MIN_PART_BYTES) {
        // Enough for a part of its own (S3's minimum): uploaded now rather than stored as a piece
        // and read back later, so chunks of 5 MiB or more are written to S3 once.
        await sendPart(pending + filled);
      } else if (part !== null && filled > 0) {
        let offset = size - filled;
        let body = Buffer.from(part.subarray(pending, pending + filled)); // a copy: the part buffer goes back to the pool
        let pieces = state.pieces;
        if (pieces.length >= MAX_PIECES) {
          // Many tiny chunks: fold them into one piece (less than a part) to keep the state small.
          body = Buffer.concat([await this.readPieces(uploadId, state), body]);
          offset = pieces[0].offset;
          consumed.push(...pieces.map((p) => this.layout.piece(uploadId, p)));
          pieces = [];
        }
        const piece: Piece = { offset, size: body.length, t: randomBytes(8).toString("hex") };
        const key = this.layout.piece(uploadId, piece);
        leftover = { key, body };
        await this.attempt("storing upload data", () =>
          this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length })),
        );
        state = { ...state, pieces: [...pieces, piece] };
      }
      while (inflight.length > 0) await settleOldest();
      if (failure !== null) throw failure;
      state = await this.putState(uploadId, { ...state, size, ph });
    } catch (error) {
      // No upload of this append may land after it failed (a retry re-uploads the same part numbers).
      while (inflight.length > 0) await settleOldest();
      // The session stays as it was: the old state still names only the old bytes.
      if (leftover !== null) await this.deleteKeys([leftover.key]).catch(() => undefined);
      throw error;
    } finally {
      if (part !== null) {
        if (partExtra) this.partBuffers.giveExtra(part);
        else this.partBuffers.give(part);
      }
    }
    if (leftover !== null) this.pieceCache.remember(leftover.key, leftover.body);
    if (uploaded.length > 0) this.knownParts.add(state.mpu!, uploaded);
    if (consumed.length > 0) {
      this.pieceCache.forget(consumed);
      await this.deleteKeys(consumed).catch(() => undefined);
    }
    return state.size;
  }

  async readUpload(uploadId: string): Promise<Readable> {
    const state = await this.getState(uploadId);
    if (state === null) throw new BlobNotFoundError(uploadId);
    if (!inParts(state)) return Readable.from(this.streamPieces(uploadId, state), { objectMode: false });
    // Parts of an open multipart upload cannot be read back: complete it first (the session stays open).
    await this.sealOr503(uploadId, state);
    return this.readObject(this.layout.staging(uploadId), "reading upload data", undefined, () => new BlobNotFoundError(uploadId));
  }

  async commitUpload(uploadId: string, digest: string): Promise<void> {
    const state = await this.currentState(uploadId);
    if (state === null) throw new BlobNotFoundError(uploadId);
    const key = this.layout.blob(digest);
    let versions = state.seq;
    if (!inParts(state)) {
      // Smaller than one part: the pieces (at most one part in memory, usually still in the
      // cache after a monolithic push) are stored in one atomic PUT.
      const body = await this.readPieces(uploadId, state);
      await this.attempt("storing a blob", () =>
        this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length })),
      );
      // A multipart upload started by an append that then failed holds no part of these bytes.
      if (state.mpu) await this.orMissing("ending an upload", () => this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.layout.staging(uploadId), UploadId: state.mpu }))).catch(() => undefined);
    } else {
      const sealed = await this.sealOr503(uploadId, state);
      versions = sealed.seq;
      await this.copy(this.layout.staging(uploadId), key, sealed.size);
    }
    // The state object goes first: from then on the session is over, whatever cleanup fails later.
    this.recent.forget(uploadId);
    await this.attempt("ending an upload", () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.layout.state(uploadId) })));
    const pieces = state.pieces.map((p) => this.layout.piece(uploadId, p));
    this.pieceCache.forget(pieces);
    const stateKeys = Array.from({ length: versions }, (_, i) => this.layout.stateVersion(uploadId, i + 1));
    const rest = [...(inParts(state) ? [this.layout.staging(uploadId)] : []), ...pieces, ...stateKeys];
    await this.deleteKeys(rest).catch(() => undefined); // leftovers are found by listUploads and purged
  }

  async abortUpload(uploadId: string): Promise<void> {
    const sessionPrefix = this.layout.session(uploadId);
    const known = this.recent.get(uploadId);
    this.recent.forget(uploadId);
    if (known?.seq === 0 && (await this.headState(this.layout.stateVersion(uploadId, 1))) === null) {
      // A session that never saved a state version holds nothing but its hint (a monolithic
      // PUT on an empty session, whose bytes went to stageBlob): one DELETE instead of listing.
      // A piece of an append that crashed is found by the upload purge.
      await this.attempt("cancelling an upload", () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.layout.state(uploadId) })));
      return;
    }
    await this.attempt("cancelling an upload", () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.layout.state(uploadId) })));
    for await (const upload of this.listMultipartUploads(sessionPrefix)) {
      await this.orMissing("cancelling an upload", () =>
        this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.key, UploadId: upload.uploadId })),
      );
    }
    const keys: string[] = [];
    for await (const object of this.listObjects(sessionPrefix, "cancelling an upload")) keys.push(object.key);
    this.pieceCache.forget(keys);
    await this.deleteKeys(keys);
  }

  /** Sessions with objects or multipart uploads in the bucket (tracked or orphaned), with their last activity. */
  async listUploads(): Promise<Array<{ id: string; modifiedAt: number }>> {
    const latest = new Map<string, number>();
    const note = (key: string, at: number) => {
      const id = this.layout.sessionOfKey(key);
      if (id !== null) latest.set(id, Math.max(latest.get(id) ?? 0, at));
    };
    for await (const object of this.listObjects(this.layout.uploadsPrefix(), "listing uploads")) note(object.key, object.modifiedAt);
    for await (const upload of this.listMultipartUploads(this.layout.uploadsPrefix())) note(upload.key, upload.initiatedAt);
    return [...latest].map(([id, modifiedAt]) => ({ id, modifiedAt }));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  // ---- session internals -------------------------------------------------------------------

  /** The session's latest state: the hint's version, then any newer ones (null once the session is over). */
  private async getState(uploadId: string): Promise<SessionState | null> {
    const hint = await this.headState(this.layout.state(uploadId));
    if (hint === null) {
      this.recent.forget(uploadId);
      return null;
    }
    let state = hint.state;
    for (;;) {
      const newer = await this.headState(this.layout.stateVersion(uploadId, state.seq + 1));
      if (newer === null) break;
      state = newer.state;
    }
    this.recent.remember(uploadId, state);
    return state;
  }

  /**
   * The state an append or a commit starts from. The registry reads the session's size
   * (a full read: getState) at the start of every request that writes, so the state this
   * process read or wrote a moment ago saves those requests the same two HEADs again.
   * A state that is no longer the latest can only mean this writer lost the session:
   * what it writes next is fenced off (putState), and a commit is checked against the
   * lease before it runs.
   */
  private async currentState(uploadId: string): Promise<SessionState | null> {
    return this.recent.get(uploadId) ?? this.getState(uploadId);
  }

  private async headState(key: string): Promise<{ state: SessionState; writer: string | undefined } | null> {
    const head = await this.orMissing("reading an upload's state", () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })));
    if (head === null) return null;
    return { state: parseSessionState(head.Metadata?.[STATE_METADATA_KEY]), writer: head.Metadata?.[WRITER_METADATA_KEY] };
  }

  private hintCommand(uploadId: string, state: SessionState, create: boolean): PutObjectCommand {
    return new PutObjectCommand({
      Bucket: this.bucket,
      Key: this.layout.state(uploadId),
      Body: "",
      ContentLength: 0,
      Metadata: { [STATE_METADATA_KEY]: encodeSessionState(state) },
      IfNoneMatch: create ? "*" : undefined,
    });
  }

  /**
   * Saves `state` as the version after the one it was read as, and returns it with that
   * version. Fails with UploadOffsetError when another writer saved that version first:
   * this writer's view is stale (it lost the session), and what it did is never named.
   */
  private async putState(uploadId: string, state: SessionState): Promise<SessionState> {
    const next: SessionState = { ...state, seq: state.seq + 1 };
    const key = this.layout.stateVersion(uploadId, next.seq);
    const writer = randomBytes(8).toString("hex");
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: "",
          ContentLength: 0,
          Metadata: { [STATE_METADATA_KEY]: encodeSessionState(next), [WRITER_METADATA_KEY]: writer },
          IfNoneMatch: "*",
        }),
      );
    } catch (error) {
      if (!isPreconditionFailed(error)) throw storeUnavailable(error, "saving an upload's state");
      // Our own PUT, retried by the SDK after its answer was lost, finds itself: that is success.
      const found = await this.headState(key);
      if (found?.writer !== writer) {
        this.recent.forget(uploadId);
        const current = await this.getState(uploadId);
        if (current === null) throw new BlobNotFoundError(uploadId);
        throw new UploadOffsetError(current.size);
      }
    }
    this.recent.remember(uploadId, next);
    // Only a shortcut for readers: if it fails or a stale writer overwrites it, they walk further.
    await this.client.send(this.hintCommand(uploadId, next, false)).catch(() => undefined);
    return next;
  }

  /**
   * Called when a request takes the session over from a writer that lost it (frozen past
   * its lease, maybe still running on another replica). Saving a new version of the state
   * fences that writer's state off, whatever it read; completing the multipart upload
   * (the next append continues in a new one, copied server side) makes every part it
   * might still upload fail, where it could otherwise replace a part a later state counts.
   */
  async detachUpload(uploadId: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const state = await this.getState(uploadId);
      if (state === null) throw new BlobNotFoundError(uploadId);
      try {
        if (inParts(state) && !state.sealed) {
          await this.seal(uploadId, state);
        } else if (state.mpu && !state.sealed) {
          // A multipart upload with no part counted yet: the next append starts a new one.
          await this.putState(uploadId, { ...state, mpu: undefined });
          const abort = new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.layout.staging(uploadId), UploadId: state.mpu });
          await this.client.send(abort).catch(() => undefined); // else the upload purge finds it
        } else {
          await this.putState(uploadId, state);
        }
        return;
      } catch (error) {
        // The old writer saved one last version just now: fence after that one.
        if (!(error instanceof UploadOffsetError) || attempt >= 5) throw error;
      }
    }
  }

  /**
   * Starts uploading part[0, length) as the next part, its first bytes being the session's
   * pieces (read into the space left for them); the new state names no pieces. Resolves
   * once the upload is under way; `done` settles when S3 has the part.
   */
  private async beginPart(
    uploadId: string,
    state: SessionState,
    part: Buffer,
    length: number,
    consumed: string[],
  ): Promise<{ state: SessionState; done: Promise<UploadedPart> }> {
    if (!state.mpu) {
      const created = await this.attempt("starting a multipart upload", () =>
        this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: this.layout.staging(uploadId) })),
      );
      // Recorded at once, so a failed append leaves no multipart upload the session does not know.
      state = await this.putState(uploadId, { ...state, mpu: created.UploadId! });
    }
    if (state.pieces.length > 0) (await this.readPieces(uploadId, state)).copy(part, 0);
    const done = this.putPart(uploadId, state, part.subarray(0, length));
    consumed.push(...state.pieces.map((p) => this.layout.piece(uploadId, p)));
    return { state: { ...state, np: state.np + 1, partBytes: state.partBytes + length, pieces: [] }, done };
  }

  /** Uploads `body` as part np+1 of the session's multipart upload. */
  private async putPart(uploadId: string, state: SessionState, body: Buffer): Promise<UploadedPart> {
    const n = state.np + 1;
    const out = await this.attempt("storing upload data", () =>
      this.client.send(
        new UploadPartCommand({
          Bucket: this.bucket,
          Key: this.layout.staging(uploadId),
          UploadId: state.mpu,
          PartNumber: n,
          Body: body,
          ContentLength: body.length,
        }),
      ),
    );
    return { n, etag: out.ETag ?? "", size: body.length };
  }

  /** Parts 1..np of the session's multipart upload, as S3 lists them (higher numbers are leftovers of failed appends). */
  private async listSessionParts(uploadId: string, state: SessionState): Promise<UploadedPart[]> {
    // Parts this process uploaded in appends that succeeded need no ListParts (whose reply RGW sends ~40 ms late).
    const known = this.knownParts.take(state.mpu!, state.np, state.partBytes);
    if (known) return this.checkChain(state, known);
    const parts: UploadedPart[] = [];
    let marker: string | undefined;
    for (;;) {
      const page = await this.attempt("listing upload parts", () =>
        this.client.send(new ListPartsCommand({ Bucket: this.bucket, Key: this.layout.staging(uploadId), UploadId: state.mpu, PartNumberMarker: marker })),
      );
      for (const part of page.Parts ?? []) {
        if (part.PartNumber !== undefined && part.PartNumber <= state.np) parts.push({ n: part.PartNumber, etag: part.ETag ?? "", size: part.Size ?? 0 });
      }
      if (!page.IsTruncated || page.NextPartNumberMarker === undefined) break;
      marker = String(page.NextPartNumberMarker);
    }
    parts.sort((a, b) => a.n - b.n);
    const bytes = parts.reduce((sum, p) => sum + p.size, 0);
    if (parts.length !== state.np || parts.some((p, i) => p.n !== i + 1) || bytes !== state.partBytes) {
      throw storeUnavailable(new Error("multipart upload lost parts"), "completing an upload");
    }
    return this.checkChain(state, parts);
  }

  /**
   * The parts must be the very ones the state's writers uploaded: a writer that lost the
   * session may have uploaded a part under a number a later state counts, after the fact.
   */
  private checkChain(state: SessionState, parts: UploadedPart[]): UploadedPart[] {
    const chain = parts.reduce((ph, part) => chainPart(ph, part), "");
    if (chain !== state.ph) throw storeUnavailable(new Error("multipart upload parts were replaced"), "completing an upload");
    return parts;
  }

  /**
   * Completes the session's multipart upload (its pieces becoming the last
   * part) into the staging object, so its bytes can be read or copied.
   */
  private async seal(uploadId: string, state: SessionState): Promise<SessionState> {
    if (state.sealed || !inParts(state)) return state;
    let parts = await this.listSessionParts(uploadId, state);
    if (state.pieces.length > 0) parts = [...parts, await this.putPart(uploadId, state, await this.readPieces(uploadId, state))];
    const staging = this.layout.staging(uploadId);
    try {
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: staging,
          UploadId: state.mpu,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
        }),
      );
    } catch (error) {
      // A crash after an earlier Complete leaves its upload id unknown (RGW answers 500, AWS 404):
      // the staging object at the session's size is that completion.
      const done = await this.orMissing("completing an upload", () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: staging })));
      if (done?.ContentLength !== state.size) throw storeUnavailable(error, "completing an upload");
    }
    const sealed = await this.putState(uploadId, { v: 1, seq: state.seq, size: state.size, np: 0, partBytes: 0, ph: "", pieces: [], sealed: true });
    const pieces = state.pieces.map((p) => this.layout.piece(uploadId, p));
    this.pieceCache.forget(pieces);
    await this.deleteKeys(pieces).catch(() => undefined);
    return sealed;
  }

  /** seal, for requests that read or commit: another writer moving the session on meanwhile is the store's failure to them. */
  private async sealOr503(uploadId: string, state: SessionState): Promise<SessionState> {
    try {
      return await this.seal(uploadId, state);
    } catch (error) {
      if (error instanceof UploadOffsetError) throw storeUnavailable(new Error("session moved on"), "completing an upload");
      throw error;
    }
  }

  /** A sealed session receives more bytes: a new multipart upload starts with its staging object, copied server side. */
  private async unseal(uploadId: string, state: SessionState): Promise<SessionState> {
    const staging = this.layout.staging(uploadId);
    const created = await this.attempt("reopening an upload", () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: staging })),
    );
    const mpu = created.UploadId!;
    const parts = await this.copyParts(staging, staging, mpu, state.size);
    const ph = parts.reduce((chain, part) => chainPart(chain, part), "");
    return this.putState(uploadId, { v: 1, seq: state.seq, size: state.size, mpu, np: parts.length, partBytes: state.size, ph, pieces: [] });
  }

  /** The session's pieces, fetched in parallel (each small GET from RGW waits ~40 ms for its body). */
  private async readPieces(uploadId: string, state: SessionState): Promise<Buffer> {
    const buffers = await Promise.all(state.pieces.map((piece) => this.readPiece(uploadId, piece)));
    return Buffer.concat(buffers);
  }

  private async readPiece(uploadId: string, piece: Piece): Promise<Buffer> {
    const key = this.layout.piece(uploadId, piece);
    const cached = this.pieceCache.get(key);
    if (cached) return cached;
    const stream = await this.readObject(key, "reading upload data", undefined, () => storeUnavailable(new Error("missing piece"), "reading upload data"));
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    if (body.length !== piece.size) throw storeUnavailable(new Error("short piece"), "reading upload data");
    return body;
  }

  private async *streamPieces(uploadId: string, state: SessionState): AsyncGenerator<Buffer> {
    // One piece at a time: together they are less than a part, but there is no need to hold them all.
    for (const piece of state.pieces) yield await this.readPiece(uploadId, piece);
  }

  // ---- object helpers ----------------------------------------------------------------------

  /** A GetObject body that errors unless exactly the announced bytes arrive (a cut-off store never ends a blob early). */
  private async readObject(key: string, action: string, range: ByteRange | undefined, missing: () => Error): Promise<Readable> {
    const out = await this.orMissing(action, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end}` : undefined })),
    );
    if (out === null) throw missing();
    const body = out.Body as Readable;
    const expected = out.ContentLength ?? -1;
    let seen = 0;
    const checked = new Transform({
      // Reading up to 1 MiB ahead of the client keeps RGW's socket busy: 100 MiB pulls went
      // from ~300-550 to ~730-850 MB/s against the 16 KiB default (curl on loopback, A/B runs).
      highWaterMark: 1024 * 1024,

      transform(chunk: Buffer, _encoding, callback) {
        seen += chunk.length;
        callback(null, chunk);
      },
      flush(callback) {
        callback(seen === expected ? null : new Error(`the object store sent ${seen} of ${expected} bytes`));
      },
    });
    pipeline(body, checked, () => undefined);
    return checked;
  }

  /** Server-side copy; above maxCopyBytes as a multipart upload of ranged copies. */
  private async copy(source: string, target: string, size: number): Promise<void> {
    if (size <= this.maxCopyBytes) {
      await this.attempt("storing a blob", () =>
        this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: target, CopySource: this.copySource(source) })),
      );
      return;
    }
    const created = await this.attempt("storing a blob", () => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: target })));
    const mpu = created.UploadId!;
    try {
      const parts = await this.copyParts(source, target, mpu, size);
      await this.attempt("storing a blob", () =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: target,
            UploadId: mpu,
            MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
          }),
        ),
      );
    } catch (error) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: target, UploadId: mpu })).catch(() => undefined);
      throw error;
    }
  }

  /** Copies `source` into the multipart upload `mpu` as parts of at most maxCopyBytes, a few at a time. */
  private async copyParts(source: string, target: string, mpu: string, size: number): Promise<UploadedPart[]> {
    // Ranges of maxCopyBytes; a last range under S3's 5 MiB minimum takes bytes from the one
    // before it, because after an unseal more parts follow and only the very last may be small.
    const ranges: Array<{ start: number; end: number }> = [];
    for (let start = 0; start < size; start += this.maxCopyBytes) ranges.push({ start, end: Math.min(size, start + this.maxCopyBytes) - 1 });
    const last = ranges[ranges.length - 1];
    if (ranges.length > 1 && last.end - last.start + 1 < MIN_PART_BYTES) {
      last.start = last.end + 1 - MIN_PART_BYTES;
      ranges[ranges.length - 2].end = last.start - 1;
    }
    const count = ranges.length;
    const parts: UploadedPart[] = [];
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const index = next++;
        const { start, end } = ranges[index];
        const out = await this.attempt("copying upload data", () =>
          this.client.send(
            new UploadPartCopyCommand({
              Bucket: this.bucket,
              Key: target,
              UploadId: mpu,
              PartNumber: index + 1,
              CopySource: this.copySource(source),
              CopySourceRange: `bytes=${start}-${end}`,
            }),
          ),
        );
        parts[index] = { n: index + 1, etag: out.CopyPartResult?.ETag ?? "", size: end - start + 1 };
      }
    };
    await Promise.all(Array.from({ length: Math.min(COPY_CONCURRENCY, count) }, worker));
    return parts;
  }

  private copySource(key: string): string {
    return `${this.bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    // A few keys go as parallel DeleteObjects: no response body, so no ~40 ms wait on RGW.
    if (keys.length <= 16) {
      await Promise.all(
        keys.map((Key) => this.attempt("deleting upload data", () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })))),
      );
      return;
    }
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      await this.attempt("deleting upload data", () =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })),
      );
    }
  }

  private async *listObjects(prefix: string, action: string): AsyncGenerator<{ key: string; modifiedAt: number }> {
    let token: string | undefined;
    do {
      const page = await this.attempt(action, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token })),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key) yield { key: object.Key, modifiedAt: object.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  private async *listMultipartUploads(prefix: string): AsyncGenerator<{ key: string; uploadId: string; initiatedAt: number }> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.attempt("listing multipart uploads", () =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker })),
      );
      for (const upload of page.Uploads ?? []) {
        if (upload.Key && upload.UploadId) yield { key: upload.Key, uploadId: upload.UploadId, initiatedAt: upload.Initiated?.getTime() ?? 0 };
      }
      if (!page.IsTruncated) return;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  private async attempt<T>(action: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw storeUnavailable(error, action);
    }
  }

  /** Like attempt, with a missing object or upload answering null. */
  private async orMissing<T>(action: string, run: () => Promise<T>): Promise<T | null> {
    try {
      return await run();
    } catch (error) {
      if (isMissing(error)) return null;
      throw storeUnavailable(error, action);
    }
  }
}

/**
 * Whether the session's bytes start with multipart parts (so it is at least one part long);
 * otherwise they are all in pieces. An append that failed may have left a multipart upload with no part.
 */
function inParts(state: SessionState): boolean {
  return state.sealed === true || state.np > 0;
}
