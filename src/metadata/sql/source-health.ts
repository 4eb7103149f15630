/**
 * Federation's source health in the metadata store: one row per foreign
 * layer URL (shared by every process and replica on the database), and the
 * claim row that lets exactly one of them run each background re-check
 * round. Every write is one statement, so concurrent writers need no lock.
 */
import { sql } from "kysely";
import { SOURCE_HEALTH_WINDOW, type RecheckRoundRecord, type SourceHealthEvent, type SourceHealthRecord } from "../meta-store.js";
import type { SqlDialect } from "./dialect.js";
import { changed, type Db } from "./store.js";

/** Before per-URL health, one row per host lived here (SQLite databases only). */
export const LEGACY_HEALTH_TABLE = "foreign_sources";
const ROUND = "sources";

export class SqlSourceHealth {
  constructor(private readonly dialect: SqlDialect) {}

  async record(q: Db, event: SourceHealthEvent): Promise<void> {
    const latency = event.latencyMs === null ? null : Math.round(event.latencyMs);
    const ok = event.ok ? 1 : 0;
    await q
      .insertInto("foreign_source_health")
      .values({
        url: event.url,
        host: event.host,
        successes: ok,
        failures: 1 - ok,
        consecutive_failures: 1 - ok,
        recent: event.ok ? "1" : "0",
        last_success_at: event.ok ? event.at : null,
        last_failure_at: event.ok ? null : event.at,
        last_error: event.ok ? null : event.error,
        last_latency_ms: latency,
        latency_total_ms: latency ?? 0,
        latency_count: latency === null ? 0 : 1,
      })
      .onConflict((oc) =>
        oc.column("url").doUpdateSet((eb) => {
          const old = (column: "successes" | "failures" | "consecutive_failures" | "recent" | "last_success_at" | "last_failure_at" | "last_error" | "last_latency_ms" | "latency_total_ms" | "latency_count") =>
            eb.ref(`foreign_source_health.${column}`);
          const now = (column: "successes" | "failures" | "recent" | "last_success_at" | "last_failure_at" | "last_error" | "last_latency_ms" | "latency_total_ms" | "latency_count") =>
            eb.ref(`excluded.${column}`);
          return {
            successes: sql`${old("successes")} + ${now("successes")}`,
            failures: sql`${old("failures")} + ${now("failures")}`,
            consecutive_failures: sql`case when ${now("successes")} > 0 then 0 else ${old("consecutive_failures")} + 1 end`,
            recent: sql`substr(${now("recent")} || ${old("recent")}, 1, ${SOURCE_HEALTH_WINDOW})`,
            last_success_at: this.dialect.greatest(now("last_success_at"), old("last_success_at")),
            last_failure_at: this.dialect.greatest(now("last_failure_at"), old("last_failure_at")),
            last_error: sql`case when ${now("failures")} > 0 then ${now("last_error")} else ${old("last_error")} end`,
            last_latency_ms: sql`coalesce(${now("last_latency_ms")}, ${old("last_latency_ms")})`,
            latency_total_ms: sql`${old("latency_total_ms")} + ${now("latency_total_ms")}`,
            latency_count: sql`${old("latency_count")} + ${now("latency_count")}`,
          };
        }),
      )
      .execute();
  }

  async all(q: Db): Promise<SourceHealthRecord[]> {
    const rows = await q.selectFrom("foreign_source_health").selectAll().orderBy("url").execute();
    return rows.map((row) => ({
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

  /** One statement, so two processes ticking at once cannot both win. */
  async claimRound(q: Db, holder: string, now: number, intervalMs: number, leaseMs: number): Promise<boolean> {
    const result = await q
      .insertInto("foreign_recheck_rounds")
      .values({ name: ROUND, holder, started_at: now, finished_at: null, lease_until: now + leaseMs, checked: 0 })
      .onConflict((oc) =>
        oc
          .column("name")
          .doUpdateSet((eb) => ({
            holder: eb.ref("excluded.holder"),
            started_at: eb.ref("excluded.started_at"),
            finished_at: null,
            lease_until: eb.ref("excluded.lease_until"),
          }))
          .where("foreign_recheck_rounds.started_at", "<=", now - intervalMs)
          .where((eb) => eb.or([eb("foreign_recheck_rounds.finished_at", "is not", null), eb("foreign_recheck_rounds.lease_until", "<=", now)])),
      )
      .executeTakeFirst();
    return changed(result) > 0;
  }

  async renewRound(q: Db, holder: string, leaseUntil: number): Promise<boolean> {
    const result = await q
      .updateTable("foreign_recheck_rounds")
      .set({ lease_until: leaseUntil })
      .where("name", "=", ROUND)
      .where("holder", "=", holder)
      .where("finished_at", "is", null)
      .executeTakeFirst();
    return changed(result) > 0;
  }

  async finishRound(q: Db, holder: string, at: number, checked: number): Promise<void> {
    await q
      .updateTable("foreign_recheck_rounds")
      .set({ finished_at: at, checked })
      .where("name", "=", ROUND)
      .where("holder", "=", holder)
      .where("finished_at", "is", null)
      .execute();
  }

  async lastRound(q: Db): Promise<RecheckRoundRecord | null> {
    const row = await q.selectFrom("foreign_recheck_rounds").selectAll().where("name", "=", ROUND).executeTakeFirst();
    if (!row) return null;
    return { holder: row.holder, startedAt: row.started_at, finishedAt: row.finished_at, leaseUntil: row.lease_until, checked: row.checked };
  }
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

/**
 * Per-host rows (an old SQLite database's `foreign_sources`) cannot say which
 * URL failed, so each host's latest outcome is copied, as one attempt, to
 * every referenced URL of that host; the next attempts (or a re-check round)
 * then build real per-URL history. Runs inside a migration; drops the table.
 */
export async function migrateLegacyHealth(trx: Db): Promise<void> {
  const legacy = await sql<LegacyRow>`select * from ${sql.table(LEGACY_HEALTH_TABLE)}`.execute(trx);
  const hosts = new Map(legacy.rows.map((row) => [row.host, row]));
  const marks = await trx.selectFrom("foreign_layers").select("urls").execute();
  const urls = new Set<string>();
  for (const mark of marks) {
    try {
      const list = JSON.parse(mark.urls) as unknown;
      if (Array.isArray(list)) for (const url of list) if (typeof url === "string") urls.add(url);
    } catch {
      // an unreadable mark has no URLs to migrate
    }
  }
  for (const url of [...urls].sort()) {
    const host = hostOf(url);
    const row = host === null ? undefined : hosts.get(host);
    if (!row || (row.last_success_at === null && row.last_failure_at === null)) continue;
    const ok = (row.last_success_at ?? -1) >= (row.last_failure_at ?? -1);
    const average = row.latency_count > 0 ? Math.round(row.latency_total_ms / row.latency_count) : null;
    await trx
      .insertInto("foreign_source_health")
      .values({
        url,
        host: row.host,
        successes: ok ? 1 : 0,
        failures: ok ? 0 : 1,
        consecutive_failures: ok ? 0 : 1,
        recent: ok ? "1" : "0",
        last_success_at: row.last_success_at,
        last_failure_at: row.last_failure_at,
        last_error: row.last_error,
        last_latency_ms: row.last_latency_ms,
        latency_total_ms: average ?? 0,
        latency_count: average === null ? 0 : 1,
      })
      .onConflict((oc) => oc.column("url").doNothing())
      .execute();
  }
  await trx.schema.dropTable(LEGACY_HEALTH_TABLE).execute();
}

function hostOf(url: string): string | null {
  try {
    return new URL(url).host;
  } catch {
    return null;
  }
}
