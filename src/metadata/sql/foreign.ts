/**
 * The foreign-layer bookkeeping of the metadata store (federation), for both dialects:
 *
 * - `foreign_layer_sources`: one row per (repository, layer, manifest, URL).
 *   A layer's sources in a repository are the union of the URLs its manifests
 *   there name; a URL leaves with the last manifest that names it. The
 *   `foreign_layers.urls` column is kept equal to that union (first position
 *   in any manifest, then first seen), so every reader of marks sees it.
 * - `foreign_layer_proofs`: which of a repository's own URLs delivered bytes
 *   whose digest and size matched (a push-time `fetch` verification or a
 *   proxy fetch for that repository). Only a proof authorises serving cached
 *   bytes to the repository; a HEAD is never a proof.
 * - `foreign_cache`: the proxy cache's index (the bytes are in a blob store
 *   namespace). Shared by every process, so eviction is decided here.
 *
 * Methods that change several rows run inside the caller's transaction. On
 * PostgreSQL the mark row (foreign_layers) is written or locked first, so
 * two transactions recomputing one layer's URL union take turns.
 */
import { sql, type ExpressionBuilder } from "kysely";
import type { ForeignCacheEntry, ForeignLayerMark, ForeignLayerWrite, VerificationState } from "../meta-store.js";
import type { SqlDialect } from "./dialect.js";
import type { MetadataDatabase } from "./schema.js";
import { changed, chunks, type Db } from "./store.js";

interface ForeignRow {
  digest: string;
  media_type: string;
  size: number;
  urls: string;
  verification: VerificationState;
  verified_at: number | null;
  verification_detail: string | null;
  name: string;
  manifests: string | null;
  proven: string | null;
}

interface CacheRow {
  digest: string;
  size: number;
  fetched_at: number;
  last_access: number;
  pinned: number;
}

type MarkScope = ExpressionBuilder<MetadataDatabase & { r: MetadataDatabase["repositories"]; f: MetadataDatabase["foreign_layers"] }, "r" | "f">;

export class SqlForeignLayers {
  constructor(private readonly dialect: SqlDialect) {}

  /** The mark's columns with the manifests referencing it and its proven URLs (JSON arrays). */
  private markColumns(eb: MarkScope) {
    return [
      "f.digest",
      "f.media_type",
      "f.size",
      "f.urls",
      "f.verification",
      "f.verified_at",
      "f.verification_detail",
      "r.name",
      eb
        .selectFrom("manifest_references as mr")
        .select((e) => this.dialect.jsonArray(e.ref("mr.manifest_digest")).as("agg"))
        .whereRef("mr.repository_id", "=", "f.repository_id")
        .whereRef("mr.child_digest", "=", "f.digest")
        .where("mr.kind", "=", "foreign")
        .as("manifests"),
      eb
        .selectFrom("foreign_layer_proofs as p")
        .select((e) => this.dialect.jsonArray(e.ref("p.url")).as("agg"))
        .whereRef("p.repository_id", "=", "f.repository_id")
        .whereRef("p.digest", "=", "f.digest")
        .as("proven"),
    ] as const;
  }

  private marks(q: Db) {
    return q
      .selectFrom("repositories as r")
      .innerJoin("foreign_layers as f", "f.repository_id", "r.id")
      .select((eb) => this.markColumns(eb));
  }

  /** putManifest's foreign part; runs inside its transaction. */
  async put(trx: Db, repositoryId: number, manifestDigest: string, layers: ForeignLayerWrite[], now: number): Promise<void> {
    // One order for every writer: two pushes naming the same layers cannot lock them crosswise.
    for (const layer of [...layers].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0))) {
      const detail = layer.verificationDetail === undefined || layer.verificationDetail === null ? null : JSON.stringify(layer.verificationDetail);
      // First: the upsert locks the mark until commit (PostgreSQL), so the union below sees every other writer's sources.
      await trx
        .insertInto("foreign_layers")
        .values({
          repository_id: repositoryId,
          digest: layer.digest,
          media_type: layer.mediaType,
          size: layer.size,
          urls: "[]",
          verification: layer.verification,
          verified_at: layer.verifiedAt,
          verification_detail: detail,
          created_at: now,
        })
        .onConflict((oc) =>
          oc.columns(["repository_id", "digest"]).doUpdateSet((eb) => {
            const keepVerified = sql<boolean>`${eb.ref("excluded.verification")} = 'unverified' and ${eb.ref("foreign_layers.verification")} = 'verified'`;
            return {
              media_type: eb.ref("excluded.media_type"),
              size: eb.ref("excluded.size"),
              verification: sql`case when ${keepVerified} then ${eb.ref("foreign_layers.verification")} else ${eb.ref("excluded.verification")} end`,
              verified_at: sql`case when ${keepVerified} then ${eb.ref("foreign_layers.verified_at")}
                                else coalesce(${eb.ref("excluded.verified_at")}, ${eb.ref("foreign_layers.verified_at")}) end`,
              verification_detail: sql`case when ${keepVerified} then ${eb.ref("foreign_layers.verification_detail")}
                                        else coalesce(${eb.ref("excluded.verification_detail")}, ${eb.ref("foreign_layers.verification_detail")}) end`,
            };
          }),
        )
        .execute();
      await trx
        .insertInto("manifest_references")
        .values({ repository_id: repositoryId, manifest_digest: manifestDigest, kind: "foreign", child_digest: layer.digest })
        .onConflict((oc) => oc.columns(["repository_id", "manifest_digest", "kind", "child_digest"]).doNothing())
        .execute();
      if (layer.urls.length > 0) {
        await trx
          .insertInto("foreign_layer_sources")
          .values(layer.urls.map((url, position) => ({ repository_id: repositoryId, digest: layer.digest, manifest_digest: manifestDigest, url, position, added_at: now })))
          .onConflict((oc) => oc.columns(["repository_id", "digest", "manifest_digest", "url"]).doNothing())
          .execute();
      }
      const union = await this.union(trx, repositoryId, layer.digest);
      await this.setUrls(trx, repositoryId, layer.digest, union);
      const proven = [...new Set((layer.provenUrls ?? []).filter((url) => union.includes(url)))];
      if (proven.length > 0) {
        await trx
          .insertInto("foreign_layer_proofs")
          .values(proven.map((url) => ({ repository_id: repositoryId, digest: layer.digest, url, proven_at: now })))
          .onConflict((oc) => oc.columns(["repository_id", "digest", "url"]).doUpdateSet((eb) => ({ proven_at: eb.ref("excluded.proven_at") })))
          .execute();
      }
    }
  }

  /** deleteManifest's foreign part, after the manifest's references are gone; runs inside its transaction. */
  async afterManifestDeleted(trx: Db, repositoryId: number, manifestDigest: string, layers: string[]): Promise<void> {
    await trx.deleteFrom("foreign_layer_sources").where("repository_id", "=", repositoryId).where("manifest_digest", "=", manifestDigest).execute();
    for (const layer of [...new Set(layers)].sort()) await this.reconcile(trx, repositoryId, layer);
  }

  /** After garbage collection deleted manifests: their sources go, and the layers they named are reconciled. */
  async collectGarbage(trx: Db): Promise<void> {
    const noManifest = (eb: ExpressionBuilder<MetadataDatabase, "foreign_layer_sources">) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom("manifests as m")
            .select("m.digest")
            .whereRef("m.repository_id", "=", "foreign_layer_sources.repository_id")
            .whereRef("m.digest", "=", "foreign_layer_sources.manifest_digest"),
        ),
      );
    const stale = await trx
      .selectFrom("foreign_layer_sources")
      .select(["repository_id", "digest"])
      .distinct()
      .where(noManifest)
      .orderBy("repository_id")
      .orderBy("digest")
      .execute();
    await trx.deleteFrom("foreign_layer_sources").where(noManifest).execute();
    for (const { repository_id, digest } of stale) await this.reconcile(trx, repository_id, digest);
    await trx
      .deleteFrom("foreign_layers")
      .where((eb) =>
        eb.not(
          eb.exists(
            eb
              .selectFrom("manifest_references as r")
              .select("r.child_digest")
              .whereRef("r.repository_id", "=", "foreign_layers.repository_id")
              .where("r.kind", "=", "foreign")
              .whereRef("r.child_digest", "=", "foreign_layers.digest"),
          ),
        ),
      )
      .execute();
    await trx
      .deleteFrom("foreign_layer_proofs")
      .where((eb) =>
        eb.not(
          eb.exists(
            eb
              .selectFrom("foreign_layer_sources as s")
              .select("s.url")
              .whereRef("s.repository_id", "=", "foreign_layer_proofs.repository_id")
              .whereRef("s.digest", "=", "foreign_layer_proofs.digest")
              .whereRef("s.url", "=", "foreign_layer_proofs.url"),
          ),
        ),
      )
      .execute();
    await trx
      .updateTable("foreign_cache")
      .set({ pinned: 0 })
      .where("pinned", "=", 1)
      .where((eb) => eb.not(eb.exists(eb.selectFrom("foreign_layers as f").select("f.digest").whereRef("f.digest", "=", "foreign_cache.digest"))))
      .execute();
  }

  /**
   * Brings one (repository, layer) in line with the manifests that still
   * reference it: the mark goes with the last manifest, otherwise its URLs
   * become the union of what remains, proofs of URLs that left are dropped,
   * and a `verified` state earned through a URL that left is reset.
   */
  private async reconcile(trx: Db, repositoryId: number, digest: string): Promise<void> {
    const mark = await trx
      .selectFrom("foreign_layers")
      .select(["verification", "verification_detail"])
      .where("repository_id", "=", repositoryId)
      .where("digest", "=", digest)
      .$if(this.dialect.rowLocks, (qb) => qb.forUpdate())
      .executeTakeFirst();
    const referenced = await trx
      .selectFrom("manifest_references")
      .select("child_digest")
      .where("repository_id", "=", repositoryId)
      .where("child_digest", "=", digest)
      .where("kind", "=", "foreign")
      .limit(1)
      .executeTakeFirst();
    if (!referenced) {
      await trx.deleteFrom("foreign_layers").where("repository_id", "=", repositoryId).where("digest", "=", digest).execute();
      await trx.deleteFrom("foreign_layer_sources").where("repository_id", "=", repositoryId).where("digest", "=", digest).execute();
      await trx.deleteFrom("foreign_layer_proofs").where("repository_id", "=", repositoryId).where("digest", "=", digest).execute();
      const anyMark = await trx.selectFrom("foreign_layers").select("digest").where("digest", "=", digest).limit(1).executeTakeFirst();
      if (!anyMark) await trx.updateTable("foreign_cache").set({ pinned: 0 }).where("digest", "=", digest).where("pinned", "=", 1).execute();
      return;
    }
    const union = await this.union(trx, repositoryId, digest);
    await this.setUrls(trx, repositoryId, digest, union);
    const proofs = await trx.selectFrom("foreign_layer_proofs").select("url").where("repository_id", "=", repositoryId).where("digest", "=", digest).execute();
    const leftover = proofs.map((row) => row.url).filter((url) => !union.includes(url));
    if (leftover.length > 0) {
      await trx.deleteFrom("foreign_layer_proofs").where("repository_id", "=", repositoryId).where("digest", "=", digest).where("url", "in", leftover).execute();
    }
    if (mark?.verification === "verified") {
      const url = verifiedThrough(mark.verification_detail);
      if (url !== null && !union.includes(url)) {
        await trx
          .updateTable("foreign_layers")
          .set({ verification: "unverified", verified_at: null })
          .where("repository_id", "=", repositoryId)
          .where("digest", "=", digest)
          .execute();
      }
    }
  }

  async union(q: Db, repositoryId: number, digest: string): Promise<string[]> {
    const rows = await q
      .selectFrom("foreign_layer_sources")
      .select("url")
      .where("repository_id", "=", repositoryId)
      .where("digest", "=", digest)
      .groupBy("url")
      .orderBy((eb) => eb.fn.min("position"))
      .orderBy((eb) => eb.fn.min("added_at"))
      .orderBy("url")
      .execute();
    return rows.map((row) => row.url);
  }

  async setUrls(q: Db, repositoryId: number, digest: string, urls: string[]): Promise<void> {
    await q.updateTable("foreign_layers").set({ urls: JSON.stringify(urls) }).where("repository_id", "=", repositoryId).where("digest", "=", digest).execute();
  }

  async get(q: Db, repository: string, digest: string): Promise<ForeignLayerMark | null> {
    const row = await this.marks(q).where("r.name", "=", repository).where("f.digest", "=", digest).executeTakeFirst();
    return row ? toForeignMark(row) : null;
  }

  async list(q: Db, repository?: string): Promise<ForeignLayerMark[]> {
    const rows = await this.marks(q)
      .$if(repository !== undefined, (qb) => qb.where("r.name", "=", repository!))
      .orderBy("r.name")
      .orderBy("f.digest")
      .execute();
    return rows.map(toForeignMark);
  }

  async ofManifest(q: Db, repository: string, manifestDigest: string): Promise<ForeignLayerMark[]> {
    const rows = await this.marks(q)
      .where("r.name", "=", repository)
      .where("f.digest", "in", (eb) =>
        eb
          .selectFrom("manifest_references as mr")
          .select("mr.child_digest")
          .whereRef("mr.repository_id", "=", "r.id")
          .where("mr.kind", "=", "foreign")
          .where((e) =>
            e.or([
              e("mr.manifest_digest", "=", manifestDigest),
              e(
                "mr.manifest_digest",
                "in",
                e
                  .selectFrom("manifest_references as c")
                  .select("c.child_digest")
                  .whereRef("c.repository_id", "=", "r.id")
                  .where("c.manifest_digest", "=", manifestDigest)
                  .where("c.kind", "=", "manifest"),
              ),
            ]),
          ),
      )
      .orderBy("f.digest")
      .execute();
    return rows.map(toForeignMark);
  }

  async count(q: Db, repository: string, manifestDigest: string): Promise<number> {
    const row = await q
      .selectFrom("manifest_references as mr")
      .innerJoin("repositories as r", "r.id", "mr.repository_id")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("r.name", "=", repository)
      .where("mr.kind", "=", "foreign")
      .where((e) =>
        e.or([
          e("mr.manifest_digest", "=", manifestDigest),
          e(
            "mr.manifest_digest",
            "in",
            e
              .selectFrom("manifest_references as c")
              .select("c.child_digest")
              .whereRef("c.repository_id", "=", "r.id")
              .where("c.manifest_digest", "=", manifestDigest)
              .where("c.kind", "=", "manifest"),
          ),
        ]),
      )
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async setVerification(q: Db, repository: string, digest: string, state: VerificationState, at: number, detail: unknown): Promise<void> {
    await q
      .updateTable("foreign_layers")
      .set({ verification: state, verified_at: at, verification_detail: detail === undefined ? null : JSON.stringify(detail) })
      .where("repository_id", "=", (eb) => eb.selectFrom("repositories").select("id").where("name", "=", repository))
      .where("digest", "=", digest)
      .execute();
  }

  /** A proof is kept only while the repository still names the URL for the layer. */
  async recordProof(q: Db, repository: string, digest: string, url: string, at: number): Promise<boolean> {
    const result = await q
      .insertInto("foreign_layer_proofs")
      .columns(["repository_id", "digest", "url", "proven_at"])
      .expression((eb) =>
        eb
          .selectFrom("foreign_layer_sources as s")
          .select(["s.repository_id", "s.digest", "s.url", sql<number>`${at}`.as("proven_at")])
          .where("s.repository_id", "=", (e) => e.selectFrom("repositories").select("id").where("name", "=", repository))
          .where("s.digest", "=", digest)
          .where("s.url", "=", url)
          .limit(1),
      )
      .onConflict((oc) => oc.columns(["repository_id", "digest", "url"]).doUpdateSet((eb) => ({ proven_at: eb.ref("excluded.proven_at") })))
      .executeTakeFirst();
    return changed(result) > 0;
  }

  // --- the proxy cache's index ---

  async cacheEntry(q: Db, digest: string): Promise<ForeignCacheEntry | null> {
    const row = await q.selectFrom("foreign_cache").selectAll().where("digest", "=", digest).executeTakeFirst();
    return row ? toCacheEntry(row) : null;
  }

  async listCache(q: Db): Promise<ForeignCacheEntry[]> {
    return (await q.selectFrom("foreign_cache").selectAll().orderBy("digest").execute()).map(toCacheEntry);
  }

  /** A re-fetch refreshes the entry; a pin, once set, stays until no repository references the layer. */
  async putCacheEntry(q: Db, entry: { digest: string; size: number; fetchedAt: number; pinned: boolean }): Promise<void> {
    await q
      .insertInto("foreign_cache")
      .values({ digest: entry.digest, size: entry.size, fetched_at: entry.fetchedAt, last_access: entry.fetchedAt, pinned: entry.pinned ? 1 : 0 })
      .onConflict((oc) =>
        oc.column("digest").doUpdateSet((eb) => ({
          size: eb.ref("excluded.size"),
          fetched_at: eb.ref("excluded.fetched_at"),
          last_access: eb.ref("excluded.last_access"),
          pinned: this.dialect.greatest(eb.ref("foreign_cache.pinned"), eb.ref("excluded.pinned")) as never,
        })),
      )
      .execute();
  }

  /**
   * In one transaction: unpinned entries fetched before `expiredBefore`, then
   * the least recently used unpinned entries while the unpinned total exceeds
   * `maxBytes`, lose their rows. Returns their digests (the caller deletes the
   * bytes). Pinned entries are never chosen.
   */
  async evictCache(trx: Db, maxBytes: number, expiredBefore: number): Promise<string[]> {
    const entries = await trx
      .selectFrom("foreign_cache")
      .select(["digest", "size", "fetched_at"])
      .where("pinned", "=", 0)
      .orderBy("last_access")
      .orderBy("digest")
      .$if(this.dialect.rowLocks, (qb) => qb.forUpdate())
      .execute();
    const victims = new Set<string>();
    let total = entries.reduce((sum, row) => sum + row.size, 0);
    for (const row of entries) {
      if (row.fetched_at < expiredBefore) {
        victims.add(row.digest);
        total -= row.size;
      }
    }
    for (const row of entries) {
      if (total <= maxBytes) break;
      if (victims.has(row.digest)) continue;
      victims.add(row.digest);
      total -= row.size;
    }
    const evicted: string[] = [];
    for (const part of chunks([...victims])) {
      const rows = await trx.deleteFrom("foreign_cache").where("digest", "in", part).where("pinned", "=", 0).returning("digest").execute();
      evicted.push(...rows.map((row) => row.digest));
    }
    const gone = new Set(evicted);
    return [...victims].filter((digest) => gone.has(digest));
  }
}

function verifiedThrough(detail: string | null): string | null {
  if (!detail) return null;
  try {
    const parsed = JSON.parse(detail) as { attempts?: Array<{ url?: unknown; ok?: unknown }> };
    const ok = parsed.attempts?.find((a) => a.ok === true && typeof a.url === "string");
    return ok ? (ok.url as string) : null;
  } catch {
    return null;
  }
}

/** The layer's `urls` as the stored manifest names them; null when the bytes are not a manifest we can read. */
function urlsInManifest(content: Buffer | null, digest: string): string[] | null {
  if (!content) return null;
  try {
    const parsed = JSON.parse(content.toString("utf8")) as { layers?: Array<{ digest?: unknown; urls?: unknown }> };
    const urls: string[] = [];
    for (const layer of parsed.layers ?? []) {
      if (layer.digest !== digest || !Array.isArray(layer.urls)) continue;
      for (const url of layer.urls) if (typeof url === "string" && !urls.includes(url)) urls.push(url);
    }
    return urls.length > 0 ? urls : null;
  } catch {
    return null;
  }
}

function parseUrls(json: string | null): string[] {
  if (!json) return [];
  try {
    const value = JSON.parse(json) as unknown;
    return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
  } catch {
    return [];
  }
}

/**
 * Databases written before per-manifest sources existed: fills
 * foreign_layer_sources from the stored manifests (the layer's `urls` in each
 * manifest, else the mark's last-push URLs), then sets every mark's URLs to
 * the union. Runs once, inside the migration that creates the table.
 */
export async function backfillForeignSources(trx: Db, foreign: SqlForeignLayers): Promise<void> {
  const refs = await trx
    .selectFrom("manifest_references as mr")
    .leftJoin("manifests as m", (join) => join.onRef("m.repository_id", "=", "mr.repository_id").onRef("m.digest", "=", "mr.manifest_digest"))
    .leftJoin("foreign_layers as f", (join) => join.onRef("f.repository_id", "=", "mr.repository_id").onRef("f.digest", "=", "mr.child_digest"))
    .select(["mr.repository_id", "mr.manifest_digest", "mr.child_digest", "m.content", "f.urls", "m.created_at"])
    .where("mr.kind", "=", "foreign")
    .execute();
  const layers = new Map<string, { repositoryId: number; digest: string }>();
  for (const ref of refs) {
    const urls = urlsInManifest(ref.content, ref.child_digest) ?? parseUrls(ref.urls);
    layers.set(`${ref.repository_id}\n${ref.child_digest}`, { repositoryId: ref.repository_id, digest: ref.child_digest });
    if (urls.length === 0) continue;
    await trx
      .insertInto("foreign_layer_sources")
      .values(urls.map((url, position) => ({ repository_id: ref.repository_id, digest: ref.child_digest, manifest_digest: ref.manifest_digest, url, position, added_at: ref.created_at ?? 0 })))
      .onConflict((oc) => oc.columns(["repository_id", "digest", "manifest_digest", "url"]).doNothing())
      .execute();
  }
  // Old databases kept the last push's URLs: from now on the mark shows the union.
  for (const { repositoryId, digest } of layers.values()) {
    const union = await foreign.union(trx, repositoryId, digest);
    if (union.length > 0) await foreign.setUrls(trx, repositoryId, digest, union);
  }
}

function toForeignMark(row: ForeignRow): ForeignLayerMark {
  return {
    repository: row.name,
    digest: row.digest,
    mediaType: row.media_type,
    size: row.size,
    urls: JSON.parse(row.urls) as string[],
    verification: row.verification,
    verifiedAt: row.verified_at,
    verificationDetail: row.verification_detail ? (JSON.parse(row.verification_detail) as unknown) : null,
    manifests: row.manifests ? (JSON.parse(row.manifests) as string[]) : [],
    provenUrls: row.proven ? (JSON.parse(row.proven) as string[]) : [],
  };
}

function toCacheEntry(row: CacheRow): ForeignCacheEntry {
  return { digest: row.digest, size: row.size, fetchedAt: row.fetched_at, lastAccess: row.last_access, pinned: row.pinned === 1 };
}
