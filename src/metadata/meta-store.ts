/**
 * The metadata store: everything about repositories that is not blob bytes.
 * Tags, catalog, referrers and garbage collection are queries here, never
 * directory walks. SQLite implements it for the embedded default; the
 * interface is async so that PostgreSQL can implement it unchanged.
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
}

export interface ForeignLayerWrite {
  digest: string;
  mediaType: string;
  size: number;
  urls: string[];
  verification: VerificationState;
  verifiedAt: number | null;
  verificationDetail: unknown;
}

/** One attempt to reach a foreign layer source (federation's source health). */
export interface SourceHealthEvent {
  /** URL host (with port when not the scheme's default). */
  host: string;
  ok: boolean;
  at: number;
  /** Time to the response headers, when there was a response. */
  latencyMs: number | null;
  /** What went wrong (status, timeout, refused, digest mismatch); null on success. */
  error: string | null;
}

export interface SourceHealthRecord {
  host: string;
  successes: number;
  failures: number;
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastError: string | null;
  lastLatencyMs: number | null;
  /** Mean time to headers over all attempts that got a response. */
  averageLatencyMs: number | null;
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
}

export interface UploadRecord {
  id: string;
  repository: string;
  createdAt: number;
  updatedAt: number;
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

export interface MetaStore {
  repositoryExists(repository: string): Promise<boolean>;
  listRepositories(page: Page): Promise<string[]>;

  /** Records a verified blob and links it into `repository` (creating the repository). */
  linkBlob(repository: string, digest: string, size: number): Promise<void>;
  /** The blob's size if `repository` may see it. */
  linkedBlob(repository: string, digest: string): Promise<{ size: number } | null>;
  unlinkBlob(repository: string, digest: string): Promise<boolean>;
  /** Size of a blob known anywhere in the registry. */
  blobSize(digest: string): Promise<number | null>;
  /** Some repositories that link `digest` (for mounts), lexically first. */
  repositoriesWithBlob(digest: string, limit: number): Promise<string[]>;
  /** Which of `digests` are not manifests of `repository`. */
  missingManifests(repository: string, digests: string[]): Promise<string[]>;

  /**
   * Stores a manifest (idempotent) and optionally points `tag` at it, in one
   * transaction. Rejects with MissingReferencesError, storing nothing, when a
   * blob or child manifest it references is no longer in the repository at
   * commit time (garbage collection may have run since the caller checked).
   */
  putManifest(repository: string, manifest: ManifestWrite, tag?: string): Promise<void>;
  getManifest(repository: string, digest: string): Promise<ManifestRecord | null>;
  getTaggedManifest(repository: string, tag: string): Promise<ManifestRecord | null>;
  /** Deletes the manifest, its tags and references, and foreign marks no other manifest uses. */
  deleteManifest(repository: string, digest: string): Promise<boolean>;
  deleteTag(repository: string, tag: string): Promise<boolean>;
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
   * How many foreign layers `manifestDigest` references in `repository`,
   * counting those of its child manifests when it is an index. Optional so
   * that drivers can add it later; federation falls back to listForeignLayers.
   */
  countForeignLayers?(repository: string, manifestDigest: string): Promise<number>;
  /** Persists one source-health event (optional; federation keeps health in memory without it). */
  recordSourceHealth?(event: SourceHealthEvent): Promise<void>;
  listSourceHealth?(): Promise<SourceHealthRecord[]>;

  /**
   * A value that differs from every earlier one whenever the store's content may
   * have changed since: a write through this instance, or a commit by any other
   * connection or process on the same database. Equal tokens mean nothing
   * changed, so results read under a token may be cached until it changes.
   * Optional: a driver without it gets no listing cache.
   */
  changeToken?(): Promise<string>;

  createUpload(upload: UploadRecord): Promise<void>;
  getUpload(id: string): Promise<UploadRecord | null>;
  touchUpload(id: string, at: number): Promise<void>;
  deleteUpload(id: string): Promise<void>;
  staleUploads(updatedBefore: number): Promise<UploadRecord[]>;

  /** Removes unreferenced metadata and returns the blobs whose bytes can go. */
  collectGarbage(options: GcOptions): Promise<GcPlan>;
  /** Forgets blobs whose bytes were deleted (only if still unlinked). */
  forgetBlobs(digests: string[]): Promise<string[]>;

  close(): Promise<void>;
}
