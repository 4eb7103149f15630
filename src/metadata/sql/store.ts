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
  LoginFailureKind,
  ManifestRecord,
  ManifestWrite,
  MetaStore,
  PutManifestResult,
  Page,
  RecheckRoundRecord,
  ReferrerRecord,
  RepositoryPage,
  SourceHealthEvent,
  SourceHealthRecord,
  SigningKeyRecord,
  TagDetail,
  UploadRecord,
  VerificationState,
} from "../meta-store.js";
import type { SqlDialect } from "./dialect.js";
import type { LeaseDatabase, MetadataDatabase } from "./schema.js";
import { SqlForeignLayers } from "./foreign.js";
import { SqlSourceHealth } from "./source-health.js";
import { SqlAuthState } from "./auth-state.js";
import { SqlBrowse } from "./browse.js";
import { QueryTemplate, type Param } from "./template.js";
import { ChangeSet } from "../invalidation/changes.js";

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

/** The hot queries, built and compiled once per store (template.ts). */
function templates(db: Db, leases: Kysely<LeaseDatabase>, dialect: SqlDialect) {
  const t = <R>(build: (db: Db, p: Param) => import("kysely").Compilable<R>) => new QueryTemplate<R, MetadataDatabase>(db, build);
  const l = <R>(build: (db: Kysely<LeaseDatabase>, p: Param) => import("kysely").Compilable<R>) => new QueryTemplate<R, LeaseDatabase>(leases, build);
  return {
    repositoryId: t((db, p) => db.selectFrom("repositories").select("id").where("name", "=", p("name"))),
    insertRepository: t((db, p) =>
      db.insertInto("repositories").values({ name: p("name"), created_at: p("now") }).onConflict((oc) => oc.column("name").doNothing()),
    ),
    insertBlob: t((db, p) =>
      db.insertInto("blobs").values({ digest: p("digest"), size: p("size"), created_at: p("now") }).onConflict((oc) => oc.column("digest").doNothing()),
    ),
    hasLink: t((db, p) => db.selectFrom("repository_blobs").select("digest").where("repository_id", "=", p("id")).where("digest", "=", p("digest"))),
    hasManifest: t((db, p) => db.selectFrom("manifests").select("digest").where("repository_id", "=", p("id")).where("digest", "=", p("digest"))),
    lockBlob: t((db, p) => db.selectFrom("blobs").select("digest").where("digest", "=", p("digest")).forShare()),
    upsertLink: t((db, p) =>
      db
        .insertInto("repository_blobs")
        .values({ repository_id: p("id"), digest: p("digest"), linked_at: p("now") })
        .onConflict((oc) => oc.columns(["repository_id", "digest"]).doUpdateSet((eb) => ({ linked_at: eb.ref("excluded.linked_at") }))),
    ),
    linkedBlob: t((db, p) =>
      db
        .selectFrom("repositories as r")
        .innerJoin("repository_blobs as rb", "rb.repository_id", "r.id")
        .innerJoin("blobs as b", "b.digest", "rb.digest")
        .select("b.size")
        .where("r.name", "=", p("repository"))
        .where("rb.digest", "=", p("digest")),
    ),
    getManifest: t((db, p) =>
      db
        .selectFrom("repositories as r")
        .innerJoin("manifests as m", "m.repository_id", "r.id")
        .select(MANIFEST_COLUMNS)
        .where("r.name", "=", p("repository"))
        .where("m.digest", "=", p("digest")),
    ),
    getTaggedManifest: t((db, p) =>
      db
        .selectFrom("repositories as r")
        .innerJoin("tags as t", "t.repository_id", "r.id")
        .innerJoin("manifests as m", (join) => join.onRef("m.repository_id", "=", "r.id").onRef("m.digest", "=", "t.manifest_digest"))
        .select(MANIFEST_COLUMNS)
        .where("r.name", "=", p("repository"))
        .where("t.name", "=", p("tag")),
    ),
    insertManifest: t((db, p) =>
      db
        .insertInto("manifests")
        .values({
          repository_id: p("id"),
          digest: p("digest"),
          media_type: p("mediaType"),
          size: p("size"),
          content: p("content"),
          subject_digest: p("subject"),
          artifact_type: p("artifactType"),
          annotations: p("annotations"),
          created_at: p("now"),
        })
        .onConflict((oc) => oc.columns(["repository_id", "digest"]).doNothing()),
    ),
    lockManifest: t((db, p) => db.selectFrom("manifests").select("digest").where("repository_id", "=", p("id")).where("digest", "=", p("digest")).forShare()),
    insertReference: t((db, p) =>
      db
        .insertInto("manifest_references")
        .values({ repository_id: p("id"), manifest_digest: p("manifest"), kind: p("kind"), child_digest: p("child") })
        .onConflict((oc) => oc.columns(["repository_id", "manifest_digest", "kind", "child_digest"]).doNothing()),
    ),
    upsertTag: t((db, p) =>
      db
        .insertInto("tags")
        .values({ repository_id: p("id"), name: p("name"), manifest_digest: p("digest"), updated_at: p("now") })
        .onConflict((oc) =>
          oc.columns(["repository_id", "name"]).doUpdateSet((eb) => ({
            manifest_digest: eb.ref("excluded.manifest_digest"),
            updated_at: eb.ref("excluded.updated_at"),
          })),
        ),
    ),
    tagDigest: t((db, p) => db.selectFrom("tags").select("manifest_digest").where("repository_id", "=", p("id")).where("name", "=", p("name"))),
    listTags: t((db, p) =>
      db
        .selectFrom("repositories as r")
        .innerJoin("tags as t", "t.repository_id", "r.id")
        .select("t.name")
        .where("r.name", "=", p("repository"))
        .where("t.name", ">", p("after"))
        .orderBy("t.name")
        .limit(p("limit")),
    ),
    listRepositories: t((db, p) =>
      db
        .selectFrom("repositories as r")
        .select("r.name")
        .where("r.name", ">", p("after"))
        .where((eb) => eb.exists(eb.selectFrom("manifests as m").select("m.digest").whereRef("m.repository_id", "=", "r.id")))
        .orderBy("r.name")
        .limit(p("limit")),
    ),
    repositoryExists: t((db, p) =>
      db
        .selectFrom("repositories as r")
        .select("r.id")
        .where("r.name", "=", p("repository"))
        .where((eb) =>
          eb.or([
            eb.exists(eb.selectFrom("manifests as m").select("m.digest").whereRef("m.repository_id", "=", "r.id")),
            eb.exists(eb.selectFrom("repository_blobs as b").select("b.digest").whereRef("b.repository_id", "=", "r.id")),
          ]),
        ),
    ),
    createUpload: t((db, p) =>
      db.insertInto("uploads").values({ id: p("id"), repository: p("repository"), created_at: p("createdAt"), updated_at: p("updatedAt"), committing_digest: null }),
    ),
    getUpload: t((db, p) => db.selectFrom("uploads").selectAll().where("id", "=", p("id"))),
    touchUpload: t((db, p) => db.updateTable("uploads").set({ updated_at: p("at") }).where("id", "=", p("id"))),
    deleteUpload: t((db, p) => db.deleteFrom("uploads").where("id", "=", p("id"))),
    markUploadCommitting: t((db, p) => db.updateTable("uploads").set({ committing_digest: p("digest") }).where("id", "=", p("id"))),
    acquireLease: l((db, p) =>
      db
        .insertInto("leases")
        .values({ key: p("key"), holder: p("holder"), expires_at: sql<number>`${dialect.nowMs(p("now"))} + ${p("ttl")}` })
        .onConflict((oc) =>
          oc
            .column("key")
            .doUpdateSet((eb) => ({ holder: eb.ref("excluded.holder"), expires_at: eb.ref("excluded.expires_at") }))
            .where((eb) => eb.or([eb("leases.holder", "=", eb.ref("excluded.holder")), eb("leases.expires_at", "<=", dialect.nowMs(p("now2")))])),
        ),
    ),
    renewLease: l((db, p) =>
      db
        .updateTable("leases")
        .set({ expires_at: sql<number>`${dialect.nowMs(p("now"))} + ${p("ttl")}` })
        .where("key", "=", p("key"))
        .where("holder", "=", p("holder")),
    ),
    releaseLease: l((db, p) => db.deleteFrom("leases").where("key", "=", p("key")).where("holder", "=", p("holder"))),
    leaseHolder: l((db, p) => db.selectFrom("leases").select(["holder", "expires_at"]).where("key", "=", p("key"))),
  };
}

export class SqlMetaStore implements MetaStore {
  protected readonly foreign: SqlForeignLayers;
  private readonly health: SqlSourceHealth;
  private readonly auth = new SqlAuthState();
  private readonly browse: SqlBrowse;
  private readonly q: ReturnType<typeof templates>;

  constructor(
    protected readonly db: Db,
    protected readonly dialect: SqlDialect,
    private readonly leases: Kysely<LeaseDatabase>,
  ) {
    this.foreign = new SqlForeignLayers(dialect);
    this.health = new SqlSourceHealth(dialect);
    this.browse = new SqlBrowse(dialect);
    this.q = templates(db, leases, dialect);
  }

  protected async repositoryId(on: Db, name: string): Promise<number | undefined> {
    return (await this.q.repositoryId.first(on, { name }))?.id;
  }

  protected async ensureRepository(on: Db, name: string): Promise<number> {
    const existing = await this.repositoryId(on, name);
    if (existing !== undefined) return existing;
    await this.q.insertRepository.execute(on, { name, now: Date.now() });
    return (await this.repositoryId(on, name))!;
  }

  /** The Kysely instance and dialect underneath (for `ferry migrate`'s table copy). */
  database(): { db: Db; dialect: SqlDialect } {
    return { db: this.db, dialect: this.dialect };
  }

  /**
   * A write transaction. On PostgreSQL a deadlock victim (40P01) or a
   * serialization failure (40001) is retried: the work is all database
   * statements, so running it again is safe.
   *
   * `changes` collects what the work changed for the read caches: recorded
   * inside the transaction just before commit (announce; PostgreSQL: a
   * change-log row), and settled after it (settle: this process's own entries
   * dropped, and on PostgreSQL the NOTIFY and the bounded wait for the other
   * replicas' acknowledgements), before the caller acknowledges.
   */
  protected async tx<T>(work: (trx: Transaction<MetadataDatabase>, changes: ChangeSet) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const changes = new ChangeSet();
      let result: T;
      try {
        result = await this.db.transaction().execute(async (trx) => {
          const value = await work(trx, changes);
          if (!changes.empty) await this.announce(trx, changes);
          return value;
        });
      } catch (error) {
        // A failed COMMIT may still have committed: this process drops the entries anyway (never harmful).
        if (!changes.empty) await this.settle(changes, false);
        const code = (error as { code?: unknown }).code;
        if (attempt >= RETRIES || (code !== "40P01" && code !== "40001")) throw error;
        continue;
      }
      if (!changes.empty) await this.settle(changes, true);
      return result;
    }
  }

  /**
   * The change-log payload of `changes`, for a statement of the write that
   * inserts the row itself (PostgreSQL), which announce then does not; null
   * when the store keeps no change log (SQLite).
   */
  protected recordChanges(_changes: ChangeSet): string | null {
    return null;
  }

  /** Announces `changes` inside the writing transaction (PostgreSQL: a change-log row). SQLite's change token needs nothing. */
  protected async announce(_trx: Transaction<MetadataDatabase>, _changes: ChangeSet): Promise<void> {}

  /** After the transaction ended (`committed` false: it failed, maybe after committing). */
  protected async settle(_changes: ChangeSet, _committed: boolean): Promise<void> {}

  async repositoryExists(repository: string): Promise<boolean> {
    return (await this.q.repositoryExists.first(this.db, { repository })) !== undefined;
  }


  async listRepositories(page: Page): Promise<string[]> {
    return (await this.q.listRepositories.rows(this.db, { after: page.after ?? "", limit: page.limit })).map((row) => row.name);
  }


  /** Records the blob and links it into the repository; inside the caller's transaction. */
  private async link(trx: Db, repository: string, digest: string, size: number, now: number): Promise<void> {
    const id = await this.ensureRepository(trx, repository);
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      await this.q.insertBlob.execute(trx, { digest, size, now });
      if (!this.dialect.rowLocks) break;
      // Held until commit: forgetBlobs (which locks FOR UPDATE) then sees our link. A blob row
      // forgotten between the insert and this lock is simply inserted again.
      if (await this.q.lockBlob.first(trx, { digest })) break;
    }
    await this.q.upsertLink.execute(trx, { id, digest, now });
  }

  async linkBlob(repository: string, digest: string, size: number): Promise<void> {
    const now = Date.now();
    await this.tx((trx) => this.link(trx, repository, digest, size, now));
  }

  async linkedBlob(repository: string, digest: string): Promise<{ size: number } | null> {
    const row = await this.q.linkedBlob.first(this.db, { repository, digest });
    return row ? { size: row.size } : null;
  }

  async linkedBlobs(repository: string, digests: readonly string[]): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    const unique = [...new Set(digests)];
    if (!this.dialect.rowLocks || unique.length === 1) {
      // SQLite (no round trips to save: the prepared lookup costs less than building an IN list), or one digest.
      for (const digest of unique) {
        const row = await this.q.linkedBlob.first(this.db, { repository, digest });
        if (row) sizes.set(digest, row.size);
      }
      return sizes;
    }
    for (const part of chunks(unique)) {
      const rows = await this.db
        .selectFrom("repositories as r")
        .innerJoin("repository_blobs as rb", "rb.repository_id", "r.id")
        .innerJoin("blobs as b", "b.digest", "rb.digest")
        .select(["rb.digest", "b.size"])
        .where("r.name", "=", repository)
        .where("rb.digest", "in", part)
        .execute();
      for (const row of rows) sizes.set(row.digest, row.size);
    }
    return sizes;
  }


  async unlinkBlob(repository: string, digest: string): Promise<boolean> {
    const id = await this.repositoryId(this.db, repository);
    if (id === undefined) return false;
    // The repository's last link and no manifest: it stops existing (a cached tag list must turn into NAME_UNKNOWN).
    return this.tx(async (trx, changes) => {
      if (changed(await trx.deleteFrom("repository_blobs").where("repository_id", "=", id).where("digest", "=", digest).executeTakeFirst()) === 0) return false;
      changes.repository(repository);
      return true;
    });
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
    if (!this.dialect.rowLocks) {
      // SQLite: a prepared lookup per digest costs less than building an IN list (no round trips to save).
      const lookup = table === "manifests" ? this.q.hasManifest : this.q.hasLink;
      for (const digest of new Set(digests)) if (await lookup.first(q, { id, digest })) found.add(digest);
      return found;
    }
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
    if (digests.length === 0) return [];
    const id = await this.repositoryId(this.db, repository);
    if (id === undefined) return [...digests];
    const found = await this.present(this.db, "manifests", id, digests, false);
    return digests.filter((digest) => !found.has(digest));
  }

  async putManifest(repository: string, manifest: ManifestWrite, tag?: string | readonly string[]): Promise<PutManifestResult> {
    const now = Date.now();
    const tags = [...new Set(typeof tag === "string" ? [tag] : (tag ?? []))];
    return this.tx(async (trx, changes) => {
      changes.repository(repository);
      const { id, blobs, children } = await this.lockReferences(trx, repository, manifest);
      const gone = [...manifest.blobs.filter((digest) => !blobs.has(digest)), ...manifest.manifests.filter((digest) => !children.has(digest))];
      if (gone.length > 0) throw new MissingReferencesError(gone);
      const inserted = await this.q.insertManifest.changes(trx, {
        id,
        digest: manifest.digest,
        mediaType: manifest.mediaType,
        size: manifest.content.length,
        content: manifest.content,
        subject: manifest.subjectDigest,
        artifactType: manifest.artifactType,
        annotations: manifest.annotations ? JSON.stringify(manifest.annotations) : null,
        now,
      });
      // A new manifest row may be the repository's first: the catalog lists repositories with manifests.
      if (inserted > 0) changes.catalog();
      // An existing (untagged) manifest being tagged again: GC must not delete it under us. (A row this
      // transaction inserted is invisible to GC until commit: no lock, no round trip.)
      if (this.dialect.rowLocks && inserted === 0) await this.q.lockManifest.execute(trx, { id, digest: manifest.digest });
      // Sparse manifests (manifests.sparse, mirrors): references not held yet are recorded too, so GC keeps them once they arrive.
      const references = [
        ...[...new Set([...manifest.blobs, ...(manifest.absent?.blobs ?? [])])].map((child) => ({ kind: "blob", child })),
        ...[...new Set([...manifest.manifests, ...(manifest.absent?.manifests ?? [])])].map((child) => ({ kind: "manifest", child })),
      ];
      await this.foreign.put(trx, id, manifest.digest, manifest.foreignLayers, now);
      if (this.dialect.name === "postgres") return { previous: await this.writeReferencesAndTags(trx, id, manifest.digest, references, tags, now, changes) };
      for (const { kind, child } of references) await this.q.insertReference.execute(trx, { id, manifest: manifest.digest, kind, child });
      const previous = new Map<string, string | null>();
      for (const name of tags) {
        previous.set(name, (await this.q.tagDigest.first(trx, { id, name }))?.manifest_digest ?? null);
        await this.q.upsertTag.execute(trx, { id, name, digest: manifest.digest, now });
      }
      return { previous };
    });
  }

  /**
   * The repository's id (created if missing) and which of the manifest's blob
   * links and child manifests it holds, locked FOR SHARE on PostgreSQL until
   * commit (GC, which locks FOR UPDATE, then sees this push's references).
   */
  private async lockReferences(trx: Db, repository: string, manifest: ManifestWrite): Promise<{ id: number; blobs: Set<string>; children: Set<string> }> {
    if (this.dialect.name !== "postgres") {
      const id = await this.ensureRepository(trx, repository);
      const blobs = manifest.blobs.length > 0 ? await this.present(trx, "repository_blobs", id, manifest.blobs, true) : new Set<string>();
      const children = manifest.manifests.length > 0 ? await this.present(trx, "manifests", id, manifest.manifests, true) : new Set<string>();
      return { id, blobs, children };
    }
    // PostgreSQL only, one statement for what took three round trips (the id, the blob links, the
    // child manifests); each sub-select locks its rows in digest order like present() does.
    const lookup = () =>
      sql<{ id: number; blobs: string[]; children: string[] }>`
        select r.id,
               array(select digest from repository_blobs where repository_id = r.id and digest = any(${[...new Set(manifest.blobs)]}::text[])
                     order by digest for share) as blobs,
               array(select digest from manifests where repository_id = r.id and digest = any(${[...new Set(manifest.manifests)]}::text[])
                     order by digest for share) as children
          from repositories r where r.name = ${repository}`.execute(trx);
    let row = (await lookup()).rows[0];
    if (!row) {
      await this.q.insertRepository.execute(trx, { name: repository, now: Date.now() });
      row = (await lookup()).rows[0]!;
    }
    return { id: row.id, blobs: new Set(row.blobs), children: new Set(row.children) };
  }

  /**
   * PostgreSQL only: the manifest's references, its change-log row and the
   * tag upserts in one statement (data-modifying CTEs) instead of one round
   * trip per reference, per tag and for the change row; returns what each tag
   * named before (the CTEs share one snapshot, so `previous` sees the tags as
   * they were before this statement's upsert).
   */
  private async writeReferencesAndTags(
    trx: Db,
    id: number,
    digest: string,
    references: ReadonlyArray<{ kind: string; child: string }>,
    tags: readonly string[],
    now: number,
    changes: ChangeSet,
  ): Promise<Map<string, string | null>> {
    // The last statement of the write: the change set is complete.
    const payload = this.recordChanges(changes);
    const { rows } = await sql<{ name: string; manifest_digest: string }>`
      with refs as (
        insert into manifest_references (repository_id, manifest_digest, kind, child_digest)
        select ${id}, ${digest}, u.kind, u.child from unnest(${references.map((r) => r.kind)}::text[], ${references.map((r) => r.child)}::text[]) as u(kind, child)
        on conflict do nothing
      ), change as (
        insert into metadata_changes (xid, payload, created_at)
        select txid_current(), ${payload}::text, ${this.dialect.nowMs(now)} where ${payload}::text is not null
      ), previous as (
        select name, manifest_digest from tags where repository_id = ${id} and name = any(${tags}::text[])
      ), upserted as (
        insert into tags (repository_id, name, manifest_digest, updated_at)
        select ${id}, t.name, ${digest}, ${now} from unnest(${tags}::text[]) as t(name)
        on conflict (repository_id, name) do update set manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at
      )
      select name, manifest_digest from previous`.execute(trx);
    const previous = new Map<string, string | null>(tags.map((name) => [name, null]));
    for (const row of rows) previous.set(row.name, row.manifest_digest);
    return previous;
  }
  async getManifest(repository: string, digest: string): Promise<ManifestRecord | null> {
    const row = await this.q.getManifest.first(this.db, { repository, digest });
    return row ? toManifestRecord(repository, row) : null;
  }


  async getTaggedManifest(repository: string, tag: string): Promise<ManifestRecord | null> {
    const row = await this.q.getTaggedManifest.first(this.db, { repository, tag });
    return row ? toManifestRecord(repository, row) : null;
  }


  async deleteManifest(repository: string, digest: string): Promise<boolean> {
    const id = await this.repositoryId(this.db, repository);
    if (id === undefined) return false;
    return this.tx(async (trx, changes) => {
      if (changed(await trx.deleteFrom("manifests").where("repository_id", "=", id).where("digest", "=", digest).executeTakeFirst()) === 0) return false;
      changes.repository(repository);
      changes.catalog();
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
    const id = await this.repositoryId(this.db, repository);
    if (id === undefined) return false;
    return this.tx(async (trx, changes) => {
      if (changed(await trx.deleteFrom("tags").where("repository_id", "=", id).where("name", "=", tag).executeTakeFirst()) === 0) return false;
      changes.repository(repository);
      return true;
    });
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
    return (await this.q.listTags.rows(this.db, { repository, after: page.after ?? "", limit: page.limit })).map((row) => row.name);
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

  // --- auth state shared by replicas (auth-state.ts) ---

  async recordLoginFailure(kind: LoginFailureKind, key: string, at: number): Promise<void> {
    await this.auth.recordFailure(this.db, kind, key, at);
  }

  claimLoginAttempt(kind: LoginFailureKind, key: string, at: number, since: number, limit: number): Promise<number | null> {
    return this.tx((trx) => this.auth.claimAttempt(trx, this.dialect, kind, key, at, since, limit));
  }

  releaseLoginAttempt(id: number): Promise<void> {
    return this.auth.releaseAttempt(this.db, id);
  }

  loginFailureTimes(kind: LoginFailureKind, key: string, since: number, limit: number): Promise<number[]> {
    return this.auth.failureTimes(this.db, kind, key, since, limit);
  }

  pruneLoginFailures(before: number, maxRows: number): Promise<number> {
    return this.auth.prune(this.db, before, maxRows);
  }

  listSigningKeys(): Promise<SigningKeyRecord[]> {
    return this.auth.signingKeys(this.db);
  }

  addSigningKey(key: SigningKeyRecord): Promise<boolean> {
    return this.auth.addSigningKey(this.db, key);
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
    await this.q.createUpload.execute(this.db, { id: upload.id, repository: upload.repository, createdAt: upload.createdAt, updatedAt: upload.updatedAt });
  }


  async getUpload(id: string): Promise<UploadRecord | null> {
    const row = await this.q.getUpload.first(this.db, { id });
    return row ? toUpload(row) : null;
  }


  async touchUpload(id: string, at: number): Promise<void> {
    await this.q.touchUpload.execute(this.db, { id, at });
  }


  async deleteUpload(id: string): Promise<void> {
    await this.q.deleteUpload.execute(this.db, { id });
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
    await this.q.markUploadCommitting.execute(this.db, { id, digest });
  }


  async committingUploads(): Promise<UploadRecord[]> {
    const rows = await this.db.selectFrom("uploads").selectAll().where("committing_digest", "is not", null).execute();
    return rows.map(toUpload);
  }

  async completeUpload(id: string, repository: string, digest: string, size: number): Promise<void> {
    const now = Date.now();
    await this.tx(async (trx) => {
      await this.link(trx, repository, digest, size, now);
      await this.q.deleteUpload.execute(trx, { id });
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
    const now = Date.now();
    return (await this.q.acquireLease.changes(this.leases, { key, holder, ttl: ttlMs, now, now2: now })) > 0;
  }


  async renewLease(key: string, holder: string, ttlMs: number): Promise<boolean> {
    return (await this.q.renewLease.changes(this.leases, { key, holder, ttl: ttlMs, now: Date.now() })) > 0;
  }


  async releaseLease(key: string, holder: string): Promise<void> {
    await this.q.releaseLease.execute(this.leases, { key, holder });
  }


  async leaseHolder(key: string): Promise<{ holder: string; expiresAt: number } | null> {
    const row = await this.q.leaseHolder.first(this.leases, { key });
    return row ? { holder: row.holder, expiresAt: row.expires_at } : null;
  }


  // --- garbage collection ---

  async collectGarbage(options: GcOptions): Promise<GcPlan> {
    return this.tx(async (trx, changes) => {
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
      // Deleted manifests and links may span any number of repositories: one wide announcement.
      if (manifestsDeleted > 0 || linksDeleted > 0) changes.all();
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
