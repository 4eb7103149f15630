/**
 * The metadata store written once for SQLite and PostgreSQL (Kysely). The
 * drivers (../sqlite.ts, ../postgres.ts) open the connection, run
 * migrations.ts and add their change token; every query lives here and in
 * foreign.ts, source-health.ts and browse.ts beside it.
 *
 * Concurrency. SQLite runs one write transaction at a time (BEGIN IMMEDIATE
 * across processes, one connection per process). PostgreSQL runs them side
 * by side on a pool, so the checks that guard against garbage collection
 * take row locks instead of relying on serial execution:
 * - putManifest locks the links and child manifests it references FOR SHARE
 *   (and its own manifest row), then writes its references;
 * - collectGarbage locks its candidates FOR UPDATE and deletes them with a
 *   second statement whose snapshot (READ COMMITTED: one per statement)
 *   sees every reference committed while it waited.
 * Either the push commits first and GC then sees its references, or GC
 * commits first and the push's FOR SHARE finds the rows gone
 * (MissingReferencesError). SERIALIZABLE would also catch this write skew,
 * but GC's table scans would then abort concurrent pushes wholesale; the
 * locks only touch the rows both sides name.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import { MissingReferencesError } from "../meta-store.js";
import type {
  ForeignCacheEntry,
  ForeignLayerMark,
  GcOptions,
  GcPlan,
  ManifestRecord,
  ManifestWrite,
  MetaStore,
  Page,
  RecheckRoundRecord,
  ReferrerRecord,
  RepositoryPage,
  SourceHealthEvent,
  SourceHealthRecord,
  TagDetail,
  UploadRecord,
  VerificationState,
} from "../meta-store.js";
import type { SqlDialect } from "./dialect.js";
import type { LeaseDatabase, MetadataDatabase } from "./schema.js";
import { SqlForeignLayers } from "./foreign.js";
import { SqlSourceHealth } from "./source-health.js";
import { SqlBrowse } from "./browse.js";

export type Db = Kysely<MetadataDatabase>;

/** Digests per IN list: far below both dialects' parameter limits. */
const CHUNK = 500;

export function chunks<T>(items: readonly T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Rows changed by an insert, update or delete. */
export function changed(result: { numAffectedRows?: bigint; numUpdatedRows?: bigint; numDeletedRows?: bigint; numInsertedOrUpdatedRows?: bigint } | readonly { numDeletedRows?: bigint; numUpdatedRows?: bigint; numInsertedOrUpdatedRows?: bigint }[]): number {
  const one = Array.isArray(result) ? result[0] : result;
  const n = one?.numAffectedRows ?? one?.numUpdatedRows ?? one?.numDeletedRows ?? one?.numInsertedOrUpdatedRows ?? 0n;
  return Number(n);
}

export async function repositoryId(q: Db, name: string): Promise<number | undefined> {
  return (await q.selectFrom("repositories").select("id").where("name", "=", name).executeTakeFirst())?.id;
}

export async function ensureRepository(q: Db, name: string): Promise<number> {
  const existing = await repositoryId(q, name);
  if (existing !== undefined) return existing;
  await q.insertInto("repositories").values({ name, created_at: Date.now() }).onConflict((oc) => oc.column("name").doNothing()).execute();
  return (await repositoryId(q, name))!;
}

const MANIFEST_COLUMNS = ["m.digest", "m.media_type", "m.size", "m.content", "m.subject_digest", "m.artifact_type", "m.created_at"] as const;

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

/** How often a PostgreSQL transaction that lost a deadlock or serialization race is tried again. */
const RETRIES = 3;

export class SqlMetaStore implements MetaStore {
  protected readonly foreign: SqlForeignLayers;
  private readonly health: SqlSourceHealth;
  private readonly browse: SqlBrowse;

  constructor(
    protected readonly db: Db,
    protected readonly dialect: SqlDialect,
    private readonly leases: Kysely<LeaseDatabase>,
  ) {
    this.foreign = new SqlForeignLayers(dialect);
    this.health = new SqlSourceHealth(dialect);
    this.browse = new SqlBrowse(dialect);
  }

  /** The Kysely instance and dialect underneath (for `ferry migrate`'s table copy). */
  database(): { db: Db; dialect: SqlDialect } {
    return { db: this.db, dialect: this.dialect };
  }

  /**
   * A write transaction. On PostgreSQL a deadlock victim (40P01) or a
   * serialization failure (40001) is retried: the work is all database
   * statements, so running it again is safe.
   */
  protected async tx<T>(work: (trx: Transaction<MetadataDatabase>) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.db.transaction().execute(work);
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (attempt >= RETRIES || (code !== "40P01" && code !== "40001")) throw error;
      }
    }
  }

  async repositoryExists(repository: string): Promise<boolean> {
    const row = await this.db
      .selectFrom("repositories as r")
      .select("r.id")
      .where("r.name", "=", repository)
      .where((eb) =>
        eb.or([
          eb.exists(eb.selectFrom("manifests as m").select("m.digest").whereRef("m.repository_id", "=", "r.id")),
          eb.exists(eb.selectFrom("repository_blobs as b").select("b.digest").whereRef("b.repository_id", "=", "r.id")),
        ]),
      )
      .executeTakeFirst();
    return row !== undefined;
  }

  async listRepositories(page: Page): Promise<string[]> {
    const rows = await this.db
      .selectFrom("repositories as r")
      .select("r.name")
      .where("r.name", ">", page.after ?? "")
      .where((eb) => eb.exists(eb.selectFrom("manifests as m").select("m.digest").whereRef("m.repository_id", "=", "r.id")))
      .orderBy("r.name")
      .limit(page.limit)
      .execute();
    return rows.map((row) => row.name);
  }

  /** Records the blob and links it into the repository; inside the caller's transaction. */
  private async link(trx: Db, repository: string, digest: string, size: number, now: number): Promise<void> {
    const id = await ensureRepository(trx, repository);
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      await trx.insertInto("blobs").values({ digest, size, created_at: now }).onConflict((oc) => oc.column("digest").doNothing()).execute();
      if (!this.dialect.rowLocks) break;
      // Held until commit: forgetBlobs (which locks FOR UPDATE) then sees our link. A blob row
      // forgotten between the insert and this lock is simply inserted again.
      if (await trx.selectFrom("blobs").select("digest").where("digest", "=", digest).forShare().executeTakeFirst()) break;
    }
    await trx
      .insertInto("repository_blobs")
      .values({ repository_id: id, digest, linked_at: now })
      .onConflict((oc) => oc.columns(["repository_id", "digest"]).doUpdateSet((eb) => ({ linked_at: eb.ref("excluded.linked_at") })))
      .execute();
  }

  async linkBlob(repository: string, digest: string, size: number): Promise<void> {
    const now = Date.now();
    await this.tx((trx) => this.link(trx, repository, digest, size, now));
  }

  async linkedBlob(repository: string, digest: string): Promise<{ size: number } | null> {
    const row = await this.db
      .selectFrom("repositories as r")
      .innerJoin("repository_blobs as rb", "rb.repository_id", "r.id")
      .innerJoin("blobs as b", "b.digest", "rb.digest")
      .select("b.size")
      .where("r.name", "=", repository)
      .where("rb.digest", "=", digest)
      .executeTakeFirst();
    return row ? { size: row.size } : null;
  }

  async unlinkBlob(repository: string, digest: string): Promise<boolean> {
    const id = await repositoryId(this.db, repository);
    if (id === undefined) return false;
    return changed(await this.db.deleteFrom("repository_blobs").where("repository_id", "=", id).where("digest", "=", digest).executeTakeFirst()) > 0;
  }

  async blobSize(digest: string): Promise<number | null> {
    return (await this.db.selectFrom("blobs").select("size").where("digest", "=", digest).executeTakeFirst())?.size ?? null;
  }

  async repositoriesWithBlob(digest: string, limit: number): Promise<string[]> {
    const rows = await this.db
      .selectFrom("repository_blobs as rb")
      .innerJoin("repositories as r", "r.id", "rb.repository_id")
      .select("r.name")
      .where("rb.digest", "=", digest)
      .orderBy("r.name")
      .limit(limit)
      .execute();
    return rows.map((row) => row.name);
  }

  /** Which of `digests` are present in `table` for the repository (locked FOR SHARE on PostgreSQL when `lock`). */
  private async present(q: Db, table: "manifests" | "repository_blobs", id: number, digests: readonly string[], lock: boolean): Promise<Set<string>> {
    const found = new Set<string>();
    for (const part of chunks([...new Set(digests)].sort())) {
      const rows = await q
        .selectFrom(table)
        .select("digest")
        .where("repository_id", "=", id)
        .where("digest", "in", part)
        .orderBy("digest")
        .$if(lock && this.dialect.rowLocks, (qb) => qb.forShare())
        .execute();
      for (const row of rows) found.add(row.digest);
    }
    return found;
  }

  async missingManifests(repository: string, digests: string[]): Promise<string[]> {
    const id = await repositoryId(this.db, repository);
    if (id === undefined) return [...digests];
    if (digests.length === 0) return [];
    const found = await this.present(this.db, "manifests", id, digests, false);
    return digests.filter((digest) => !found.has(digest));
  }

  async putManifest(repository: string, manifest: ManifestWrite, tag?: string | readonly string[]): Promise<void> {
    const now = Date.now();
    const tags = typeof tag === "string" ? [tag] : [...(tag ?? [])];
    await this.tx(async (trx) => {
      const id = await ensureRepository(trx, repository);
      const blobs = manifest.blobs.length > 0 ? await this.present(trx, "repository_blobs", id, manifest.blobs, true) : new Set<string>();
      const children = manifest.manifests.length > 0 ? await this.present(trx, "manifests", id, manifest.manifests, true) : new Set<string>();
      const gone = [...manifest.blobs.filter((digest) => !blobs.has(digest)), ...manifest.manifests.filter((digest) => !children.has(digest))];
      if (gone.length > 0) throw new MissingReferencesError(gone);
      await trx
        .insertInto("manifests")
        .values({
          repository_id: id,
          digest: manifest.digest,
          media_type: manifest.mediaType,
          size: manifest.content.length,
          content: manifest.content,
          subject_digest: manifest.subjectDigest,
          artifact_type: manifest.artifactType,
          annotations: manifest.annotations ? JSON.stringify(manifest.annotations) : null,
          created_at: now,
        })
        .onConflict((oc) => oc.columns(["repository_id", "digest"]).doNothing())
        .execute();
      // An existing (untagged) manifest being tagged again: GC must not delete it under us.
      if (this.dialect.rowLocks) await this.present(trx, "manifests", id, [manifest.digest], true);
      const references = [
        ...manifest.blobs.map((child) => ({ kind: "blob" as const, child })),
        ...manifest.manifests.map((child) => ({ kind: "manifest" as const, child })),
      ];
      for (const part of chunks(references)) {
        await trx
          .insertInto("manifest_references")
          .values(part.map((r) => ({ repository_id: id, manifest_digest: manifest.digest, kind: r.kind, child_digest: r.child })))
          .onConflict((oc) => oc.columns(["repository_id", "manifest_digest", "kind", "child_digest"]).doNothing())
          .execute();
      }
      await this.foreign.put(trx, id, manifest.digest, manifest.foreignLayers, now);
      if (tags.length > 0) {
        await trx
          .insertInto("tags")
          .values([...new Set(tags)].map((name) => ({ repository_id: id, name, manifest_digest: manifest.digest, updated_at: now })))
          .onConflict((oc) =>
            oc.columns(["repository_id", "name"]).doUpdateSet((eb) => ({
              manifest_digest: eb.ref("excluded.manifest_digest"),
              updated_at: eb.ref("excluded.updated_at"),
            })),
          )
          .execute();
      }
    });
  }

  async getManifest(repository: string, digest: string): Promise<ManifestRecord | null> {
    const row = await this.db
      .selectFrom("repositories as r")
      .innerJoin("manifests as m", "m.repository_id", "r.id")
      .select(MANIFEST_COLUMNS)
      .where("r.name", "=", repository)
      .where("m.digest", "=", digest)
      .executeTakeFirst();
    return row ? toManifestRecord(repository, row) : null;
  }

  async getTaggedManifest(repository: string, tag: string): Promise<ManifestRecord | null> {
    const row = await this.db
      .selectFrom("repositories as r")
      .innerJoin("tags as t", "t.repository_id", "r.id")
      .innerJoin("manifests as m", (join) => join.onRef("m.repository_id", "=", "r.id").onRef("m.digest", "=", "t.manifest_digest"))
      .select(MANIFEST_COLUMNS)
      .where("r.name", "=", repository)
      .where("t.name", "=", tag)
      .executeTakeFirst();
    return row ? toManifestRecord(repository, row) : null;
  }

  async deleteManifest(repository: string, digest: string): Promise<boolean> {
    const id = await repositoryId(this.db, repository);
    if (id === undefined) return false;
    return this.tx(async (trx) => {
      if (changed(await trx.deleteFrom("manifests").where("repository_id", "=", id).where("digest", "=", digest).executeTakeFirst()) === 0) return false;
      await trx.deleteFrom("tags").where("repository_id", "=", id).where("manifest_digest", "=", digest).execute();
      const foreign = await trx
        .selectFrom("manifest_references")
        .select("child_digest")
        .where("repository_id", "=", id)
        .where("manifest_digest", "=", digest)
        .where("kind", "=", "foreign")
        .execute();
      await trx.deleteFrom("manifest_references").where("repository_id", "=", id).where("manifest_digest", "=", digest).execute();
      await this.foreign.afterManifestDeleted(
        trx,
        id,
        digest,
        foreign.map((row) => row.child_digest),
      );
      return true;
    });
  }

  async deleteTag(repository: string, tag: string): Promise<boolean> {
    const id = await repositoryId(this.db, repository);
    if (id === undefined) return false;
    return changed(await this.db.deleteFrom("tags").where("repository_id", "=", id).where("name", "=", tag).executeTakeFirst()) > 0;
  }

  async tagsOf(repository: string, digest: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom("repositories as r")
      .innerJoin("tags as t", "t.repository_id", "r.id")
      .select("t.name")
      .where("r.name", "=", repository)
      .where("t.manifest_digest", "=", digest)
      .orderBy("t.name")
      .execute();
    return rows.map((row) => row.name);
  }

  async listTags(repository: string, page: Page): Promise<string[]> {
    const rows = await this.db
      .selectFrom("repositories as r")
      .innerJoin("tags as t", "t.repository_id", "r.id")
      .select("t.name")
      .where("r.name", "=", repository)
      .where("t.name", ">", page.after ?? "")
      .orderBy("t.name")
      .limit(page.limit)
      .execute();
    return rows.map((row) => row.name);
  }

  async listReferrers(repository: string, subjectDigest: string): Promise<ReferrerRecord[]> {
    const rows = await this.db
      .selectFrom("repositories as r")
      .innerJoin("manifests as m", "m.repository_id", "r.id")
      .select(["m.digest", "m.media_type", "m.size", "m.artifact_type", "m.annotations"])
      .where("r.name", "=", repository)
      .where("m.subject_digest", "=", subjectDigest)
      .orderBy("m.created_at")
      .orderBy("m.digest")
      .execute();
    return rows.map((row) => ({
      digest: row.digest,
      mediaType: row.media_type,
      size: row.size,
      artifactType: row.artifact_type,
      annotations: row.annotations ? (JSON.parse(row.annotations) as Record<string, string>) : null,
    }));
  }

  // --- foreign layers (foreign.ts) ---

  getForeignLayer(repository: string, digest: string): Promise<ForeignLayerMark | null> {
    return this.foreign.get(this.db, repository, digest);
  }

  listForeignLayers(repository?: string): Promise<ForeignLayerMark[]> {
    return this.foreign.list(this.db, repository);
  }

  async setForeignVerification(repository: string, digest: string, state: VerificationState, at: number, detail: unknown): Promise<void> {
    await this.foreign.setVerification(this.db, repository, digest, state, at, detail);
  }

  recordForeignProof(repository: string, digest: string, url: string, at: number): Promise<boolean> {
    return this.foreign.recordProof(this.db, repository, digest, url, at);
  }

  foreignLayersOfManifest(repository: string, manifestDigest: string): Promise<ForeignLayerMark[]> {
    return this.foreign.ofManifest(this.db, repository, manifestDigest);
  }

  getForeignCacheEntry(digest: string): Promise<ForeignCacheEntry | null> {
    return this.foreign.cacheEntry(this.db, digest);
  }

  listForeignCache(): Promise<ForeignCacheEntry[]> {
    return this.foreign.listCache(this.db);
  }

  async putForeignCacheEntry(entry: { digest: string; size: number; fetchedAt: number; pinned: boolean }): Promise<void> {
    await this.foreign.putCacheEntry(this.db, entry);
  }

  async touchForeignCacheEntry(digest: string, at: number): Promise<void> {
    await this.db.updateTable("foreign_cache").set({ last_access: at }).where("digest", "=", digest).execute();
  }

  async deleteForeignCacheEntry(digest: string): Promise<void> {
    await this.db.deleteFrom("foreign_cache").where("digest", "=", digest).execute();
  }

  evictForeignCache(maxBytes: number, expiredBefore: number): Promise<string[]> {
    return this.tx((trx) => this.foreign.evictCache(trx, maxBytes, expiredBefore));
  }

  countForeignLayers(repository: string, manifestDigest: string): Promise<number> {
    return this.foreign.count(this.db, repository, manifestDigest);
  }

  // --- the web UI's listings (browse.ts) ---

  listRepositorySummaries(page: { limit: number; after?: string; search?: string }, visible: (name: string) => boolean): Promise<RepositoryPage> {
    return this.browse.repositories(this.db, page, visible);
  }

  listTagDetails(repository: string, limit: number): Promise<TagDetail[]> {
    return this.browse.tags(this.db, repository, limit);
  }

  // --- source health and re-check rounds (source-health.ts) ---

  async recordSourceHealth(event: SourceHealthEvent): Promise<void> {
    await this.health.record(this.db, event);
  }

  listSourceHealth(): Promise<SourceHealthRecord[]> {
    return this.health.all(this.db);
  }

  async forgetSourceHealth(urls: string[]): Promise<void> {
    if (urls.length === 0) return;
    await this.tx(async (trx) => {
      for (const part of chunks(urls)) await trx.deleteFrom("foreign_source_health").where("url", "in", part).execute();
    });
  }

  claimRecheckRound(holder: string, now: number, intervalMs: number, leaseMs: number): Promise<boolean> {
    return this.health.claimRound(this.db, holder, now, intervalMs, leaseMs);
  }

  renewRecheckRound(holder: string, leaseUntil: number): Promise<boolean> {
    return this.health.renewRound(this.db, holder, leaseUntil);
  }

  async finishRecheckRound(holder: string, at: number, checked: number): Promise<void> {
    await this.health.finishRound(this.db, holder, at, checked);
  }

  lastRecheckRound(): Promise<RecheckRoundRecord | null> {
    return this.health.lastRound(this.db);
  }

  // --- upload sessions ---

  async createUpload(upload: UploadRecord): Promise<void> {
    await this.db
      .insertInto("uploads")
      .values({ id: upload.id, repository: upload.repository, created_at: upload.createdAt, updated_at: upload.updatedAt, committing_digest: null })
      .execute();
  }

  async getUpload(id: string): Promise<UploadRecord | null> {
    const row = await this.db.selectFrom("uploads").selectAll().where("id", "=", id).executeTakeFirst();
    return row ? toUpload(row) : null;
  }

  async touchUpload(id: string, at: number): Promise<void> {
    await this.db.updateTable("uploads").set({ updated_at: at }).where("id", "=", id).execute();
  }

  async deleteUpload(id: string): Promise<void> {
    await this.db.deleteFrom("uploads").where("id", "=", id).execute();
  }

  async staleUploads(updatedBefore: number): Promise<UploadRecord[]> {
    const rows = await this.db.selectFrom("uploads").selectAll().where("updated_at", "<", updatedBefore).orderBy("updated_at").execute();
    return rows.map(toUpload);
  }

  async countUploads(): Promise<number> {
    const row = await this.db.selectFrom("uploads").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async markUploadCommitting(id: string, digest: string): Promise<void> {
    await this.db.updateTable("uploads").set({ committing_digest: digest }).where("id", "=", id).execute();
  }

  async committingUploads(): Promise<UploadRecord[]> {
    const rows = await this.db.selectFrom("uploads").selectAll().where("committing_digest", "is not", null).execute();
    return rows.map(toUpload);
  }

  async completeUpload(id: string, repository: string, digest: string, size: number): Promise<void> {
    const now = Date.now();
    await this.tx(async (trx) => {
      await this.link(trx, repository, digest, size, now);
      await trx.deleteFrom("uploads").where("id", "=", id).execute();
    });
  }

  async untrackedBlobs(digests: string[]): Promise<string[]> {
    const tracked = new Set<string>();
    for (const part of chunks(digests)) {
      for (const row of await this.db.selectFrom("blobs").select("digest").where("digest", "in", part).execute()) tracked.add(row.digest);
      const committing = await this.db.selectFrom("uploads").select("committing_digest").where("committing_digest", "in", part).execute();
      for (const row of committing) if (row.committing_digest) tracked.add(row.committing_digest);
    }
    return digests.filter((digest) => !tracked.has(digest));
  }

  // --- leases (SQLite keeps them in a file of their own: sqlite.ts) ---

  async acquireLease(key: string, holder: string, ttlMs: number): Promise<boolean> {
    const now = this.dialect.nowMs();
    const result = await this.leases
      .insertInto("leases")
      .values({ key, holder, expires_at: sql<number>`${now} + ${ttlMs}` })
      .onConflict((oc) =>
        oc
          .column("key")
          .doUpdateSet((eb) => ({ holder: eb.ref("excluded.holder"), expires_at: eb.ref("excluded.expires_at") }))
          .where((eb) => eb.or([eb("leases.holder", "=", eb.ref("excluded.holder")), eb("leases.expires_at", "<=", now)])),
      )
      .executeTakeFirst();
    return changed(result) > 0;
  }

  async renewLease(key: string, holder: string, ttlMs: number): Promise<boolean> {
    const result = await this.leases
      .updateTable("leases")
      .set({ expires_at: sql<number>`${this.dialect.nowMs()} + ${ttlMs}` })
      .where("key", "=", key)
      .where("holder", "=", holder)
      .executeTakeFirst();
    return changed(result) > 0;
  }

  async releaseLease(key: string, holder: string): Promise<void> {
    await this.leases.deleteFrom("leases").where("key", "=", key).where("holder", "=", holder).execute();
  }

  async leaseHolder(key: string): Promise<{ holder: string; expiresAt: number } | null> {
    const row = await this.leases.selectFrom("leases").select(["holder", "expires_at"]).where("key", "=", key).executeTakeFirst();
    return row ? { holder: row.holder, expiresAt: row.expires_at } : null;
  }

  // --- garbage collection ---

  async collectGarbage(options: GcOptions): Promise<GcPlan> {
    return this.tx(async (trx) => {
      let manifestsDeleted = 0;
      if (options.untagged) {
        // Untagged manifests that nothing points at: no tag, no parent index, no subject they refer to.
        const candidates = await trx
          .selectFrom("manifests as m")
          .select(["m.repository_id", "m.digest"])
          .where("m.created_at", "<", options.olderThan)
          .where("m.subject_digest", "is", null)
          .where((eb) => eb.not(eb.exists(eb.selectFrom("tags as t").select("t.name").whereRef("t.repository_id", "=", "m.repository_id").whereRef("t.manifest_digest", "=", "m.digest"))))
          .where((eb) =>
            eb.not(
              eb.exists(
                eb
                  .selectFrom("manifest_references as r")
                  .select("r.child_digest")
                  .whereRef("r.repository_id", "=", "m.repository_id")
                  .where("r.kind", "=", "manifest")
                  .whereRef("r.child_digest", "=", "m.digest"),
              ),
            ),
          )
          .orderBy("m.repository_id")
          .orderBy("m.digest")
          .$if(this.dialect.rowLocks, (qb) => qb.forUpdate())
          .execute();
        for (const [id, digests] of byRepository(candidates)) {
          for (const part of chunks(digests)) {
            // Checked again by a statement that sees what committed while the locks were awaited.
            const deleted = await trx
              .deleteFrom("manifests")
              .where("repository_id", "=", id)
              .where("digest", "in", part)
              .where((eb) =>
                eb.not(eb.exists(eb.selectFrom("tags as t").select("t.name").whereRef("t.repository_id", "=", "manifests.repository_id").whereRef("t.manifest_digest", "=", "manifests.digest"))),
              )
              .where((eb) =>
                eb.not(
                  eb.exists(
                    eb
                      .selectFrom("manifest_references as r")
                      .select("r.child_digest")
                      .whereRef("r.repository_id", "=", "manifests.repository_id")
                      .where("r.kind", "=", "manifest")
                      .whereRef("r.child_digest", "=", "manifests.digest"),
                  ),
                ),
              )
              .returning("digest")
              .execute();
            if (deleted.length === 0) continue;
            manifestsDeleted += deleted.length;
            await trx
              .deleteFrom("manifest_references")
              .where("repository_id", "=", id)
              .where(
                "manifest_digest",
                "in",
                deleted.map((row) => row.digest),
              )
              .execute();
          }
        }
        // Marks, per-manifest sources and proofs of the deleted manifests; pins of layers no repository references.
        await this.foreign.collectGarbage(trx);
      }
      // A link is garbage when it is old enough and no manifest of its repository references it.
      const links = await trx
        .selectFrom("repository_blobs as rb")
        .select(["rb.repository_id", "rb.digest"])
        .where("rb.linked_at", "<", options.olderThan)
        .where((eb) => eb.not(eb.exists(referencesOf(eb, "rb"))))
        .orderBy("rb.repository_id")
        .orderBy("rb.digest")
        .$if(this.dialect.rowLocks, (qb) => qb.forUpdate())
        .execute();
      let linksDeleted = 0;
      for (const [id, digests] of byRepository(links)) {
        for (const part of chunks(digests)) {
          const result = await trx
            .deleteFrom("repository_blobs")
            .where("repository_id", "=", id)
            .where("digest", "in", part)
            .where("linked_at", "<", options.olderThan)
            .where((eb) => eb.not(eb.exists(referencesOf(eb, "repository_blobs"))))
            .executeTakeFirst();
          linksDeleted += changed(result);
        }
      }
      const orphans = await trx
        .selectFrom("blobs as b")
        .select("b.digest")
        .where("b.created_at", "<", options.olderThan)
        .where((eb) => eb.not(eb.exists(eb.selectFrom("repository_blobs as rb").select("rb.digest").whereRef("rb.digest", "=", "b.digest"))))
        .execute();
      return { manifestsDeleted, linksDeleted, orphanBlobs: orphans.map((row) => row.digest) };
    });
  }

  async forgetBlobs(digests: string[]): Promise<string[]> {
    if (digests.length === 0) return [];
    const forgotten = await this.tx(async (trx) => {
      const gone = new Set<string>();
      for (const part of chunks([...new Set(digests)].sort())) {
        if (this.dialect.rowLocks) {
          await trx.selectFrom("blobs").select("digest").where("digest", "in", part).orderBy("digest").forUpdate().execute();
        }
        const rows = await trx
          .deleteFrom("blobs")
          .where("digest", "in", part)
          .where((eb) => eb.not(eb.exists(eb.selectFrom("repository_blobs as rb").select("rb.digest").whereRef("rb.digest", "=", "blobs.digest"))))
          .returning("digest")
          .execute();
        for (const row of rows) gone.add(row.digest);
      }
      return gone;
    });
    return digests.filter((digest) => forgotten.has(digest));
  }

  async close(): Promise<void> {
    await this.db.destroy();
    if ((this.leases as unknown) !== (this.db as unknown)) await this.leases.destroy();
  }
}

/** The manifest references that keep the link row `alias` alive. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function referencesOf(eb: any, alias: "rb" | "repository_blobs") {
  return eb
    .selectFrom("manifest_references as r")
    .select("r.child_digest")
    .whereRef("r.repository_id", "=", `${alias}.repository_id`)
    .where("r.kind", "=", "blob")
    .whereRef("r.child_digest", "=", `${alias}.digest`);
}

function byRepository(rows: readonly { repository_id: number; digest: string }[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const row of rows) {
    const list = out.get(row.repository_id);
    if (list) list.push(row.digest);
    else out.set(row.repository_id, [row.digest]);
  }
  return out;
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
