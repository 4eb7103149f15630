/**
 * SQLite metadata store (the embedded default). WAL mode lets several worker
 * processes share one database file; every multi-row change is a transaction,
 * so a crash leaves either the old or the new state.
 */
import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { MissingReferencesError } from "./meta-store.js";
import { SqliteForeignLayers, migrateForeignLayers } from "./sqlite-foreign.js";
import { SqliteSourceHealth } from "./sqlite-source-health.js";
import { SqliteBrowse } from "./sqlite-browse.js";
import type {
  ForeignCacheEntry,
  ForeignLayerMark,
  GcOptions,
  GcPlan,
  ManifestRecord,
  ManifestWrite,
  MetaStore,
  Page,
  ReferrerRecord,
  RecheckRoundRecord,
  RepositoryPage,
  TagDetail,
  SourceHealthEvent,
  SourceHealthRecord,
  UploadRecord,
  VerificationState,
} from "./meta-store.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS repositories (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repository_blobs (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  linked_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repository_blobs_by_digest ON repository_blobs (digest, repository_id);
CREATE TABLE IF NOT EXISTS manifests (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  content BLOB NOT NULL,
  subject_digest TEXT,
  artifact_type TEXT,
  annotations TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_by_subject ON manifests (repository_id, subject_digest) WHERE subject_digest IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_references (
  repository_id INTEGER NOT NULL,
  manifest_digest TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest', 'foreign')),
  child_digest TEXT NOT NULL,
  PRIMARY KEY (repository_id, manifest_digest, kind, child_digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_references_by_child ON manifest_references (repository_id, child_digest, kind);
CREATE TABLE IF NOT EXISTS tags (
  repository_id INTEGER NOT NULL,
  name TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_manifest ON tags (repository_id, manifest_digest);
CREATE TABLE IF NOT EXISTS foreign_layers (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  urls TEXT NOT NULL,
  verification TEXT NOT NULL,
  verified_at INTEGER,
  verification_detail TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY,
  repository TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  committing_digest TEXT
) WITHOUT ROWID;
`;

interface ManifestRow {
  digest: string;
  media_type: string;
  size: number;
  content: Buffer;
  subject_digest: string | null;
  artifact_type: string | null;
  created_at: number;
}

interface UploadRow {
  id: string;
  repository: string;
  created_at: number;
  updated_at: number;
  committing_digest: string | null;
}

export class SqliteMetaStore implements MetaStore {
  private readonly db: Database.Database;
  private readonly statements: ReturnType<SqliteMetaStore["prepare"]>;
  private readonly leases: SqliteLeases;
  /** Foreign-layer bookkeeping (sources per manifest, proofs, proxy cache index): sqlite-foreign.ts. */
  private readonly foreign: SqliteForeignLayers;

  constructor(path: string) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma("synchronous = FULL");
    // Several worker processes share this file. Writers wait for each other
    // (busy_timeout), and every write transaction is BEGIN IMMEDIATE: a
    // deferred one that reads and then writes gets SQLITE_BUSY at once when
    // another process wrote meanwhile, without waiting.
    this.db.pragma("busy_timeout = 10000");
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("foreign_keys = OFF");
    this.db.exec(SCHEMA);
    migrateUploads(this.db);
    migrateForeignLayers(this.db);
    this.statements = this.prepare();
    this.leases = new SqliteLeases(path, this.db);
    this.foreign = new SqliteForeignLayers(this.db);
  }

  private prepare() {
    const db = this.db;
    return {
      repositoryId: db.prepare<[string], { id: number }>("SELECT id FROM repositories WHERE name = ?"),
      insertRepository: db.prepare<[string, number]>("INSERT OR IGNORE INTO repositories (name, created_at) VALUES (?, ?)"),
      repositoryHasContent: db.prepare<[string], { present: number }>(
        `SELECT 1 AS present FROM repositories r WHERE r.name = ? AND (
           EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) OR
           EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repository_id = r.id))`,
      ),
      // Listings pluck the single column: no row object per name (4x faster at 10,000 rows).
      listRepositories: db.prepare<[string, number], string>(
        `SELECT r.name FROM repositories r
         WHERE r.name > ? AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
         ORDER BY r.name LIMIT ?`,
      ).pluck(),
      upsertBlob: db.prepare<[string, number, number]>("INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)"),
      linkBlob: db.prepare<[number, string, number]>(
        `INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (?, ?, ?)
         ON CONFLICT (repository_id, digest) DO UPDATE SET linked_at = excluded.linked_at`,
      ),
      linkedBlob: db.prepare<[string, string], { size: number }>(
        `SELECT b.size FROM repositories r
         JOIN repository_blobs rb ON rb.repository_id = r.id
         JOIN blobs b ON b.digest = rb.digest
         WHERE r.name = ? AND rb.digest = ?`,
      ),
      unlinkBlob: db.prepare<[number, string]>("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?"),
      blobSize: db.prepare<[string], { size: number }>("SELECT size FROM blobs WHERE digest = ?"),
      repositoriesWithBlob: db.prepare<[string, number], { name: string }>(
        `SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
         WHERE rb.digest = ? ORDER BY r.name LIMIT ?`,
      ),
      hasLinkedBlob: db.prepare<[number, string], { present: number }>(
        "SELECT 1 AS present FROM repository_blobs WHERE repository_id = ? AND digest = ?",
      ),
      hasManifest: db.prepare<[number, string], { present: number }>(
        "SELECT 1 AS present FROM manifests WHERE repository_id = ? AND digest = ?",
      ),
      insertManifest: db.prepare<[number, string, string, number, Buffer, string | null, string | null, string | null, number]>(
        `INSERT OR IGNORE INTO manifests
           (repository_id, digest, media_type, size, content, subject_digest, artifact_type, annotations, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertReference: db.prepare<[number, string, string, string]>(
        "INSERT OR IGNORE INTO manifest_references (repository_id, manifest_digest, kind, child_digest) VALUES (?, ?, ?, ?)",
      ),
      upsertTag: db.prepare<[number, string, string, number]>(
        `INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at`,
      ),
      getManifest: db.prepare<[string, string], ManifestRow>(
        `SELECT m.digest, m.media_type, m.size, m.content, m.subject_digest, m.artifact_type, m.created_at
         FROM repositories r JOIN manifests m ON m.repository_id = r.id WHERE r.name = ? AND m.digest = ?`,
      ),
      getTaggedManifest: db.prepare<[string, string], ManifestRow>(
        `SELECT m.digest, m.media_type, m.size, m.content, m.subject_digest, m.artifact_type, m.created_at
         FROM repositories r
         JOIN tags t ON t.repository_id = r.id
         JOIN manifests m ON m.repository_id = r.id AND m.digest = t.manifest_digest
         WHERE r.name = ? AND t.name = ?`,
      ),
      deleteManifest: db.prepare<[number, string]>("DELETE FROM manifests WHERE repository_id = ? AND digest = ?"),
      deleteTagsOf: db.prepare<[number, string]>("DELETE FROM tags WHERE repository_id = ? AND manifest_digest = ?"),
      foreignRefsOf: db.prepare<[number, string], { child_digest: string }>(
        "SELECT child_digest FROM manifest_references WHERE repository_id = ? AND manifest_digest = ? AND kind = 'foreign'",
      ),
      deleteReferencesOf: db.prepare<[number, string]>(
        "DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?",
      ),
      deleteTag: db.prepare<[number, string]>("DELETE FROM tags WHERE repository_id = ? AND name = ?"),
      listTags: db.prepare<[string, string, number], string>(
        `SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id
         WHERE r.name = ? AND t.name > ? ORDER BY t.name LIMIT ?`,
      ).pluck(),
      listReferrers: db.prepare<[string, string], { digest: string; media_type: string; size: number; artifact_type: string | null; annotations: string | null }>(
        `SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
         FROM repositories r JOIN manifests m ON m.repository_id = r.id
         WHERE r.name = ? AND m.subject_digest = ? ORDER BY m.created_at, m.digest`,
      ),
      createUpload: db.prepare<[string, string, number, number]>(
        "INSERT INTO uploads (id, repository, created_at, updated_at, committing_digest) VALUES (?, ?, ?, ?, NULL)",
      ),
      getUpload: db.prepare<[string], UploadRow>("SELECT id, repository, created_at, updated_at, committing_digest FROM uploads WHERE id = ?"),
      countUploads: db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM uploads"),
      markUploadCommitting: db.prepare<[string, string]>("UPDATE uploads SET committing_digest = ? WHERE id = ?"),
      committingUploads: db.prepare<[], UploadRow>(
        "SELECT id, repository, created_at, updated_at, committing_digest FROM uploads WHERE committing_digest IS NOT NULL",
      ),
      blobKnownOrCommitting: db.prepare<[string, string], { present: number }>(
        `SELECT 1 AS present WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?)
            OR EXISTS (SELECT 1 FROM uploads WHERE committing_digest = ?)`,
      ),
      touchUpload: db.prepare<[number, string]>("UPDATE uploads SET updated_at = ? WHERE id = ?"),
      deleteUpload: db.prepare<[string]>("DELETE FROM uploads WHERE id = ?"),
      // data_version changes when another connection (any process) commits;
      // total_changes() counts the rows this connection changed. Together they
      // change on every write that can be seen from here.
      // (Two statements: total_changes() alone needs no read transaction, and
      // the pair is cheaper than one select from the pragma_data_version table.)
      dataVersion: db.prepare<[], number>("PRAGMA data_version").pluck(),
      totalChanges: db.prepare<[], number>("SELECT total_changes()").pluck(),
      staleUploads: db.prepare<[number], UploadRow>(
        "SELECT id, repository, created_at, updated_at, committing_digest FROM uploads WHERE updated_at < ? ORDER BY updated_at",
      ),
    };
  }

  private repositoryId(name: string): number | undefined {
    return this.statements.repositoryId.get(name)?.id;
  }

  private ensureRepository(name: string): number {
    const existing = this.repositoryId(name);
    if (existing !== undefined) return existing;
    this.statements.insertRepository.run(name, Date.now());
    return this.repositoryId(name)!;
  }

  async repositoryExists(repository: string): Promise<boolean> {
    return this.statements.repositoryHasContent.get(repository) !== undefined;
  }

  async listRepositories(page: Page): Promise<string[]> {
    return this.statements.listRepositories.all(page.after ?? "", page.limit);
  }

  async linkBlob(repository: string, digest: string, size: number): Promise<void> {
    const now = Date.now();
    this.db.transaction(() => {
      const id = this.ensureRepository(repository);
      this.statements.upsertBlob.run(digest, size, now);
      this.statements.linkBlob.run(id, digest, now);
    }).immediate();
  }

  async linkedBlob(repository: string, digest: string): Promise<{ size: number } | null> {
    return this.statements.linkedBlob.get(repository, digest) ?? null;
  }

  async unlinkBlob(repository: string, digest: string): Promise<boolean> {
    const id = this.repositoryId(repository);
    if (id === undefined) return false;
    return this.statements.unlinkBlob.run(id, digest).changes > 0;
  }

  async blobSize(digest: string): Promise<number | null> {
    return this.statements.blobSize.get(digest)?.size ?? null;
  }

  async repositoriesWithBlob(digest: string, limit: number): Promise<string[]> {
    return this.statements.repositoriesWithBlob.all(digest, limit).map((row) => row.name);
  }

  async missingManifests(repository: string, digests: string[]): Promise<string[]> {
    const id = this.repositoryId(repository);
    if (id === undefined) return [...digests];
    return digests.filter((digest) => this.statements.hasManifest.get(id, digest) === undefined);
  }

  async putManifest(repository: string, manifest: ManifestWrite, tag?: string | readonly string[]): Promise<void> {
    const now = Date.now();
    const s = this.statements;
    this.db.transaction(() => {
      const id = this.ensureRepository(repository);
      const gone = [
        ...manifest.blobs.filter((digest) => s.hasLinkedBlob.get(id, digest) === undefined),
        ...manifest.manifests.filter((digest) => s.hasManifest.get(id, digest) === undefined),
      ];
      if (gone.length > 0) throw new MissingReferencesError(gone);
      s.insertManifest.run(
        id,
        manifest.digest,
        manifest.mediaType,
        manifest.content.length,
        manifest.content,
        manifest.subjectDigest,
        manifest.artifactType,
        manifest.annotations ? JSON.stringify(manifest.annotations) : null,
        now,
      );
      for (const blob of manifest.blobs) s.insertReference.run(id, manifest.digest, "blob", blob);
      for (const child of manifest.manifests) s.insertReference.run(id, manifest.digest, "manifest", child);
      for (const blob of manifest.absent?.blobs ?? []) s.insertReference.run(id, manifest.digest, "blob", blob);
      for (const child of manifest.absent?.manifests ?? []) s.insertReference.run(id, manifest.digest, "manifest", child);
      this.foreign.put(id, manifest.digest, manifest.foreignLayers, now);
      for (const name of typeof tag === "string" ? [tag] : (tag ?? [])) s.upsertTag.run(id, name, manifest.digest, now);
    }).immediate();
  }

  async getManifest(repository: string, digest: string): Promise<ManifestRecord | null> {
    const row = this.statements.getManifest.get(repository, digest);
    return row ? toManifestRecord(repository, row) : null;
  }

  async getTaggedManifest(repository: string, tag: string): Promise<ManifestRecord | null> {
    const row = this.statements.getTaggedManifest.get(repository, tag);
    return row ? toManifestRecord(repository, row) : null;
  }

  async deleteManifest(repository: string, digest: string): Promise<boolean> {
    const id = this.repositoryId(repository);
    if (id === undefined) return false;
    const s = this.statements;
    return this.db.transaction(() => {
      if (s.deleteManifest.run(id, digest).changes === 0) return false;
      s.deleteTagsOf.run(id, digest);
      const foreign = s.foreignRefsOf.all(id, digest).map((row) => row.child_digest);
      s.deleteReferencesOf.run(id, digest);
      this.foreign.afterManifestDeleted(id, digest, foreign);
      return true;
    }).immediate();
  }

  async deleteTag(repository: string, tag: string): Promise<boolean> {
    const id = this.repositoryId(repository);
    if (id === undefined) return false;
    return this.statements.deleteTag.run(id, tag).changes > 0;
  }

  async tagsOf(repository: string, digest: string): Promise<string[]> {
    const id = this.repositoryId(repository);
    if (id === undefined) return [];
    const rows = this.db.prepare<[number, string], { name: string }>("SELECT name FROM tags WHERE repository_id = ? AND manifest_digest = ? ORDER BY name").all(id, digest);
    return rows.map((row) => row.name);
  }

  async listTags(repository: string, page: Page): Promise<string[]> {
    return this.statements.listTags.all(repository, page.after ?? "", page.limit);
  }

  async listReferrers(repository: string, subjectDigest: string): Promise<ReferrerRecord[]> {
    return this.statements.listReferrers.all(repository, subjectDigest).map((row) => ({
      digest: row.digest,
      mediaType: row.media_type,
      size: row.size,
      artifactType: row.artifact_type,
      annotations: row.annotations ? (JSON.parse(row.annotations) as Record<string, string>) : null,
    }));
  }

  async getForeignLayer(repository: string, digest: string): Promise<ForeignLayerMark | null> {
    return this.foreign.get(repository, digest);
  }

  async listForeignLayers(repository?: string): Promise<ForeignLayerMark[]> {
    return this.foreign.list(repository);
  }

  async setForeignVerification(repository: string, digest: string, state: VerificationState, at: number, detail: unknown): Promise<void> {
    this.foreign.setVerification(repository, digest, state, at, detail);
  }

  async recordForeignProof(repository: string, digest: string, url: string, at: number): Promise<boolean> {
    return this.foreign.recordProof(repository, digest, url, at);
  }

  async foreignLayersOfManifest(repository: string, manifestDigest: string): Promise<ForeignLayerMark[]> {
    return this.foreign.ofManifest(repository, manifestDigest);
  }

  async getForeignCacheEntry(digest: string): Promise<ForeignCacheEntry | null> {
    return this.foreign.cacheEntry(digest);
  }

  async listForeignCache(): Promise<ForeignCacheEntry[]> {
    return this.foreign.listCache();
  }

  async putForeignCacheEntry(entry: { digest: string; size: number; fetchedAt: number; pinned: boolean }): Promise<void> {
    this.foreign.putCacheEntry(entry);
  }

  async touchForeignCacheEntry(digest: string, at: number): Promise<void> {
    this.foreign.touchCacheEntry(digest, at);
  }

  async deleteForeignCacheEntry(digest: string): Promise<void> {
    this.foreign.deleteCacheEntry(digest);
  }

  async evictForeignCache(maxBytes: number, expiredBefore: number): Promise<string[]> {
    return this.foreign.evictCache(maxBytes, expiredBefore);
  }

  // Federation additions (countForeignLayers, source health). Prepared on first use.
  private federationStatementsCache: ReturnType<SqliteMetaStore["prepareFederation"]> | undefined;

  private get federationStatements() {
    this.federationStatementsCache ??= this.prepareFederation();
    return this.federationStatementsCache;
  }

  private prepareFederation() {
    const db = this.db;
    return {
      countForeign: db.prepare<[string, string, string], { n: number }>(
        `SELECT COUNT(*) AS n FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id
         WHERE r.name = ? AND mr.kind = 'foreign' AND (mr.manifest_digest = ? OR mr.manifest_digest IN (
           SELECT c.child_digest FROM manifest_references c WHERE c.repository_id = r.id AND c.manifest_digest = ? AND c.kind = 'manifest'))`,
      ),
    };
  }

  async countForeignLayers(repository: string, manifestDigest: string): Promise<number> {
    return this.federationStatements.countForeign.get(repository, manifestDigest, manifestDigest)?.n ?? 0;
  }

  // The web UI's listings: src/metadata/sqlite-browse.ts. Prepared on first use.
  private browseQueries: SqliteBrowse | undefined;

  async listRepositorySummaries(page: { limit: number; after?: string; search?: string }, visible: (name: string) => boolean): Promise<RepositoryPage> {
    this.browseQueries ??= new SqliteBrowse(this.db);
    return this.browseQueries.repositories(page, visible);
  }

  async listTagDetails(repository: string, limit: number): Promise<TagDetail[]> {
    this.browseQueries ??= new SqliteBrowse(this.db);
    return this.browseQueries.tags(repository, limit);
  }

  // Source health per URL and the re-check claim row: src/metadata/sqlite-source-health.ts.
  private sourceHealthStore: Promise<SqliteSourceHealth> | undefined;

  private sourceHealth(): Promise<SqliteSourceHealth> {
    // Opened on first use: the one-time migration from per-host rows needs the layers' URLs.
    this.sourceHealthStore ??= SqliteSourceHealth.open(this.db, async () => (await this.listForeignLayers()).flatMap((mark) => mark.urls)).catch(
      (error: unknown) => {
        this.sourceHealthStore = undefined;
        throw error;
      },
    );
    return this.sourceHealthStore;
  }

  async recordSourceHealth(event: SourceHealthEvent): Promise<void> {
    (await this.sourceHealth()).record(event);
  }

  async listSourceHealth(): Promise<SourceHealthRecord[]> {
    return (await this.sourceHealth()).all();
  }

  async forgetSourceHealth(urls: string[]): Promise<void> {
    (await this.sourceHealth()).forgetUrls(urls);
  }

  async claimRecheckRound(holder: string, now: number, intervalMs: number, leaseMs: number): Promise<boolean> {
    return (await this.sourceHealth()).claimRound(holder, now, intervalMs, leaseMs);
  }

  async renewRecheckRound(holder: string, leaseUntil: number): Promise<boolean> {
    return (await this.sourceHealth()).renewRound(holder, leaseUntil);
  }

  async finishRecheckRound(holder: string, at: number, checked: number): Promise<void> {
    (await this.sourceHealth()).finishRound(holder, at, checked);
  }

  async lastRecheckRound(): Promise<RecheckRoundRecord | null> {
    return (await this.sourceHealth()).lastRound();
  }

  async changeToken(): Promise<string> {
    return `${this.statements.dataVersion.get()!}.${this.statements.totalChanges.get()!}`;
  }

  async createUpload(upload: UploadRecord): Promise<void> {
    this.statements.createUpload.run(upload.id, upload.repository, upload.createdAt, upload.updatedAt);
  }

  async getUpload(id: string): Promise<UploadRecord | null> {
    const row = this.statements.getUpload.get(id);
    return row ? toUpload(row) : null;
  }

  async touchUpload(id: string, at: number): Promise<void> {
    this.statements.touchUpload.run(at, id);
  }

  async deleteUpload(id: string): Promise<void> {
    this.statements.deleteUpload.run(id);
  }

  async staleUploads(updatedBefore: number): Promise<UploadRecord[]> {
    return this.statements.staleUploads.all(updatedBefore).map(toUpload);
  }

  async countUploads(): Promise<number> {
    return this.statements.countUploads.get()!.n;
  }

  async markUploadCommitting(id: string, digest: string): Promise<void> {
    this.statements.markUploadCommitting.run(digest, id);
  }

  async committingUploads(): Promise<UploadRecord[]> {
    return this.statements.committingUploads.all().map(toUpload);
  }

  async completeUpload(id: string, repository: string, digest: string, size: number): Promise<void> {
    const s = this.statements;
    const now = Date.now();
    this.db.transaction(() => {
      const repositoryId = this.ensureRepository(repository);
      s.upsertBlob.run(digest, size, now);
      s.linkBlob.run(repositoryId, digest, now);
      s.deleteUpload.run(id);
    }).immediate();
  }

  async untrackedBlobs(digests: string[]): Promise<string[]> {
    const s = this.statements;
    return digests.filter((digest) => s.blobKnownOrCommitting.get(digest, digest) === undefined);
  }

  async acquireLease(key: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.leases.tryAcquire(key, holder, ttlMs);
  }

  async renewLease(key: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.leases.extend(key, holder, ttlMs);
  }

  async releaseLease(key: string, holder: string): Promise<void> {
    this.leases.drop(key, holder);
  }

  async leaseHolder(key: string): Promise<{ holder: string; expiresAt: number } | null> {
    return this.leases.holderOf(key);
  }

  async collectGarbage(options: GcOptions): Promise<GcPlan> {
    const db = this.db;
    return db.transaction(() => {
      let manifestsDeleted = 0;
      if (options.untagged) {
        // Untagged manifests that nothing points at: no tag, no parent index, no subject they refer to.
        const untagged = db
          .prepare<[number], { repository_id: number; digest: string }>(
            `SELECT m.repository_id, m.digest FROM manifests m
             WHERE m.created_at < ?
               AND m.subject_digest IS NULL
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest)
               AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = m.repository_id
                                AND r.kind = 'manifest' AND r.child_digest = m.digest)`,
          )
          .all(options.olderThan);
        for (const row of untagged) {
          db.prepare("DELETE FROM manifests WHERE repository_id = ? AND digest = ?").run(row.repository_id, row.digest);
          db.prepare("DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?").run(row.repository_id, row.digest);
          manifestsDeleted++;
        }
        // Marks, per-manifest sources and proofs of the deleted manifests; pins of layers no repository references.
        this.foreign.collectGarbage();
      }
      // A link is garbage when it is old enough and no manifest of its repository references it.
      const linksDeleted = db
        .prepare<[number]>(
          `DELETE FROM repository_blobs WHERE linked_at < ? AND NOT EXISTS (
             SELECT 1 FROM manifest_references r WHERE r.repository_id = repository_blobs.repository_id
               AND r.kind = 'blob' AND r.child_digest = repository_blobs.digest)`,
        )
        .run(options.olderThan).changes;
      const orphanBlobs = db
        .prepare<[number], { digest: string }>(
          `SELECT b.digest FROM blobs b WHERE b.created_at < ?
             AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)`,
        )
        .all(options.olderThan)
        .map((row) => row.digest);
      return { manifestsDeleted, linksDeleted, orphanBlobs };
    }).immediate();
  }

  async forgetBlobs(digests: string[]): Promise<string[]> {
    const forgotten: string[] = [];
    const remove = this.db.prepare<[string, string]>(
      "DELETE FROM blobs WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = ?)",
    );
    this.db.transaction(() => {
      for (const digest of digests) if (remove.run(digest, digest).changes > 0) forgotten.push(digest);
    }).immediate();
    return forgotten;
  }

  async close(): Promise<void> {
    this.leases.close(this.db);
    this.db.close();
  }
}

function toManifestRecord(repository: string, row: ManifestRow): ManifestRecord {
  return {
    repository,
    digest: row.digest,
    mediaType: row.media_type,
    size: row.size,
    content: row.content,
    subjectDigest: row.subject_digest,
    artifactType: row.artifact_type,
    createdAt: row.created_at,
  };
}

function toUpload(row: UploadRow): UploadRecord {
  return {
    id: row.id,
    repository: row.repository,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    committingDigest: row.committing_digest,
  };
}

/** Databases created before committing_digest existed get the column once. */
function migrateUploads(db: Database.Database): void {
  const columns = db.prepare<[], { name: string }>("SELECT name FROM pragma_table_info('uploads')").all();
  if (!columns.some((column) => column.name === "committing_digest")) {
    db.exec("ALTER TABLE uploads ADD COLUMN committing_digest TEXT");
  }
}

/**
 * Leases in their own database file (`<metadata>.leases`) with synchronous =
 * NORMAL: a lease is worth nothing after a crash (its holder is gone), so its
 * writes need no fsync, and every PATCH, PUT and blob commit takes one. WAL
 * keeps the file consistent either way. The clock is this machine's; replicas on several
 * machines need a store whose clock they share (PostgreSQL's now()).
 */
class SqliteLeases {
  private readonly db: Database.Database;
  private readonly acquire: Database.Statement<[string, string, number, number]>;
  private readonly renew: Database.Statement<[number, string, string]>;
  private readonly release: Database.Statement<[string, string]>;
  private readonly holder: Database.Statement<[string], { holder: string; expires_at: number }>;

  constructor(path: string, main: Database.Database) {
    // A file of their own: SQLite has one writer at a time per database, and
    // lease writes queued behind metadata commits (each an fsync) cost small
    // pushes 10-20% of their throughput when they shared the file.
    this.db = path === ":memory:" ? main : new Database(`${path}.leases`);
    if (this.db !== main) {
      this.db.pragma("busy_timeout = 10000");
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
    }
    this.db.exec("CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID");
    this.acquire = this.db.prepare(
      `INSERT INTO leases (key, holder, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
       WHERE leases.holder = excluded.holder OR leases.expires_at <= ?`,
    );
    this.renew = this.db.prepare("UPDATE leases SET expires_at = ? WHERE key = ? AND holder = ?");
    this.release = this.db.prepare("DELETE FROM leases WHERE key = ? AND holder = ?");
    this.holder = this.db.prepare("SELECT holder, expires_at FROM leases WHERE key = ?");
  }

  tryAcquire(key: string, holder: string, ttlMs: number): boolean {
    const now = Date.now();
    return this.acquire.run(key, holder, now + ttlMs, now).changes > 0;
  }

  extend(key: string, holder: string, ttlMs: number): boolean {
    return this.renew.run(Date.now() + ttlMs, key, holder).changes > 0;
  }

  drop(key: string, holder: string): void {
    this.release.run(key, holder);
  }

  holderOf(key: string): { holder: string; expiresAt: number } | null {
    const row = this.holder.get(key);
    return row ? { holder: row.holder, expiresAt: row.expires_at } : null;
  }

  close(main: Database.Database): void {
    if (this.db !== main) this.db.close();
  }
}
