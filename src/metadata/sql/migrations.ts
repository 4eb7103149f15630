/**
 * The metadata schema, as numbered migrations written with Kysely's schema
 * builder: one definition for SQLite and PostgreSQL. `ferry_schema` holds the
 * version a database was brought to.
 *
 * - A database at an older version is migrated at start-up, inside one
 *   transaction that no other process runs beside (dialect.exclusive: BEGIN
 *   IMMEDIATE in SQLite, an advisory lock in PostgreSQL). A replica starting
 *   at the same moment waits, then finds the schema current.
 * - A database at a NEWER version than this code knows stops start-up
 *   (SchemaTooNewError): an older replica must not write into a schema it
 *   does not understand.
 * - Embedded installs from before versioning (SQLite without ferry_schema)
 *   upgrade in place: migration 1 creates only what is missing (IF NOT
 *   EXISTS), adds the columns older files lack, and carries their old
 *   bookkeeping over (per-manifest foreign sources, per-URL source health).
 *
 * Append new migrations; never edit one that has shipped.
 */
import { sql, type Kysely, type CreateTableBuilder } from "kysely";
import type { SqlDialect } from "./dialect.js";
import type { MetadataDatabase } from "./schema.js";
import { backfillForeignSources, SqlForeignLayers } from "./foreign.js";
import { LEGACY_HEALTH_TABLE, migrateLegacyHealth } from "./source-health.js";

interface Migration {
  version: number;
  name: string;
  up(db: Kysely<MetadataDatabase>, dialect: SqlDialect): Promise<void>;
}

export class SchemaTooNewError extends Error {
  constructor(
    readonly found: number,
    readonly known: number,
  ) {
    super(
      `the metadata database has schema version ${found}, newer than this Ferry understands (${known}): ` +
        `it was migrated by a newer Ferry. Run that version (or newer) here too; an older Ferry must not write into it`,
    );
  }
}

/** Loose typing for DDL: the builder's table types do not exist until the migration ran. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Ddl = Kysely<any>;

function table(db: Ddl, dialect: SqlDialect, name: string, keyOnly: boolean) {
  const builder = db.schema.createTable(name).ifNotExists();
  return { builder, finish: <T extends string, C extends string>(b: CreateTableBuilder<T, C>) => (keyOnly && dialect.withoutRowid ? b.modifyEnd(sql`without rowid`) : b) };
}

const migrations: Migration[] = [
  {
    version: 1,
    name: "registry metadata (repositories, blobs, manifests, tags, references, uploads, leases, federation)",
    async up(typed, dialect) {
      const db = typed as Ddl;
      const { text, int64, serial, bytes } = dialect.types;
      // Embedded databases from before versioning may hold some of these already.
      const uploadsExisted = await dialect.tableExists(db, "uploads");
      const sourcesExisted = await dialect.tableExists(db, "foreign_layer_sources");
      if (uploadsExisted && !(await dialect.columnExists(db, "uploads", "committing_digest"))) {
        await db.schema.alterTable("uploads").addColumn("committing_digest", text).execute();
      }

      const create = async (name: string, keyOnly: boolean, build: (b: CreateTableBuilder<string, string>) => CreateTableBuilder<string, string>) => {
        const { builder, finish } = table(db, dialect, name, keyOnly);
        await finish(build(builder)).execute();
      };
      await create("repositories", false, (t) =>
        t
          .addColumn("id", serial, (c) => c.primaryKey())
          .addColumn("name", text, (c) => c.notNull().unique())
          .addColumn("created_at", int64, (c) => c.notNull()),
      );
      await create("blobs", true, (t) =>
        t
          .addColumn("digest", text, (c) => c.primaryKey())
          .addColumn("size", int64, (c) => c.notNull())
          .addColumn("created_at", int64, (c) => c.notNull()),
      );
      await create("repository_blobs", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", text, (c) => c.notNull())
          .addColumn("linked_at", int64, (c) => c.notNull())
          .addPrimaryKeyConstraint("repository_blobs_pk", ["repository_id", "digest"]),
      );
      await db.schema.createIndex("repository_blobs_by_digest").ifNotExists().on("repository_blobs").columns(["digest", "repository_id"]).execute();
      await create("manifests", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", text, (c) => c.notNull())
          .addColumn("media_type", text, (c) => c.notNull())
          .addColumn("size", int64, (c) => c.notNull())
          .addColumn("content", bytes, (c) => c.notNull())
          .addColumn("subject_digest", text)
          .addColumn("artifact_type", text)
          .addColumn("annotations", text)
          .addColumn("created_at", int64, (c) => c.notNull())
          .addPrimaryKeyConstraint("manifests_pk", ["repository_id", "digest"]),
      );
      await db.schema
        .createIndex("manifests_by_subject")
        .ifNotExists()
        .on("manifests")
        .columns(["repository_id", "subject_digest"])
        .where(sql.ref("subject_digest"), "is not", null)
        .execute();
      await create("manifest_references", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("manifest_digest", text, (c) => c.notNull())
          .addColumn("kind", text, (c) => c.notNull())
          .addColumn("child_digest", text, (c) => c.notNull())
          .addCheckConstraint("manifest_references_kind", sql`kind in ('blob', 'manifest', 'foreign')`)
          .addPrimaryKeyConstraint("manifest_references_pk", ["repository_id", "manifest_digest", "kind", "child_digest"]),
      );
      await db.schema
        .createIndex("manifest_references_by_child")
        .ifNotExists()
        .on("manifest_references")
        .columns(["repository_id", "child_digest", "kind"])
        .execute();
      await create("tags", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("name", text, (c) => c.notNull())
          .addColumn("manifest_digest", text, (c) => c.notNull())
          .addColumn("updated_at", int64, (c) => c.notNull())
          .addPrimaryKeyConstraint("tags_pk", ["repository_id", "name"]),
      );
      await db.schema.createIndex("tags_by_manifest").ifNotExists().on("tags").columns(["repository_id", "manifest_digest"]).execute();
      await create("foreign_layers", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", text, (c) => c.notNull())
          .addColumn("media_type", text, (c) => c.notNull())
          .addColumn("size", int64, (c) => c.notNull())
          .addColumn("urls", text, (c) => c.notNull())
          .addColumn("verification", text, (c) => c.notNull())
          .addColumn("verified_at", int64)
          .addColumn("verification_detail", text)
          .addColumn("created_at", int64, (c) => c.notNull())
          .addPrimaryKeyConstraint("foreign_layers_pk", ["repository_id", "digest"]),
      );
      await create("uploads", true, (t) =>
        t
          .addColumn("id", text, (c) => c.primaryKey())
          .addColumn("repository", text, (c) => c.notNull())
          .addColumn("created_at", int64, (c) => c.notNull())
          .addColumn("updated_at", int64, (c) => c.notNull())
          .addColumn("committing_digest", text),
      );
      await create("foreign_layer_sources", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", text, (c) => c.notNull())
          .addColumn("manifest_digest", text, (c) => c.notNull())
          .addColumn("url", text, (c) => c.notNull())
          .addColumn("position", "integer", (c) => c.notNull())
          .addColumn("added_at", int64, (c) => c.notNull())
          .addPrimaryKeyConstraint("foreign_layer_sources_pk", ["repository_id", "digest", "manifest_digest", "url"]),
      );
      await db.schema
        .createIndex("foreign_layer_sources_by_manifest")
        .ifNotExists()
        .on("foreign_layer_sources")
        .columns(["repository_id", "manifest_digest"])
        .execute();
      await create("foreign_layer_proofs", true, (t) =>
        t
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", text, (c) => c.notNull())
          .addColumn("url", text, (c) => c.notNull())
          .addColumn("proven_at", int64, (c) => c.notNull())
          .addPrimaryKeyConstraint("foreign_layer_proofs_pk", ["repository_id", "digest", "url"]),
      );
      await create("foreign_cache", true, (t) =>
        t
          .addColumn("digest", text, (c) => c.primaryKey())
          .addColumn("size", int64, (c) => c.notNull())
          .addColumn("fetched_at", int64, (c) => c.notNull())
          .addColumn("last_access", int64, (c) => c.notNull())
          .addColumn("pinned", "integer", (c) => c.notNull().defaultTo(0)),
      );
      await db.schema.createIndex("foreign_cache_lru").ifNotExists().on("foreign_cache").columns(["pinned", "last_access"]).execute();
      await create("foreign_source_health", true, (t) =>
        t
          .addColumn("url", text, (c) => c.primaryKey())
          .addColumn("host", text, (c) => c.notNull())
          .addColumn("successes", "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("failures", "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("consecutive_failures", "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("recent", text, (c) => c.notNull().defaultTo(""))
          .addColumn("last_success_at", int64)
          .addColumn("last_failure_at", int64)
          .addColumn("last_error", text)
          .addColumn("last_latency_ms", int64)
          .addColumn("latency_total_ms", int64, (c) => c.notNull().defaultTo(0))
          .addColumn("latency_count", "integer", (c) => c.notNull().defaultTo(0)),
      );
      await create("foreign_recheck_rounds", true, (t) =>
        t
          .addColumn("name", text, (c) => c.primaryKey())
          .addColumn("holder", text, (c) => c.notNull())
          .addColumn("started_at", int64, (c) => c.notNull())
          .addColumn("finished_at", int64)
          .addColumn("lease_until", int64, (c) => c.notNull())
          .addColumn("checked", "integer", (c) => c.notNull().defaultTo(0)),
      );
      await createLeaseTable(db, dialect);

      if (!sourcesExisted) await backfillForeignSources(typed, new SqlForeignLayers(dialect));
      if (await dialect.tableExists(db, LEGACY_HEALTH_TABLE)) await migrateLegacyHealth(typed);
    },
  },
  {
    version: 2,
    name: "auth state shared by replicas (failed logins, token signing keys)",
    async up(typed, dialect) {
      const db = typed as Ddl;
      const { text, int64 } = dialect.types;
      // bigserial in PostgreSQL: an attacker's failures could run a 32-bit sequence out within weeks.
      await db.schema
        .createTable("login_failures")
        .ifNotExists()
        .addColumn("id", dialect.types.serial64, (c) => c.primaryKey())
        .addColumn("kind", text, (c) => c.notNull())
        .addColumn("key", text, (c) => c.notNull())
        .addColumn("at", int64, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("login_failures_by_key").ifNotExists().on("login_failures").columns(["kind", "key", "at"]).execute();
      await db.schema.createIndex("login_failures_by_time").ifNotExists().on("login_failures").column("at").execute();
      const { builder, finish } = table(db, dialect, "token_signing_keys", true);
      await finish(
        builder
          .addColumn("generation", "integer", (c) => c.primaryKey())
          .addColumn("kid", text, (c) => c.notNull().unique())
          .addColumn("algorithm", text, (c) => c.notNull())
          .addColumn("private_key", text, (c) => c.notNull())
          .addColumn("created_at", int64, (c) => c.notNull()),
      ).execute();
    },
  },
  {
    version: 3,
    name: "change log read by PostgreSQL replicas' listeners (cache invalidation)",
    async up(typed, dialect) {
      const db = typed as Ddl;
      const { text, int64 } = dialect.types;
      // One row per cache-relevant write, inserted inside the write's transaction; the NOTIFY that
      // announces it is sent after commit, and listeners poll this table for announcements a writer
      // never sent (it died in between): invalidation/listener.ts. Rows live a few minutes.
      // SQLite has the table too (one schema) but never writes it: its change token needs none.
      await db.schema
        .createTable("metadata_changes")
        .ifNotExists()
        .addColumn("id", dialect.types.serial64, (c) => c.primaryKey())
        // txid_current() of the writing transaction: polls read rows of transactions not finished at their last poll.
        .addColumn("xid", int64, (c) => c.notNull())
        .addColumn("payload", text, (c) => c.notNull())
        .addColumn("created_at", int64, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("metadata_changes_by_xid").ifNotExists().on("metadata_changes").column("xid").execute();
    },
  },
];

/** The version this code writes and understands. */
export const SCHEMA_VERSION = migrations[migrations.length - 1]!.version;

/** The lease table (SQLite also creates it in its own file: sqlite.ts). */
export async function createLeaseTable(db: Ddl, dialect: SqlDialect): Promise<void> {
  const { builder, finish } = table(db, dialect, "leases", true);
  await finish(
    builder
      .addColumn("key", dialect.types.text, (c) => c.primaryKey())
      .addColumn("holder", dialect.types.text, (c) => c.notNull())
      .addColumn("expires_at", dialect.types.int64, (c) => c.notNull()),
  ).execute();
}

export interface MigrationResult {
  from: number;
  to: number;
}

/**
 * Brings the database to SCHEMA_VERSION, or refuses one that is newer.
 * Safe to call from several processes at once.
 */
export async function migrate(db: Kysely<MetadataDatabase>, dialect: SqlDialect): Promise<MigrationResult> {
  // Checked before taking the lock too, so a newer schema is refused without waiting on anybody.
  await refuseNewer(db, dialect);
  return dialect.exclusive(db, async (trx) => {
    await (trx as Ddl).schema
      .createTable("ferry_schema")
      .ifNotExists()
      .addColumn("id", "integer", (c) => c.primaryKey())
      .addColumn("version", "integer", (c) => c.notNull())
      .addColumn("migrated_at", dialect.types.int64, (c) => c.notNull())
      .execute();
    const from = await schemaVersion(trx);
    if (from > SCHEMA_VERSION) throw new SchemaTooNewError(from, SCHEMA_VERSION);
    if (from === SCHEMA_VERSION) return { from, to: from };
    for (const migration of migrations) if (migration.version > from) await migration.up(trx, dialect);
    await trx
      .insertInto("ferry_schema")
      .values({ id: 1, version: SCHEMA_VERSION, migrated_at: Date.now() })
      .onConflict((oc) => oc.column("id").doUpdateSet({ version: SCHEMA_VERSION, migrated_at: Date.now() }))
      .execute();
    return { from, to: SCHEMA_VERSION };
  });
}

/** The database's schema version: 0 when it has none yet (empty, or an embedded database from before versioning). */
export async function schemaVersion(db: Kysely<MetadataDatabase>): Promise<number> {
  return (await db.selectFrom("ferry_schema").select("version").where("id", "=", 1).executeTakeFirst())?.version ?? 0;
}

async function refuseNewer(db: Kysely<MetadataDatabase>, dialect: SqlDialect): Promise<void> {
  if (!(await dialect.tableExists(db as Ddl, "ferry_schema"))) return;
  const found = await schemaVersion(db);
  if (found > SCHEMA_VERSION) throw new SchemaTooNewError(found, SCHEMA_VERSION);
}
