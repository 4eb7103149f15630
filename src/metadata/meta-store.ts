/**
 * The metadata store: everything about repositories that is not blob bytes.
 * Tags, catalog, referrers and garbage collection are queries here, never
 * directory walks. SQLite (the embedded default) and PostgreSQL (replicas)
 * implement it with one schema and one set of queries (sql/, docs/metadata.md).
 * Every driver passes test/metadata/meta-store-suite.ts.
 */

export interface ManifestRecord {
  repository: string;
  digest: string;
  mediaType: string;
  size: number;
  /** The bytes exactly as pushed. */
  content: Buffer;
  subjectDigest: string | null;
  artifactType: string | null;
  createdAt: number;
}

export interface ReferrerRecord {
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string | null;
  annotations: Record<string, string> | null;
}

export type VerificationState = "unverified" | "verified" | "failed";

export interface ForeignLayerMark {
  repository: string;
  digest: string;
  mediaType: string;
  size: number;
  urls: string[];
  verification: VerificationState;
  verifiedAt: number | null;
  /** What the last verification attempts answered (per URL), for operators. */
  verificationDetail: unknown;
  /** Digests of the manifests in this repository that reference the layer. */
  manifests: string[];
  /**
   * Which of `urls` delivered bytes whose digest and size matched, for this
   * repository (push-time fetch verification or a proxy fetch). Only these
   * authorise serving the layer's cached bytes to this repository.
   */
  provenUrls?: string[];
}

/** One entry of the shared proxy cache index (the bytes live in the cache's blob store namespace). */
export interface ForeignCacheEntry {
  digest: string;
  size: number;
  fetchedAt: number;
  lastAccess: number;
  /** Kept until no repository references the layer: never evicted, never expires. */
  pinned: boolean;
}

export interface ForeignLayerWrite {
  digest: string;
  mediaType: string;
  size: number;
  urls: string[];
  verification: VerificationState;
  verifiedAt: number | null;
  verificationDetail: unknown;
  /** URLs of this descriptor that just delivered verified bytes for the repository (recorded as proofs). */
  provenUrls?: string[];
}

/** One attempt to reach a foreign layer URL (federation's source health; never a policy refusal). */
export interface SourceHealthEvent {
  url: string;
  /** The URL's host (with port when not the scheme's default): the metrics label. */
  host: string;
  ok: boolean;
  at: number;
  /** Time to the response headers, when there was a response. */
  latencyMs: number | null;
  /** What went wrong (status, timeout, connection refused, digest mismatch); null on success. */
  error: string | null;
}

/** How many of a URL's latest outcomes are kept (SourceHealthRecord.recent). */
export const SOURCE_HEALTH_WINDOW = 10;

/** Health of one foreign layer URL, over every process sharing the store. */
export interface SourceHealthRecord {
  url: string;
  host: string;
  successes: number;
  failures: number;
  /** Failed attempts since the last success. */
  consecutiveFailures: number;
  /** The latest SOURCE_HEALTH_WINDOW outcomes, newest first: "1" ok, "0" failed. */
  recent: string;
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastError: string | null;
  lastLatencyMs: number | null;
  /** Mean time to headers over all attempts that got a response. */
  averageLatencyMs: number | null;
}

/** The claim row of federation's background re-check (one per store, shared by every process). */
export interface RecheckRoundRecord {
  holder: string;
  startedAt: number;
  /** Null while the round runs (or when its holder died; leaseUntil then says when others may take over). */
  finishedAt: number | null;
  leaseUntil: number;
  /** URLs checked by the last finished round. */
  checked: number;
}

export interface ManifestWrite {
  digest: string;
  mediaType: string;
  content: Buffer;
  subjectDigest: string | null;
  artifactType: string | null;
  annotations: Record<string, string> | null;
  /** Blobs (config, layers) the manifest references and the repository holds. */
  blobs: string[];
  /** Child manifests (index entries). */
  manifests: string[];
  /** Layers that live outside the registry. */
  foreignLayers: ForeignLayerWrite[];
  /**
   * Sparse manifests (config `manifests.sparse`, mirrors): references the
   * repository does not hold yet, recorded without the presence check so
   * that GC keeps them once they arrive.
   */
  absent?: { blobs: string[]; manifests: string[] };
}

export interface UploadRecord {
  id: string;
  repository: string;
  createdAt: number;
  updatedAt: number;
  /**
   * Set just before a verified session's bytes are moved under their digest,
   * cleared with the session. A session that still has it after a crash was
   * interrupted mid-commit; recovery (or the client's retried PUT) finishes it.
   */
  committingDigest?: string | null;
}

export interface Page {
  limit: number;
  /** Return entries strictly after this one (lexical order). */
  after?: string;
}

export interface GcOptions {
  /** Links and blobs newer than this (epoch ms) are kept whatever references them. */
  olderThan: number;
  untagged: boolean;
}

export interface GcPlan {
  manifestsDeleted: number;
  linksDeleted: number;
  /** Blobs no repository links any more; the caller deletes their bytes. */
  orphanBlobs: string[];
}

export class MissingReferencesError extends Error {
  constructor(readonly digests: string[]) {
    super(`references no longer in the repository: ${digests.join(", ")}`);
  }
}

/** A repository as the web UI lists it (sql/browse.ts). */
export interface RepositorySummary {
  name: string;
  tags: number;
  /** Bytes of the blobs the repository holds (foreign layers are not held). */
  size: number;
  /** Latest tag update or manifest push (epoch ms). */
  lastPush: number | null;
}

export interface RepositoryPage {
  repositories: RepositorySummary[];
  /** Repositories matching the search that the caller may see. */
  total: number;
  /** Pass as `after` for the next page; absent on the last page. */
  next?: string;
}

/** A tag with the manifest it points at. */
export interface TagDetail {
  tag: string;
  digest: string;
  mediaType: string;
  /** The manifest's own size. */
  size: number;
  content: Buffer;
  artifactType: string | null;
  /** When the manifest was first stored. */
  createdAt: number;
  /** When the tag last moved. */
  pushedAt: number;
}

/** Which count a failed login goes to (auth/rate-limit.ts). */
export type LoginFailureKind = "user" | "address" | "pair";

/** One of this registry's token signing keys (auth/key-set.ts); the highest generation signs. */
export interface SigningKeyRecord {
  generation: number;
  /** JWK thumbprint of the public key. */
  kid: string;
  algorithm: "ES256" | "RS256";
  /** PKCS#8 PEM. Never logged. */
  privateKey: string;
  createdAt: number;
}

/** changeToken's scope for the catalog (no repository name starts with "/"). */
export const CATALOG_SCOPE = "/catalog";

export interface PutManifestResult {
  /** Per tag written: the manifest it named just before, read in the same transaction (null: a new tag). */
  previous: Map<string, string | null>;
}

export interface MetaStore {
  repositoryExists(repository: string): Promise<boolean>;
  listRepositories(page: Page): Promise<string[]>;

  /** Records a verified blob and links it into `repository` (creating the repository). */
  linkBlob(repository: string, digest: string, size: number): Promise<void>;
  /** The blob's size if `repository` may see it. */
  linkedBlob(repository: string, digest: string): Promise<{ size: number } | null>;
  /** linkedBlob for several digests at once (one query on PostgreSQL): the sizes of those `repository` may see. */
  linkedBlobs(repository: string, digests: readonly string[]): Promise<Map<string, number>>;
  unlinkBlob(repository: string, digest: string): Promise<boolean>;
  /** Size of a blob known anywhere in the registry. */
  blobSize(digest: string): Promise<number | null>;
  /** Some repositories that link `digest` (for mounts), lexically first. */
  repositoriesWithBlob(digest: string, limit: number): Promise<string[]>;
  /** Which of `digests` are not manifests of `repository`. */
  missingManifests(repository: string, digests: string[]): Promise<string[]>;

  /**
   * Stores a manifest (idempotent) and optionally points `tag` (one or
   * several) at it, in one transaction. Rejects with MissingReferencesError, storing nothing, when a
   * blob or child manifest it references is no longer in the repository at
   * commit time (garbage collection may have run since the caller checked).
   */
  putManifest(repository: string, manifest: ManifestWrite, tag?: string | readonly string[]): Promise<PutManifestResult>;
  getManifest(repository: string, digest: string): Promise<ManifestRecord | null>;
  getTaggedManifest(repository: string, tag: string): Promise<ManifestRecord | null>;
  /** Deletes the manifest, its tags and references, and foreign marks no other manifest uses. */
  deleteManifest(repository: string, digest: string): Promise<boolean>;
  deleteTag(repository: string, tag: string): Promise<boolean>;
  /** Tags of the repository that point at this manifest (notifications name them when it is deleted). */
  tagsOf?(repository: string, digest: string): Promise<string[]>;
  listTags(repository: string, page: Page): Promise<string[]>;
  listReferrers(repository: string, subjectDigest: string): Promise<ReferrerRecord[]>;

  getForeignLayer(repository: string, digest: string): Promise<ForeignLayerMark | null>;
  listForeignLayers(repository?: string): Promise<ForeignLayerMark[]>;
  setForeignVerification(
    repository: string,
    digest: string,
    state: VerificationState,
    at: number,
    detail: unknown,
  ): Promise<void>;
  /**
   * Records that `url` delivered the layer's exact bytes for `repository`.
   * Ignored (false) unless the repository still names `url` for the layer.
   */
  recordForeignProof(repository: string, digest: string, url: string, at: number): Promise<boolean>;
  /** The foreign layers `manifestDigest` references in `repository`, with those of its child manifests when it is an index. */
  foreignLayersOfManifest(repository: string, manifestDigest: string): Promise<ForeignLayerMark[]>;

  /** The proxy cache index, shared by every process and replica on this store. */
  getForeignCacheEntry(digest: string): Promise<ForeignCacheEntry | null>;
  listForeignCache(): Promise<ForeignCacheEntry[]>;
  /** Records committed cache bytes; a pin is never lowered by a later unpinned write. */
  putForeignCacheEntry(entry: { digest: string; size: number; fetchedAt: number; pinned: boolean }): Promise<void>;
  touchForeignCacheEntry(digest: string, at: number): Promise<void>;
  deleteForeignCacheEntry(digest: string): Promise<void>;
  /**
   * Removes, in one transaction, the index rows of unpinned entries fetched
   * before `expiredBefore` and of the least recently used unpinned entries
   * beyond `maxBytes`; returns their digests (the caller deletes the bytes).
   */
  evictForeignCache(maxBytes: number, expiredBefore: number): Promise<string[]>;

  /**
   * How many foreign layers `manifestDigest` references in `repository`,
   * counting those of its child manifests when it is an index. Optional so
   * that drivers can add it later; federation falls back to listForeignLayers.
   */
  countForeignLayers?(repository: string, manifestDigest: string): Promise<number>;
  /**
   * Failed logins shared by every process and replica on the store
   * (auth/rate-limit.ts). Optional: without them each process counts alone.
   * One row per failure, so concurrent failures on several replicas all count.
   */
  recordLoginFailure?(kind: LoginFailureKind, key: string, at: number): Promise<void>;
  /**
   * Claims one login attempt for `key` before its password is checked: records
   * a failure at `at` and returns its id, unless `limit` failures after `since`
   * are already recorded (then null, nothing recorded). Atomic across processes
   * and replicas, so simultaneous attempts cannot all pass a check made before
   * any of them counted. A login that succeeds releases its claim.
   */
  claimLoginAttempt?(kind: LoginFailureKind, key: string, at: number, since: number, limit: number): Promise<number | null>;
  releaseLoginAttempt?(id: number): Promise<void>;
  /** Failure times of `key` after `since`, ascending, at most the newest `limit`. */
  loginFailureTimes?(kind: LoginFailureKind, key: string, since: number, limit: number): Promise<number[]>;
  /**
   * Deletes failures at or before `before`, then, while more than `maxRows`
   * remain, keys with a single failure (oldest first), then the oldest rows:
   * a flood of made-up names costs bounded space and never wipes the count
   * of a name under attack first. Returns the rows deleted.
   */
  pruneLoginFailures?(before: number, maxRows: number): Promise<number>;
  /** Token signing keys shared by every replica, by generation ascending. */
  listSigningKeys?(): Promise<SigningKeyRecord[]>;
  /** Inserts the key unless its generation exists (two replicas starting or rotating at once: one wins); true when inserted. */
  addSigningKey?(key: SigningKeyRecord): Promise<boolean>;
  /** Persists one source-health event (optional; federation keeps health in memory without it). */
  recordSourceHealth?(event: SourceHealthEvent): Promise<void>;
  /** Every URL's health record, ordered by URL. */
  listSourceHealth?(): Promise<SourceHealthRecord[]>;
  /** Forgets the health records of these URLs (no foreign layer references them any more). */
  forgetSourceHealth?(urls: string[]): Promise<void>;
  /**
   * Claims the next background re-check round for `holder`, atomically across
   * processes: true when no round started in the last `intervalMs` and no
   * other round is still running under an unexpired lease. The lease lasts
   * until `now + leaseMs` unless renewed.
   */
  claimRecheckRound?(holder: string, now: number, intervalMs: number, leaseMs: number): Promise<boolean>;
  /** Extends the running round's lease; false when `holder` no longer holds the round. */
  renewRecheckRound?(holder: string, leaseUntil: number): Promise<boolean>;
  finishRecheckRound?(holder: string, at: number, checked: number): Promise<void>;
  lastRecheckRound?(): Promise<RecheckRoundRecord | null>;

  /**
   * A value that differs from every earlier one whenever the store's content may
   * have changed since: a write through this instance, or a commit by any other
   * connection or process on the same database. Equal tokens mean nothing
   * changed, so results read under a token may be cached until it changes.
   * Optional: a driver without it gets no listing cache.
   *
   * `scope` narrows it: a repository (its tags, manifests and existence) or
   * CATALOG_SCOPE (which repositories have manifests). A driver may ignore it
   * and answer one token for everything (SQLite does); PostgreSQL with a live
   * LISTEN connection moves only the scopes a write named.
   */
  changeToken?(scope?: string): Promise<string>;

  /**
   * The web UI's listings (optional: without them /ferry/v1/repositories
   * answers 501). `visible` is the caller's access check; the page and the
   * total count only names it accepts.
   */
  listRepositorySummaries?(
    page: { limit: number; after?: string; search?: string },
    visible: (name: string) => boolean,
  ): Promise<RepositoryPage>;
  listTagDetails?(repository: string, limit: number): Promise<TagDetail[]>;

  createUpload(upload: UploadRecord): Promise<void>;
  getUpload(id: string): Promise<UploadRecord | null>;
  touchUpload(id: string, at: number): Promise<void>;
  deleteUpload(id: string): Promise<void>;
  staleUploads(updatedBefore: number): Promise<UploadRecord[]>;
  /** How many upload sessions are open. */
  countUploads(): Promise<number>;
  /** Records that the session's verified bytes are about to become blob `digest` (durably, before the move). */
  markUploadCommitting(id: string, digest: string): Promise<void>;
  /** Sessions interrupted between markUploadCommitting and completeUpload. */
  committingUploads(): Promise<UploadRecord[]>;
  /** Links the committed blob into the session's repository and forgets the session, in one transaction. */
  completeUpload(id: string, repository: string, digest: string, size: number): Promise<void>;
  /**
   * Which of `digests` the store neither knows as blobs nor has a session
   * committing to: bytes under those names are left over from a crash.
   */
  untrackedBlobs(digests: string[]): Promise<string[]>;

  /**
   * Leases: mutual exclusion across processes and replicas (an upload session
   * has one writer; a blob commit and garbage collection never interleave for
   * one digest). A lease is held until released or until `ttlMs` passes
   * without a renewal, so a holder that crashed cannot block others forever.
   * Returns whether `holder` now holds `key`; re-acquiring one's own lease
   * extends it.
   */
  acquireLease(key: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Extends a lease still held by `holder`; false when it was lost (expired and taken). */
  renewLease(key: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLease(key: string, holder: string): Promise<void>;
  /**
   * The lease row for `key`, expired or not (null when it was released or
   * never taken): a row that exists when a new holder takes the key means
   * the previous holder never released it (crashed, frozen, cut off).
   */
  leaseHolder(key: string): Promise<{ holder: string; expiresAt: number } | null>;

  /** Removes unreferenced metadata and returns the blobs whose bytes can go. */
  collectGarbage(options: GcOptions): Promise<GcPlan>;
  /** Forgets blobs whose bytes were deleted (only if still unlinked). */
  forgetBlobs(digests: string[]): Promise<string[]>;

  /**
   * Whether the database answers within `timeoutMs` (health checks: a replica
   * that lost its database reports it quickly instead of hanging). Optional.
   */
  ping?(timeoutMs: number): Promise<boolean>;

  close(): Promise<void>;
}
