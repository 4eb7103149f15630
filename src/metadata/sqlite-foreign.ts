/**
 * The foreign-layer bookkeeping of the SQLite metadata store (federation):
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
 * Every method runs inside the caller's transaction or opens its own.
 */
import type Database from "better-sqlite3";
import type { ForeignCacheEntry, ForeignLayerMark, ForeignLayerWrite, VerificationState } from "./meta-store.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS foreign_layer_sources (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  url TEXT NOT NULL,
  position INTEGER NOT NULL,
  added_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest, manifest_digest, url)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS foreign_layer_sources_by_manifest ON foreign_layer_sources (repository_id, manifest_digest);
CREATE TABLE IF NOT EXISTS foreign_layer_proofs (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  url TEXT NOT NULL,
  proven_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest, url)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS foreign_cache (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  fetched_at INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  pinned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS foreign_cache_lru ON foreign_cache (pinned, last_access);
`;

export interface ForeignRow {
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

const MARK_COLUMNS = `f.digest, f.media_type, f.size, f.urls, f.verification, f.verified_at, f.verification_detail, r.name,
  (SELECT json_group_array(mr.manifest_digest) FROM manifest_references mr
    WHERE mr.repository_id = f.repository_id AND mr.child_digest = f.digest AND mr.kind = 'foreign') AS manifests,
  (SELECT json_group_array(p.url) FROM foreign_layer_proofs p
    WHERE p.repository_id = f.repository_id AND p.digest = f.digest) AS proven`;

/**
 * Creates the tables; the first time (the sources table did not exist yet)
 * fills them from the manifests already stored, so databases written before
 * per-manifest sources existed keep working. Guarded by the table's absence
 * inside one IMMEDIATE transaction, so it runs once even with several
 * processes starting together.
 */
export function migrateForeignLayers(db: Database.Database): void {
  db.transaction(() => {
    const existed = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'foreign_layer_sources'").get() !== undefined;
    db.exec(SCHEMA);
    if (existed) return;
    const refs = db
      .prepare<[], { repository_id: number; manifest_digest: string; child_digest: string; content: Buffer | null; urls: string | null; created_at: number | null }>(
        `SELECT mr.repository_id, mr.manifest_digest, mr.child_digest, m.content, f.urls, m.created_at
         FROM manifest_references mr
         LEFT JOIN manifests m ON m.repository_id = mr.repository_id AND m.digest = mr.manifest_digest
         LEFT JOIN foreign_layers f ON f.repository_id = mr.repository_id AND f.digest = mr.child_digest
         WHERE mr.kind = 'foreign'`,
      )
      .all();
    const insert = db.prepare<[number, string, string, string, number, number]>(
      "INSERT OR IGNORE INTO foreign_layer_sources (repository_id, digest, manifest_digest, url, position, added_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    for (const ref of refs) {
      const urls = urlsInManifest(ref.content, ref.child_digest) ?? parseUrls(ref.urls);
      urls.forEach((url, position) => insert.run(ref.repository_id, ref.child_digest, ref.manifest_digest, url, position, ref.created_at ?? 0));
    }
    // Old databases kept the last push's URLs: from now on the mark shows the union.
    db.exec(`UPDATE foreign_layers SET urls = COALESCE((
      SELECT json_group_array(url) FROM (
        SELECT url FROM foreign_layer_sources s
        WHERE s.repository_id = foreign_layers.repository_id AND s.digest = foreign_layers.digest
        GROUP BY url ORDER BY MIN(position), MIN(added_at), url)), urls)
      WHERE EXISTS (SELECT 1 FROM foreign_layer_sources s
        WHERE s.repository_id = foreign_layers.repository_id AND s.digest = foreign_layers.digest)`);
  }).immediate();
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

export class SqliteForeignLayers {
  private readonly s: ReturnType<typeof prepare>;

  constructor(private readonly db: Database.Database) {
    this.s = prepare(db);
  }

  /** putManifest's foreign part; runs inside its transaction. */
  put(repositoryId: number, manifestDigest: string, layers: ForeignLayerWrite[], now: number): void {
    const s = this.s;
    for (const layer of layers) {
      s.insertReference.run(repositoryId, manifestDigest, layer.digest);
      layer.urls.forEach((url, position) => s.insertSource.run(repositoryId, layer.digest, manifestDigest, url, position, now));
      s.upsert.run(
        repositoryId,
        layer.digest,
        layer.mediaType,
        layer.size,
        "[]",
        layer.verification,
        layer.verifiedAt,
        layer.verificationDetail === undefined || layer.verificationDetail === null ? null : JSON.stringify(layer.verificationDetail),
        now,
      );
      const union = this.union(repositoryId, layer.digest);
      s.setUrls.run(JSON.stringify(union), repositoryId, layer.digest);
      for (const url of layer.provenUrls ?? []) {
        if (union.includes(url)) s.insertProof.run(repositoryId, layer.digest, url, now);
      }
    }
  }

  /** deleteManifest's foreign part, after the manifest's references are gone; runs inside its transaction. */
  afterManifestDeleted(repositoryId: number, manifestDigest: string, layers: string[]): void {
    this.s.deleteSourcesOfManifest.run(repositoryId, manifestDigest);
    for (const layer of layers) this.reconcile(repositoryId, layer);
  }

  /** After garbage collection deleted manifests: their sources go, and the layers they named are reconciled. */
  collectGarbage(): void {
    const stale = this.s.staleSources.all();
    this.s.deleteStaleSources.run();
    for (const { repository_id, digest } of stale) this.reconcile(repository_id, digest);
    this.s.deleteOrphanMarks.run();
    this.s.deleteOrphanProofs.run();
    this.s.unpinOrphans.run();
  }

  /**
   * Brings one (repository, layer) in line with the manifests that still
   * reference it: the mark goes with the last manifest, otherwise its URLs
   * become the union of what remains, proofs of URLs that left are dropped,
   * and a `verified` state earned through a URL that left is reset.
   */
  private reconcile(repositoryId: number, digest: string): void {
    const s = this.s;
    if (s.stillReferenced.get(repositoryId, digest) === undefined) {
      s.deleteMark.run(repositoryId, digest);
      s.deleteSourcesOfLayer.run(repositoryId, digest);
      s.deleteProofsOfLayer.run(repositoryId, digest);
      if (s.anyMark.get(digest) === undefined) s.unpin.run(digest);
      return;
    }
    const union = this.union(repositoryId, digest);
    s.setUrls.run(JSON.stringify(union), repositoryId, digest);
    for (const { url } of s.proofsOf.all(repositoryId, digest)) {
      if (!union.includes(url)) s.deleteProof.run(repositoryId, digest, url);
    }
    const state = s.verificationOf.get(repositoryId, digest);
    if (state?.verification === "verified") {
      const url = verifiedThrough(state.verification_detail);
      if (url !== null && !union.includes(url)) s.resetVerification.run(repositoryId, digest);
    }
  }

  private union(repositoryId: number, digest: string): string[] {
    return this.s.union.all(repositoryId, digest);
  }

  get(repository: string, digest: string): ForeignLayerMark | null {
    const row = this.s.get.get(repository, digest);
    return row ? toForeignMark(row) : null;
  }

  list(repository?: string): ForeignLayerMark[] {
    const name = repository ?? null;
    return this.s.list.all(name, name).map(toForeignMark);
  }

  ofManifest(repository: string, manifestDigest: string): ForeignLayerMark[] {
    return this.s.ofManifest.all(repository, manifestDigest, manifestDigest).map(toForeignMark);
  }

  setVerification(repository: string, digest: string, state: VerificationState, at: number, detail: unknown): void {
    this.s.setVerification.run(state, at, detail === undefined ? null : JSON.stringify(detail), repository, digest);
  }

  recordProof(repository: string, digest: string, url: string, at: number): boolean {
    return this.s.recordProof.run(at, repository, digest, url).changes > 0;
  }

  // --- the proxy cache's index ---

  cacheEntry(digest: string): ForeignCacheEntry | null {
    const row = this.s.cacheGet.get(digest);
    return row ? toCacheEntry(row) : null;
  }

  listCache(): ForeignCacheEntry[] {
    return this.s.cacheList.all().map(toCacheEntry);
  }

  putCacheEntry(entry: { digest: string; size: number; fetchedAt: number; pinned: boolean }): void {
    this.s.cachePut.run(entry.digest, entry.size, entry.fetchedAt, entry.fetchedAt, entry.pinned ? 1 : 0);
  }

  touchCacheEntry(digest: string, at: number): void {
    this.s.cacheTouch.run(at, digest);
  }

  deleteCacheEntry(digest: string): void {
    this.s.cacheDelete.run(digest);
  }

  /**
   * In one transaction: unpinned entries fetched before `expiredBefore`, then
   * the least recently used unpinned entries while the unpinned total exceeds
   * `maxBytes`, lose their rows. Returns their digests (the caller deletes the
   * bytes). Pinned entries are never chosen.
   */
  evictCache(maxBytes: number, expiredBefore: number): string[] {
    const s = this.s;
    return this.db.transaction(() => {
      const victims = new Set<string>();
      let total = s.cacheUnpinnedBytes.get()?.total ?? 0;
      for (const row of s.cacheExpired.all(expiredBefore)) {
        victims.add(row.digest);
        total -= row.size;
      }
      if (total > maxBytes) {
        for (const row of s.cacheUnpinnedByAge.all()) {
          if (total <= maxBytes) break;
          if (victims.has(row.digest)) continue;
          victims.add(row.digest);
          total -= row.size;
        }
      }
      for (const digest of victims) s.cacheDelete.run(digest);
      return [...victims];
    }).immediate();
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

function prepare(db: Database.Database) {
  return {
    insertReference: db.prepare<[number, string, string]>(
      "INSERT OR IGNORE INTO manifest_references (repository_id, manifest_digest, kind, child_digest) VALUES (?, ?, 'foreign', ?)",
    ),
    insertSource: db.prepare<[number, string, string, string, number, number]>(
      "INSERT OR IGNORE INTO foreign_layer_sources (repository_id, digest, manifest_digest, url, position, added_at) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    upsert: db.prepare<[number, string, string, number, string, string, number | null, string | null, number]>(
      `INSERT INTO foreign_layers (repository_id, digest, media_type, size, urls, verification, verified_at, verification_detail, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (repository_id, digest) DO UPDATE SET
         media_type = excluded.media_type, size = excluded.size,
         verification = CASE WHEN excluded.verification = 'unverified' AND foreign_layers.verification = 'verified'
                             THEN foreign_layers.verification ELSE excluded.verification END,
         verified_at = CASE WHEN excluded.verification = 'unverified' AND foreign_layers.verification = 'verified'
                            THEN foreign_layers.verified_at ELSE COALESCE(excluded.verified_at, foreign_layers.verified_at) END,
         verification_detail = CASE WHEN excluded.verification = 'unverified' AND foreign_layers.verification = 'verified'
                                    THEN foreign_layers.verification_detail ELSE COALESCE(excluded.verification_detail, foreign_layers.verification_detail) END`,
    ),
    union: db
      .prepare<[number, string], string>(
        `SELECT url FROM foreign_layer_sources WHERE repository_id = ? AND digest = ?
         GROUP BY url ORDER BY MIN(position), MIN(added_at), url`,
      )
      .pluck(),
    setUrls: db.prepare<[string, number, string]>("UPDATE foreign_layers SET urls = ? WHERE repository_id = ? AND digest = ?"),
    insertProof: db.prepare<[number, string, string, number]>(
      `INSERT INTO foreign_layer_proofs (repository_id, digest, url, proven_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (repository_id, digest, url) DO UPDATE SET proven_at = excluded.proven_at`,
    ),
    // A proof is kept only while the repository still names the URL for the layer.
    recordProof: db.prepare<[number, string, string, string]>(
      `INSERT INTO foreign_layer_proofs (repository_id, digest, url, proven_at)
       SELECT s.repository_id, s.digest, s.url, ? FROM foreign_layer_sources s
       WHERE s.repository_id = (SELECT id FROM repositories WHERE name = ?) AND s.digest = ? AND s.url = ?
       LIMIT 1
       ON CONFLICT (repository_id, digest, url) DO UPDATE SET proven_at = excluded.proven_at`,
    ),
    deleteSourcesOfManifest: db.prepare<[number, string]>("DELETE FROM foreign_layer_sources WHERE repository_id = ? AND manifest_digest = ?"),
    deleteSourcesOfLayer: db.prepare<[number, string]>("DELETE FROM foreign_layer_sources WHERE repository_id = ? AND digest = ?"),
    deleteProofsOfLayer: db.prepare<[number, string]>("DELETE FROM foreign_layer_proofs WHERE repository_id = ? AND digest = ?"),
    proofsOf: db.prepare<[number, string], { url: string }>("SELECT url FROM foreign_layer_proofs WHERE repository_id = ? AND digest = ?"),
    deleteProof: db.prepare<[number, string, string]>("DELETE FROM foreign_layer_proofs WHERE repository_id = ? AND digest = ? AND url = ?"),
    stillReferenced: db.prepare<[number, string], { present: number }>(
      "SELECT 1 AS present FROM manifest_references WHERE repository_id = ? AND child_digest = ? AND kind = 'foreign' LIMIT 1",
    ),
    deleteMark: db.prepare<[number, string]>("DELETE FROM foreign_layers WHERE repository_id = ? AND digest = ?"),
    anyMark: db.prepare<[string], { present: number }>("SELECT 1 AS present FROM foreign_layers WHERE digest = ? LIMIT 1"),
    unpin: db.prepare<[string]>("UPDATE foreign_cache SET pinned = 0 WHERE digest = ? AND pinned = 1"),
    verificationOf: db.prepare<[number, string], { verification: VerificationState; verification_detail: string | null }>(
      "SELECT verification, verification_detail FROM foreign_layers WHERE repository_id = ? AND digest = ?",
    ),
    resetVerification: db.prepare<[number, string]>(
      "UPDATE foreign_layers SET verification = 'unverified', verified_at = NULL WHERE repository_id = ? AND digest = ?",
    ),
    staleSources: db.prepare<[], { repository_id: number; digest: string }>(
      `SELECT DISTINCT repository_id, digest FROM foreign_layer_sources s WHERE NOT EXISTS (
         SELECT 1 FROM manifests m WHERE m.repository_id = s.repository_id AND m.digest = s.manifest_digest)`,
    ),
    deleteStaleSources: db.prepare<[]>(
      `DELETE FROM foreign_layer_sources WHERE NOT EXISTS (
         SELECT 1 FROM manifests m WHERE m.repository_id = foreign_layer_sources.repository_id AND m.digest = foreign_layer_sources.manifest_digest)`,
    ),
    deleteOrphanMarks: db.prepare<[]>(
      `DELETE FROM foreign_layers WHERE NOT EXISTS (SELECT 1 FROM manifest_references r
         WHERE r.repository_id = foreign_layers.repository_id AND r.kind = 'foreign' AND r.child_digest = foreign_layers.digest)`,
    ),
    deleteOrphanProofs: db.prepare<[]>(
      `DELETE FROM foreign_layer_proofs WHERE NOT EXISTS (SELECT 1 FROM foreign_layer_sources s
         WHERE s.repository_id = foreign_layer_proofs.repository_id AND s.digest = foreign_layer_proofs.digest AND s.url = foreign_layer_proofs.url)`,
    ),
    unpinOrphans: db.prepare<[]>(
      "UPDATE foreign_cache SET pinned = 0 WHERE pinned = 1 AND NOT EXISTS (SELECT 1 FROM foreign_layers f WHERE f.digest = foreign_cache.digest)",
    ),
    get: db.prepare<[string, string], ForeignRow>(
      `SELECT ${MARK_COLUMNS} FROM repositories r JOIN foreign_layers f ON f.repository_id = r.id WHERE r.name = ? AND f.digest = ?`,
    ),
    list: db.prepare<[string | null, string | null], ForeignRow>(
      `SELECT ${MARK_COLUMNS} FROM repositories r JOIN foreign_layers f ON f.repository_id = r.id
       WHERE (? IS NULL OR r.name = ?) ORDER BY r.name, f.digest`,
    ),
    ofManifest: db.prepare<[string, string, string], ForeignRow>(
      `SELECT ${MARK_COLUMNS} FROM repositories r JOIN foreign_layers f ON f.repository_id = r.id
       WHERE r.name = ? AND f.digest IN (
         SELECT mr.child_digest FROM manifest_references mr WHERE mr.repository_id = r.id AND mr.kind = 'foreign' AND (
           mr.manifest_digest = ? OR mr.manifest_digest IN (
             SELECT c.child_digest FROM manifest_references c WHERE c.repository_id = r.id AND c.manifest_digest = ? AND c.kind = 'manifest')))
       ORDER BY f.digest`,
    ),
    setVerification: db.prepare<[string, number, string | null, string, string]>(
      `UPDATE foreign_layers SET verification = ?, verified_at = ?, verification_detail = ?
       WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?`,
    ),
    cacheGet: db.prepare<[string], CacheRow>("SELECT digest, size, fetched_at, last_access, pinned FROM foreign_cache WHERE digest = ?"),
    cacheList: db.prepare<[], CacheRow>("SELECT digest, size, fetched_at, last_access, pinned FROM foreign_cache ORDER BY digest"),
    // A re-fetch refreshes the entry; a pin, once set, stays until no repository references the layer.
    cachePut: db.prepare<[string, number, number, number, number]>(
      `INSERT INTO foreign_cache (digest, size, fetched_at, last_access, pinned) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (digest) DO UPDATE SET size = excluded.size, fetched_at = excluded.fetched_at,
         last_access = excluded.last_access, pinned = MAX(foreign_cache.pinned, excluded.pinned)`,
    ),
    cacheTouch: db.prepare<[number, string]>("UPDATE foreign_cache SET last_access = ? WHERE digest = ?"),
    cacheDelete: db.prepare<[string]>("DELETE FROM foreign_cache WHERE digest = ?"),
    cacheUnpinnedBytes: db.prepare<[], { total: number }>("SELECT COALESCE(SUM(size), 0) AS total FROM foreign_cache WHERE pinned = 0"),
    cacheUnpinnedByAge: db.prepare<[], CacheRow>(
      "SELECT digest, size, fetched_at, last_access, pinned FROM foreign_cache WHERE pinned = 0 ORDER BY last_access, digest",
    ),
    cacheExpired: db.prepare<[number], { digest: string; size: number }>("SELECT digest, size FROM foreign_cache WHERE pinned = 0 AND fetched_at < ?"),
  };
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
