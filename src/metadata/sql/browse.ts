/**
 * The read-only queries of the web UI's JSON API (src/browse/): repository
 * summaries (tag count, stored size, last push) and tag details. Nothing here
 * writes.
 *
 * Speed at 10,000 repositories: names come from the `repositories` UNIQUE
 * index in key order (keyset pagination on the name), and the summaries are
 * computed only for the names of one page, each from its own primary-key
 * range (tags, repository_blobs, manifests all lead with repository_id).
 */
import type { RepositoryPage, RepositorySummary, TagDetail } from "../meta-store.js";
import type { SqlDialect } from "./dialect.js";
import type { Db } from "./store.js";

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

export class SqlBrowse {
  constructor(private readonly dialect: SqlDialect) {}

  private async names(q: Db, after: string, search: string): Promise<string[]> {
    const rows = await q
      .selectFrom("repositories as r")
      .select("r.name")
      .where("r.name", ">", after)
      // A search text with % or _ means itself: no LIKE.
      .$if(search !== "", (qb) => qb.where((eb) => this.dialect.contains(eb.ref("r.name"), search)))
      .where((eb) => eb.exists(eb.selectFrom("manifests as m").select("m.digest").whereRef("m.repository_id", "=", "r.id")))
      .orderBy("r.name")
      .limit(SCAN_BATCH)
      .execute();
    return rows.map((row) => row.name);
  }

  /**
   * One page of repositories (with content) in name order, after `page.after`,
   * whose names contain `page.search` and pass `visible`; `total` counts every
   * such repository.
   */
  async repositories(q: Db, page: { limit: number; after?: string; search?: string }, visible: (name: string) => boolean): Promise<RepositoryPage> {
    const search = page.search ?? "";
    const names: string[] = [];
    let total = 0;
    let cursor = "";
    let next: string | undefined;
    // One pass over the names (in batches from the index): counts the visible
    // ones and keeps the page. 10,000 names take a few milliseconds.
    for (;;) {
      const batch = await this.names(q, cursor, search);
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
      const row = await q
        .selectFrom("repositories as r")
        .select((eb) => [
          "r.name",
          eb.selectFrom("tags as t").select((e) => e.fn.countAll<number>().as("n")).whereRef("t.repository_id", "=", "r.id").as("tags"),
          eb
            .selectFrom("repository_blobs as rb")
            .innerJoin("blobs as b", "b.digest", "rb.digest")
            .select((e) => e.fn.sum<number>("b.size").as("n"))
            .whereRef("rb.repository_id", "=", "r.id")
            .as("size"),
          eb.selectFrom("tags as t").select((e) => e.fn.max("t.updated_at").as("n")).whereRef("t.repository_id", "=", "r.id").as("last_tag"),
          eb.selectFrom("manifests as m").select((e) => e.fn.max("m.created_at").as("n")).whereRef("m.repository_id", "=", "r.id").as("last_manifest"),
        ])
        .where("r.name", "=", name)
        .executeTakeFirst();
      if (!row) continue;
      // PostgreSQL answers SUM over int8 as numeric (a string): numbers here.
      const lastPush = Math.max(Number(row.last_tag ?? 0), Number(row.last_manifest ?? 0));
      repositories.push({ name: row.name, tags: Number(row.tags ?? 0), size: Number(row.size ?? 0), lastPush: lastPush === 0 ? null : lastPush });
    }
    return { repositories, total, next };
  }

  /** The repository's tags in name order (at most `limit`), each with its manifest. */
  async tags(q: Db, repository: string, limit: number): Promise<TagDetail[]> {
    const manifests = new Map<string, ManifestRow | null>();
    let loaded = 0;
    const manifestOf = async (digest: string): Promise<ManifestRow | null> => {
      let row = manifests.get(digest);
      if (row === undefined) {
        const base = q
          .selectFrom("repositories as r")
          .innerJoin("manifests as m", "m.repository_id", "r.id")
          .select(["m.media_type", "m.size", "m.artifact_type", "m.created_at"])
          .where("r.name", "=", repository)
          .where("m.digest", "=", digest);
        if (loaded < TAG_CONTENT_BUDGET) {
          row = (await base.select("m.content").executeTakeFirst()) ?? null;
          if (row && loaded + row.content.length > TAG_CONTENT_BUDGET) row = { ...row, content: NO_CONTENT };
        } else {
          const meta = await base.executeTakeFirst();
          row = meta ? { ...meta, content: NO_CONTENT } : null;
        }
        loaded += row?.content.length ?? 0;
        manifests.set(digest, row);
      }
      return row;
    };
    // Tags alone: joining manifests here would read a large manifest once per tag naming it.
    const tags = await q
      .selectFrom("repositories as r")
      .innerJoin("tags as t", "t.repository_id", "r.id")
      .select(["t.name as tag", "t.manifest_digest as digest", "t.updated_at"])
      .where("r.name", "=", repository)
      .orderBy("t.name")
      .limit(limit)
      .execute();
    const details: TagDetail[] = [];
    for (const tag of tags) {
      const m = await manifestOf(tag.digest);
      if (!m) continue; // no manifest row: skipped, as a join would
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
