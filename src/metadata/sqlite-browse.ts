/**
 * The read-only queries of the web UI's JSON API (src/browse/) on the SQLite
 * metadata store: repository summaries (tag count, stored size, last push)
 * and tag details. Kept apart from sqlite.ts like sqlite-foreign.ts; nothing
 * here writes.
 *
 * Speed at 10,000 repositories: names come from the `repositories` UNIQUE
 * index in key order (keyset pagination on the name), and the summaries are
 * computed only for the names of one page, each from its own primary-key
 * range (tags, repository_blobs, manifests all lead with repository_id).
 */
import type Database from "better-sqlite3";
import type { RepositoryPage, RepositorySummary, TagDetail } from "./meta-store.js";

/** Names fetched per round while a filter (the caller's access) skips some. */
const SCAN_BATCH = 1000;
/**
 * Manifest bytes one tag listing loads. Each distinct manifest is read once
 * (a thousand tags of one 4 MiB manifest used to be a thousand 4 MiB copies:
 * one anonymous request for a public repository took 1.8 GB at 400 tags);
 * past this budget the remaining manifests come without content (shown as
 * "unknown" kind, their size still right).
 */
const TAG_CONTENT_BUDGET = 64 * 1024 * 1024;
const NO_CONTENT = Buffer.alloc(0);

interface ManifestRow {
  media_type: string;
  size: number;
  content: Buffer;
  artifact_type: string | null;
  created_at: number;
}

interface SummaryRow {
  name: string;
  tags: number;
  size: number | null;
  last_tag: number | null;
  last_manifest: number | null;
}

function prepare(db: Database.Database) {
  return {
    names: db
      .prepare<[string, number], string>(
        `SELECT r.name FROM repositories r
         WHERE r.name > ? AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
         ORDER BY r.name LIMIT ?`,
      )
      .pluck(),
    // instr() rather than LIKE: a search text with % or _ means itself.
    namesMatching: db
      .prepare<[string, string, number], string>(
        `SELECT r.name FROM repositories r
         WHERE r.name > ? AND instr(r.name, ?) > 0 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
         ORDER BY r.name LIMIT ?`,
      )
      .pluck(),
    summary: db.prepare<[string], SummaryRow>(
      `SELECT r.name,
         (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id) AS tags,
         (SELECT SUM(b.size) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = r.id) AS size,
         (SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id) AS last_tag,
         (SELECT MAX(m.created_at) FROM manifests m WHERE m.repository_id = r.id) AS last_manifest
       FROM repositories r WHERE r.name = ?`,
    ),
    // Tags alone: a manifest row's later columns sit behind its content (overflow pages), so joining
    // manifests here read a 4 MiB manifest once per tag naming it. Each distinct manifest is read below, once.
    tags: db.prepare<[string, number], { tag: string; digest: string; updated_at: number }>(
      `SELECT t.name AS tag, t.manifest_digest AS digest, t.updated_at
       FROM repositories r JOIN tags t ON t.repository_id = r.id
       WHERE r.name = ? ORDER BY t.name LIMIT ?`,
    ),
    manifest: db.prepare<[string, string], ManifestRow>(
      `SELECT m.media_type, m.size, m.content, m.artifact_type, m.created_at
       FROM repositories r JOIN manifests m ON m.repository_id = r.id WHERE r.name = ? AND m.digest = ?`,
    ),
    manifestWithoutContent: db.prepare<[string, string], Omit<ManifestRow, "content">>(
      `SELECT m.media_type, m.size, m.artifact_type, m.created_at
       FROM repositories r JOIN manifests m ON m.repository_id = r.id WHERE r.name = ? AND m.digest = ?`,
    ),
  };
}

export class SqliteBrowse {
  private readonly s: ReturnType<typeof prepare>;

  constructor(db: Database.Database) {
    this.s = prepare(db);
  }

  /**
   * One page of repositories (with content) in name order, after `page.after`,
   * whose names contain `page.search` and pass `visible`; `total` counts every
   * such repository.
   */
  repositories(page: { limit: number; after?: string; search?: string }, visible: (name: string) => boolean): RepositoryPage {
    const search = page.search ?? "";
    const names: string[] = [];
    let total = 0;
    let cursor = "";
    let next: string | undefined;
    // One pass over the names (in batches from the index): counts the visible
    // ones and keeps the page. 10,000 names take a few milliseconds.
    for (;;) {
      const batch = search === "" ? this.s.names.all(cursor, SCAN_BATCH) : this.s.namesMatching.all(cursor, search, SCAN_BATCH);
      for (const name of batch) {
        if (!visible(name)) continue;
        total++;
        if (page.after !== undefined && name <= page.after) continue;
        if (names.length < page.limit) names.push(name);
        else next ??= names[names.length - 1];
      }
      if (batch.length < SCAN_BATCH) break;
      cursor = batch[batch.length - 1]!;
    }
    const repositories: RepositorySummary[] = [];
    for (const name of names) {
      const row = this.s.summary.get(name);
      if (!row) continue;
      const lastPush = Math.max(row.last_tag ?? 0, row.last_manifest ?? 0);
      repositories.push({ name: row.name, tags: row.tags, size: row.size ?? 0, lastPush: lastPush === 0 ? null : lastPush });
    }
    return { repositories, total, next };
  }

  /** The repository's tags in name order (at most `limit`), each with its manifest. */
  tags(repository: string, limit: number): TagDetail[] {
    const manifests = new Map<string, ManifestRow | null>();
    let loaded = 0;
    const manifestOf = (digest: string): ManifestRow | null => {
      let row = manifests.get(digest);
      if (row === undefined) {
        if (loaded < TAG_CONTENT_BUDGET) {
          row = this.s.manifest.get(repository, digest) ?? null;
          if (row && loaded + row.content.length > TAG_CONTENT_BUDGET) row = { ...row, content: NO_CONTENT };
        } else {
          const meta = this.s.manifestWithoutContent.get(repository, digest);
          row = meta ? { ...meta, content: NO_CONTENT } : null;
        }
        loaded += row?.content.length ?? 0;
        manifests.set(digest, row);
      }
      return row;
    };
    const details: TagDetail[] = [];
    for (const tag of this.s.tags.all(repository, limit)) {
      const m = manifestOf(tag.digest);
      if (!m) continue; // no manifest row: skipped, as the join this replaced did
      details.push({
        tag: tag.tag,
        digest: tag.digest,
        mediaType: m.media_type,
        size: m.size,
        content: m.content,
        artifactType: m.artifact_type,
        createdAt: m.created_at,
        pushedAt: tag.updated_at,
      });
    }
    return details;
  }
}
