/**
 * The SQLite part of federation's source health: one row per foreign layer
 * URL (shared by every process on the database), and the claim row that lets
 * exactly one process run each background re-check round. Used by
 * SqliteMetaStore; kept apart so its tables and their one-time migration
 * live in one place.
 */
import type Database from "better-sqlite3";
import { SOURCE_HEALTH_WINDOW, type RecheckRoundRecord, type SourceHealthEvent, type SourceHealthRecord } from "./meta-store.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS foreign_source_health (
  url TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  successes INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  recent TEXT NOT NULL DEFAULT '',
  last_success_at INTEGER,
  last_failure_at INTEGER,
  last_error TEXT,
  last_latency_ms INTEGER,
  latency_total_ms INTEGER NOT NULL DEFAULT 0,
  latency_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS foreign_recheck_rounds (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  lease_until INTEGER NOT NULL,
  checked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
`;

/** Before per-URL health, one row per host lived here. */
const LEGACY_TABLE = "foreign_sources";
const ROUND = "sources";

interface HealthRow {
  url: string;
  host: string;
  successes: number;
  failures: number;
  consecutive_failures: number;
  recent: string;
  last_success_at: number | null;
  last_failure_at: number | null;
  last_error: string | null;
  last_latency_ms: number | null;
  latency_total_ms: number;
  latency_count: number;
}

interface LegacyRow {
  host: string;
  last_success_at: number | null;
  last_failure_at: number | null;
  last_error: string | null;
  last_latency_ms: number | null;
  latency_total_ms: number;
  latency_count: number;
}

interface RoundRow {
  holder: string;
  started_at: number;
  finished_at: number | null;
  lease_until: number;
  checked: number;
}

export class SqliteSourceHealth {
  private readonly upsert: Database.Statement<[Record<string, string | number | null>]>;
  private readonly list: Database.Statement<[], HealthRow>;
  private readonly forget: Database.Statement<[string]>;
  private readonly claim: Database.Statement<[Record<string, string | number>]>;
  private readonly renew: Database.Statement<[number, string]>;
  private readonly finish: Database.Statement<[number, number, string]>;
  private readonly round: Database.Statement<[], RoundRow>;

  /**
   * Creates the tables and, once, carries a database's per-host health over
   * to the URLs of that host that foreign layers reference (`referencedUrls`).
   */
  static async open(db: Database.Database, referencedUrls: () => Promise<string[]>): Promise<SqliteSourceHealth> {
    db.exec(SCHEMA);
    if (hasLegacyTable(db)) migrateLegacy(db, await referencedUrls());
    return new SqliteSourceHealth(db);
  }

  private constructor(private readonly db: Database.Database) {
    this.upsert = db.prepare(
      `INSERT INTO foreign_source_health (url, host, successes, failures, consecutive_failures, recent, last_success_at, last_failure_at,
                                          last_error, last_latency_ms, latency_total_ms, latency_count)
       VALUES (@url, @host, @ok, 1 - @ok, 1 - @ok, @outcome, @successAt, @failureAt, @error, @latency, @latencyTotal, @latencyCount)
       ON CONFLICT (url) DO UPDATE SET
         successes = successes + excluded.successes,
         failures = failures + excluded.failures,
         consecutive_failures = CASE WHEN excluded.successes > 0 THEN 0 ELSE consecutive_failures + 1 END,
         recent = substr(excluded.recent || recent, 1, @window),
         last_success_at = COALESCE(MAX(excluded.last_success_at, last_success_at), excluded.last_success_at, last_success_at),
         last_failure_at = COALESCE(MAX(excluded.last_failure_at, last_failure_at), excluded.last_failure_at, last_failure_at),
         last_error = CASE WHEN excluded.failures > 0 THEN excluded.last_error ELSE last_error END,
         last_latency_ms = COALESCE(excluded.last_latency_ms, last_latency_ms),
         latency_total_ms = latency_total_ms + excluded.latency_total_ms,
         latency_count = latency_count + excluded.latency_count`,
    );
    this.list = db.prepare("SELECT * FROM foreign_source_health ORDER BY url");
    this.forget = db.prepare("DELETE FROM foreign_source_health WHERE url = ?");
    // One statement, so two processes ticking at once cannot both win.
    this.claim = db.prepare(
      `INSERT INTO foreign_recheck_rounds (name, holder, started_at, finished_at, lease_until, checked)
       VALUES (@name, @holder, @now, NULL, @leaseUntil, 0)
       ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, started_at = excluded.started_at, finished_at = NULL,
                                        lease_until = excluded.lease_until
       WHERE foreign_recheck_rounds.started_at <= @now - @interval
         AND (foreign_recheck_rounds.finished_at IS NOT NULL OR foreign_recheck_rounds.lease_until <= @now)`,
    );
    this.renew = db.prepare(`UPDATE foreign_recheck_rounds SET lease_until = ? WHERE name = '${ROUND}' AND holder = ? AND finished_at IS NULL`);
    this.finish = db.prepare(
      `UPDATE foreign_recheck_rounds SET finished_at = ?, checked = ? WHERE name = '${ROUND}' AND holder = ? AND finished_at IS NULL`,
    );
    this.round = db.prepare(`SELECT holder, started_at, finished_at, lease_until, checked FROM foreign_recheck_rounds WHERE name = '${ROUND}'`);
  }

  record(event: SourceHealthEvent): void {
    const latency = event.latencyMs === null ? null : Math.round(event.latencyMs);
    this.upsert.run({
      url: event.url,
      host: event.host,
      ok: event.ok ? 1 : 0,
      outcome: event.ok ? "1" : "0",
      successAt: event.ok ? event.at : null,
      failureAt: event.ok ? null : event.at,
      error: event.ok ? null : event.error,
      latency,
      latencyTotal: latency ?? 0,
      latencyCount: latency === null ? 0 : 1,
      window: SOURCE_HEALTH_WINDOW,
    });
  }

  all(): SourceHealthRecord[] {
    return this.list.all().map((row) => ({
      url: row.url,
      host: row.host,
      successes: row.successes,
      failures: row.failures,
      consecutiveFailures: row.consecutive_failures,
      recent: row.recent,
      lastSuccessAt: row.last_success_at,
      lastFailureAt: row.last_failure_at,
      lastError: row.last_error,
      lastLatencyMs: row.last_latency_ms,
      averageLatencyMs: row.latency_count === 0 ? null : Math.round(row.latency_total_ms / row.latency_count),
    }));
  }

  forgetUrls(urls: string[]): void {
    this.db.transaction(() => {
      for (const url of urls) this.forget.run(url);
    })();
  }

  claimRound(holder: string, now: number, intervalMs: number, leaseMs: number): boolean {
    return this.claim.run({ name: ROUND, holder, now, interval: intervalMs, leaseUntil: now + leaseMs }).changes > 0;
  }

  renewRound(holder: string, leaseUntil: number): boolean {
    return this.renew.run(leaseUntil, holder).changes > 0;
  }

  finishRound(holder: string, at: number, checked: number): void {
    this.finish.run(at, checked, holder);
  }

  lastRound(): RecheckRoundRecord | null {
    const row = this.round.get();
    if (!row) return null;
    return { holder: row.holder, startedAt: row.started_at, finishedAt: row.finished_at, leaseUntil: row.lease_until, checked: row.checked };
  }
}

function hasLegacyTable(db: Database.Database): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(LEGACY_TABLE) !== undefined;
}

/**
 * Per-host rows cannot say which URL failed, so each host's latest outcome
 * is copied, as one attempt, to every referenced URL of that host; the next
 * attempts (or a re-check round) then build real per-URL history. Runs in
 * one immediate transaction that re-checks the guard, so concurrent
 * processes opening an old database migrate it exactly once.
 */
function migrateLegacy(db: Database.Database, urls: string[]): void {
  db.transaction(() => {
    if (!hasLegacyTable(db)) return;
    const hosts = new Map(db.prepare<[], LegacyRow>(`SELECT * FROM ${LEGACY_TABLE}`).all().map((row) => [row.host, row]));
    const insert = db.prepare<[Record<string, string | number | null>]>(
      `INSERT OR IGNORE INTO foreign_source_health (url, host, successes, failures, consecutive_failures, recent, last_success_at, last_failure_at,
                                                   last_error, last_latency_ms, latency_total_ms, latency_count)
       VALUES (@url, @host, @ok, 1 - @ok, 1 - @ok, @outcome, @successAt, @failureAt, @error, @latency, @latencyTotal, @latencyCount)`,
    );
    for (const url of new Set(urls)) {
      const host = hostOf(url);
      const row = host === null ? undefined : hosts.get(host);
      if (!row || (row.last_success_at === null && row.last_failure_at === null)) continue;
      const ok = (row.last_success_at ?? -1) >= (row.last_failure_at ?? -1);
      const average = row.latency_count > 0 ? Math.round(row.latency_total_ms / row.latency_count) : null;
      insert.run({
        url,
        host: row.host,
        ok: ok ? 1 : 0,
        outcome: ok ? "1" : "0",
        successAt: row.last_success_at,
        failureAt: row.last_failure_at,
        error: row.last_error,
        latency: row.last_latency_ms,
        latencyTotal: average ?? 0,
        latencyCount: average === null ? 0 : 1,
      });
    }
    db.exec(`DROP TABLE ${LEGACY_TABLE}`);
  }).immediate();
}

function hostOf(url: string): string | null {
  try {
    return new URL(url).host;
  } catch {
    return null;
  }
}
