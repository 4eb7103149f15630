/**
 * Retention of cached content (mirrors[].retention): a cached tag that no
 * client pulled for that long is dropped, with its manifest when no other tag
 * names it; garbage collection then frees the blobs nothing references any
 * more (after its grace period), as for any deleted content.
 *
 * When each tag was last pulled is kept in a database file of its own
 * (`<metadata>.mirrors`, WAL, no fsync per write), shared by every worker
 * process: pulls are frequent reads, and writing them into the metadata file
 * would queue them behind pushes' fsynced commits. A pull is written at most
 * once per tenth of the retention period per tag.
 */
import Database from "better-sqlite3";
import type { Logger } from "pino";
import type { MetaStore } from "../metadata/meta-store.js";
import { LeaseLocks } from "../registry/leases.js";
import type { Mirror } from "./mirror.js";

export class PullLog {
  private readonly db: Database.Database;
  private readonly upsert: Database.Statement<[string, string, number]>;
  private readonly select: Database.Statement<[string, string], { pulled_at: number }>;
  private readonly remove: Database.Statement<[string, string]>;
  /** When this process last wrote each tag's pull (bounded: the oldest are forgotten first). */
  private readonly written = new Map<string, number>();

  constructor(path: string) {
    this.db = new Database(path, { timeout: 5_000 });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.exec("CREATE TABLE IF NOT EXISTS mirror_tag_pulls (repository TEXT NOT NULL, tag TEXT NOT NULL, pulled_at INTEGER NOT NULL, PRIMARY KEY (repository, tag))");
    this.upsert = this.db.prepare(
      "INSERT INTO mirror_tag_pulls (repository, tag, pulled_at) VALUES (?, ?, ?) ON CONFLICT (repository, tag) DO UPDATE SET pulled_at = MAX(pulled_at, excluded.pulled_at)",
    );
    this.select = this.db.prepare("SELECT pulled_at FROM mirror_tag_pulls WHERE repository = ? AND tag = ?");
    this.remove = this.db.prepare("DELETE FROM mirror_tag_pulls WHERE repository = ? AND tag = ?");
  }

  record(repository: string, tag: string, at: number, minIntervalMs: number): void {
    const key = `${repository}:${tag}`;
    const last = this.written.get(key);
    if (last !== undefined && at - last < minIntervalMs) return;
    this.upsert.run(repository, tag, at);
    this.written.delete(key);
    this.written.set(key, at);
    if (this.written.size > 100_000) this.written.delete(this.written.keys().next().value!);
  }

  lastPull(repository: string, tag: string): number | null {
    return this.select.get(repository, tag)?.pulled_at ?? null;
  }

  forget(repository: string, tag: string): void {
    this.remove.run(repository, tag);
    this.written.delete(`${repository}:${tag}`);
  }

  close(): void {
    this.db.close();
  }
}

/** Drops the mirror's tags not pulled within its retention; returns the tags dropped. */
export async function sweepMirror(mirror: Mirror, meta: MetaStore, pulls: PullLog, now = Date.now()): Promise<string[]> {
  const retention = mirror.config.retention;
  if (retention === undefined) return [];
  const dropped: string[] = [];
  let after: string | undefined;
  for (;;) {
    const names = await meta.listRepositories({ limit: 1000, ...(after !== undefined ? { after } : {}) });
    if (names.length === 0) break;
    after = names[names.length - 1];
    for (const name of names) {
      if (!mirror.owns(name)) continue;
      for (const tag of await meta.listTags(name, { limit: 100_000 })) {
        const last = pulls.lastPull(name, tag);
        // A tag cached before retention was configured (or before this file existed) starts its clock now.
        if (last === null) {
          pulls.record(name, tag, now, 0);
          continue;
        }
        if (now - last <= retention) continue;
        const manifest = await meta.getTaggedManifest(name, tag);
        await meta.deleteTag(name, tag);
        if (manifest && (await meta.tagsOf?.(name, manifest.digest))?.length === 0) await meta.deleteManifest(name, manifest.digest);
        pulls.forget(name, tag);
        dropped.push(`${name}:${tag}`);
      }
    }
    if (names.length < 1000) break;
  }
  return dropped;
}

/** Sweeps every mirror with a retention, on a schedule, one process at a time. */
export function startRetention(mirrors: readonly Mirror[], meta: MetaStore, pulls: PullLog, logger: Logger): () => void {
  const leases = new LeaseLocks(meta, { ttlMs: 60_000, waitMs: 0 });
  const timers: NodeJS.Timeout[] = [];
  for (const mirror of mirrors) {
    const retention = mirror.config.retention;
    if (retention === undefined) continue;
    const every = Math.min(Math.max(Math.floor(retention / 4), 250), 3_600_000);
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      leases
        .tryRun(`mirror-retention:${mirror.prefix}`, () => sweepMirror(mirror, meta, pulls))
        .then((dropped) => {
          if (dropped && dropped.length > 0) logger.info({ mirror: mirror.prefix, dropped: dropped.slice(0, 50), count: dropped.length }, "mirror retention dropped tags not pulled recently");
        })
        .catch((error: unknown) => logger.error({ err: error, mirror: mirror.prefix }, "mirror retention failed"))
        .finally(() => (running = false));
    }, every);
    timer.unref();
    timers.push(timer);
  }
  return () => {
    for (const timer of timers) clearInterval(timer);
  };
}
