/**
 * The metadata tables as Kysely sees them: one schema for SQLite and
 * PostgreSQL (created by migrations.ts). Integers are epoch milliseconds or
 * byte counts; PostgreSQL stores them as int8 and the driver parses them back
 * to numbers (postgres.ts), so every query sees plain numbers on both.
 */
import type { Generated } from "kysely";

export interface RepositoriesTable {
  id: Generated<number>;
  name: string;
  created_at: number;
}

export interface BlobsTable {
  digest: string;
  size: number;
  created_at: number;
}

export interface RepositoryBlobsTable {
  repository_id: number;
  digest: string;
  linked_at: number;
}

export interface ManifestsTable {
  repository_id: number;
  digest: string;
  media_type: string;
  size: number;
  content: Buffer;
  subject_digest: string | null;
  artifact_type: string | null;
  /** JSON text. */
  annotations: string | null;
  created_at: number;
}

export type ReferenceKind = "blob" | "manifest" | "foreign";

export interface ManifestReferencesTable {
  repository_id: number;
  manifest_digest: string;
  kind: ReferenceKind;
  child_digest: string;
}

export interface TagsTable {
  repository_id: number;
  name: string;
  manifest_digest: string;
  updated_at: number;
}

export interface ForeignLayersTable {
  repository_id: number;
  digest: string;
  media_type: string;
  size: number;
  /** JSON array of URLs: the union over the repository's manifests (foreign.ts). */
  urls: string;
  verification: "unverified" | "verified" | "failed";
  verified_at: number | null;
  /** JSON text. */
  verification_detail: string | null;
  created_at: number;
}

export interface UploadsTable {
  id: string;
  repository: string;
  created_at: number;
  updated_at: number;
  committing_digest: string | null;
}

export interface ForeignLayerSourcesTable {
  repository_id: number;
  digest: string;
  manifest_digest: string;
  url: string;
  position: number;
  added_at: number;
}

export interface ForeignLayerProofsTable {
  repository_id: number;
  digest: string;
  url: string;
  proven_at: number;
}

export interface ForeignCacheTable {
  digest: string;
  size: number;
  fetched_at: number;
  last_access: number;
  /** 0 or 1. */
  pinned: number;
}

export interface ForeignSourceHealthTable {
  url: string;
  host: string;
  successes: number;
  failures: number;
  consecutive_failures: number;
  recent: string;
  last_success_at: number | null;
  last_failure_at: number | null;
  last_error: string | null;
  last_latency_ms: number | null;
  latency_total_ms: number;
  latency_count: number;
}

export interface ForeignRecheckRoundsTable {
  name: string;
  holder: string;
  started_at: number;
  finished_at: number | null;
  lease_until: number;
  checked: number;
}

export interface LeasesTable {
  key: string;
  holder: string;
  expires_at: number;
}

/** Failed logins, one row each, shared by every replica (auth/rate-limit.ts; sql/auth-state.ts). */
export interface LoginFailuresTable {
  id: Generated<number>;
  kind: string;
  key: string;
  at: number;
}

/**
 * This registry's token signing keys, shared by every replica: the highest
 * generation signs, older ones still verify until their tokens expired
 * (auth/key-set.ts). `private_key` is a PKCS#8 PEM: whoever reads this table
 * can mint tokens (docs/security.md).
 */
export interface TokenSigningKeysTable {
  generation: number;
  kid: string;
  algorithm: string;
  private_key: string;
  created_at: number;
}

/** One row (id 1): the schema version migrations.ts brought the database to. */
export interface FerrySchemaTable {
  id: number;
  version: number;
  migrated_at: number;
}

/** Cache-relevant writes, for PostgreSQL listeners' polls (migrations.ts, version 3). */
export interface MetadataChangesTable {
  id: Generated<number>;
  xid: number;
  payload: string;
  created_at: number;
}

export interface MetadataDatabase {
  repositories: RepositoriesTable;
  blobs: BlobsTable;
  repository_blobs: RepositoryBlobsTable;
  manifests: ManifestsTable;
  manifest_references: ManifestReferencesTable;
  tags: TagsTable;
  foreign_layers: ForeignLayersTable;
  uploads: UploadsTable;
  foreign_layer_sources: ForeignLayerSourcesTable;
  foreign_layer_proofs: ForeignLayerProofsTable;
  foreign_cache: ForeignCacheTable;
  foreign_source_health: ForeignSourceHealthTable;
  foreign_recheck_rounds: ForeignRecheckRoundsTable;
  leases: LeasesTable;
  login_failures: LoginFailuresTable;
  token_signing_keys: TokenSigningKeysTable;
  ferry_schema: FerrySchemaTable;
  metadata_changes: MetadataChangesTable;
}

/** The lease table alone: SQLite keeps it in a file of its own (sqlite.ts). */
export interface LeaseDatabase {
  leases: LeasesTable;
  ferry_schema: FerrySchemaTable;
}
