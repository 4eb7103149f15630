/**
 * A manifest push on PostgreSQL as ONE autocommit statement (data-modifying
 * CTEs): the reference checks with their FOR SHARE locks, the manifest row,
 * its references, the change-log row and the tag upserts. The transaction
 * path in sql/store.ts takes BEGIN, four statements and COMMIT, each a round
 * trip and ~0.1-0.2 ms of Ferry CPU in `pg`; on the 2-core test machine the
 * push load was bound by exactly that (docs/metadata.md, "What writes pay").
 *
 * The guarantees of the transaction path hold:
 * - Nothing is written unless every referenced blob link and child manifest
 *   is there: the `ok` row exists only when the locked counts match, and every
 *   write selects from `ok`. GC locks FOR UPDATE; a link it deleted while we
 *   waited is skipped by FOR SHARE (READ COMMITTED re-check), so the counts
 *   differ and the push is refused, as before.
 * - An existing manifest row (re-tagging) is locked by ON CONFLICT DO UPDATE
 *   ... WHERE false: PostgreSQL locks the conflicting row even when it
 *   committed after this statement's snapshot (a plain FOR SHARE would miss
 *   that row), updates nothing, and returns nothing, so `inserted` still says
 *   whether the row is new.
 * - The CTEs share one snapshot: `previous` reads the tags as they were
 *   before this statement's upsert.
 * A repository that does not exist yet, or foreign layers, take the
 * transaction path (store.ts): they are rare and need more statements.
 *
 * It runs as a named (prepared) statement: PostgreSQL parsed and planned the
 * eleven CTEs anew for every push otherwise, ~1 ms of its CPU per push on the
 * test machine. The text never changes (every value is a parameter).
 */
import type pg from "pg";
import { sql, type Kysely } from "kysely";
import type { ManifestWrite } from "./meta-store.js";
import type { MetadataDatabase } from "./sql/schema.js";
import { postgresDialect } from "./sql/dialect.js";

export interface OneStatementPut {
  /** undefined: the repository does not exist (nothing written). */
  repositoryId: number | undefined;
  /** Whether everything was written (all references present). */
  written: boolean;
  /** Whether the manifest row is new. */
  inserted: boolean;
  /** The referenced blob links and child manifests found (to name what was missing). */
  blobs: Set<string>;
  children: Set<string>;
  /** Per tag written: what it named before. */
  previous: Map<string, string | null>;
}

interface Row {
  id: number | null;
  written: boolean;
  inserted: boolean;
  blobs: string[];
  children: string[];
  previous_tags: string[];
  previous_digests: string[];
}

/**
 * `payloads`: the change-log payload without and with the catalog scope (a
 * new manifest row may be the repository's first); the statement picks one.
 */
export async function putManifestInOneStatement(
  db: Kysely<MetadataDatabase>,
  pool: pg.Pool,
  repository: string,
  manifest: ManifestWrite,
  tags: readonly string[],
  now: number,
  payloads: { plain: string; catalog: string },
): Promise<OneStatementPut> {
  const blobs = [...new Set(manifest.blobs)];
  const children = [...new Set(manifest.manifests)];
  // Sparse manifests (manifests.sparse, mirrors): references not held yet are recorded too.
  const blobRefs = [...new Set([...manifest.blobs, ...(manifest.absent?.blobs ?? [])])];
  const childRefs = [...new Set([...manifest.manifests, ...(manifest.absent?.manifests ?? [])])];
  const kinds = [...blobRefs.map(() => "blob"), ...childRefs.map(() => "manifest")];
  const annotations = manifest.annotations ? JSON.stringify(manifest.annotations) : null;
  const query = sql<Row>`
    with repo as (
      select id from repositories where name = ${repository}
    ), blobs as (
      select digest from repository_blobs where repository_id = (select id from repo) and digest = any(${blobs}::text[])
       order by digest for share
    ), children as (
      select digest from manifests where repository_id = (select id from repo) and digest = any(${children}::text[])
       order by digest for share
    ), ok as (
      select id from repo where (select count(*) from blobs) = ${blobs.length} and (select count(*) from children) = ${children.length}
    ), inserted as (
      insert into manifests (repository_id, digest, media_type, size, content, subject_digest, artifact_type, annotations, created_at)
      select id, ${manifest.digest}, ${manifest.mediaType}, ${manifest.content.length}, ${manifest.content}, ${manifest.subjectDigest},
             ${manifest.artifactType}, ${annotations}, ${now}
        from ok
      on conflict (repository_id, digest) do update set digest = excluded.digest where false
      returning digest
    ), refs as (
      insert into manifest_references (repository_id, manifest_digest, kind, child_digest)
      select ok.id, ${manifest.digest}, u.kind, u.child from ok, unnest(${kinds}::text[], ${[...blobRefs, ...childRefs]}::text[]) as u(kind, child)
      on conflict do nothing
    ), change as (
      insert into metadata_changes (xid, payload, created_at)
      select txid_current(), case when exists (select 1 from inserted) then ${payloads.catalog} else ${payloads.plain} end,
             ${postgresDialect.nowMs(now)}
        from ok
    ), previous as (
      select name, manifest_digest from tags where repository_id = (select id from ok) and name = any(${tags}::text[])
    ), upserted as (
      insert into tags (repository_id, name, manifest_digest, updated_at)
      select ok.id, t.name, ${manifest.digest}, ${now} from ok, unnest(${tags}::text[]) as t(name)
      on conflict (repository_id, name) do update set manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at
    )
    select (select id from repo) as id,
           exists (select 1 from ok) as written,
           exists (select 1 from inserted) as inserted,
           array(select digest from blobs) as blobs,
           array(select digest from children) as children,
           array(select name from previous order by name) as previous_tags,
           array(select manifest_digest from previous order by name) as previous_digests`.compile(db);
  const { rows } = await pool.query<Row>({ name: "ferry_put_manifest", text: query.sql, values: [...query.parameters] });
  const row = rows[0]!;
  const previous = new Map<string, string | null>(tags.map((name) => [name, null]));
  row.previous_tags.forEach((name, i) => previous.set(name, row.previous_digests[i] ?? null));
  return {
    repositoryId: row.id ?? undefined,
    written: row.written,
    inserted: row.inserted,
    blobs: new Set(row.blobs),
    children: new Set(row.children),
    previous,
  };
}
