/**
 * The durable delivery queue: one row per (endpoint, event) in a SQLite file
 * of its own beside the metadata database (`metadata.db.notifications`),
 * shared by every process of the registry (`--workers N`).
 *
 * Why a file of its own: SQLite has one writer per file, and with pull events
 * subscribed every manifest or blob GET writes a row; in the metadata file
 * those writes would queue behind (and delay) pushes' fsynced commits, the
 * same reason leases have their own file. The queue is written with WAL and
 * synchronous=NORMAL: a row survives the process being killed (the restart
 * delivers it), only an OS crash or power loss may lose the last few.
 *
 * Delivery order per key (a repository, a source URL): only the oldest row of
 * a key can be claimed, so the next event of a repository waits until the one
 * before it was delivered or given up. A claim is a lease (`claim_until`):
 * one statement inside an IMMEDIATE transaction, so two processes never send
 * one row at once; a holder that died leaves a claim that simply runs out.
 */
import Database from "better-sqlite3";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS notification_queue (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  endpoint TEXT NOT NULL,
  ordering_key TEXT NOT NULL,
  event_id TEXT NOT NULL,
  action TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  claimed_by TEXT,
  claim_until INTEGER,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS notification_queue_key ON notification_queue (endpoint, ordering_key, seq);
CREATE TABLE IF NOT EXISTS notification_endpoints (
  endpoint TEXT PRIMARY KEY,
  delivered INTEGER NOT NULL DEFAULT 0,
  failed_attempts INTEGER NOT NULL DEFAULT 0,
  given_up INTEGER NOT NULL DEFAULT 0,
  dropped INTEGER NOT NULL DEFAULT 0,
  last_success_at INTEGER,
  last_failure_at INTEGER,
  last_error TEXT
) WITHOUT ROWID;
`;

export interface QueuedEvent {
  endpoint: string;
  orderingKey: string;
  eventId: string;
  action: string;
  payload: string;
}

export interface ClaimedDelivery {
  seq: number;
  endpoint: string;
  orderingKey: string;
  eventId: string;
  action: string;
  payload: string;
  createdAt: number;
  /** Failed attempts before this one. */
  attempts: number;
}

export interface EndpointCounters {
  endpoint: string;
  delivered: number;
  failedAttempts: number;
  givenUp: number;
  dropped: number;
  pending: number;
  /** Pending events whose last attempt failed (waiting for their retry). */
  retrying: number;
  oldestPendingAt: number | null;
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastError: string | null;
}

interface QueueRow {
  seq: number;
  endpoint: string;
  ordering_key: string;
  event_id: string;
  action: string;
  payload: string;
  created_at: number;
  attempts: number;
}

interface CounterRow {
  endpoint: string;
  delivered: number;
  failed_attempts: number;
  given_up: number;
  dropped: number;
  last_success_at: number | null;
  last_failure_at: number | null;
  last_error: string | null;
}

export class NotificationQueue {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement<[Record<string, string | number>]>;
  private readonly countPending: Database.Statement<[string], { n: number }>;
  private readonly dropOldest: Database.Statement<[string, number]>;
  private readonly touchEndpoint: Database.Statement<[string]>;
  private readonly addDropped: Database.Statement<[number, string]>;
  private readonly due: Database.Statement<[Record<string, string | number>], QueueRow>;
  private readonly claimRow: Database.Statement<[string, number, number, number]>;
  private readonly remove: Database.Statement<[number, string]>;
  private readonly delivered: Database.Statement<[number, string]>;
  private readonly retry: Database.Statement<[number, string, number, string]>;
  private readonly failed: Database.Statement<[number, string, string]>;
  private readonly givenUp: Database.Statement<[string]>;
  private readonly release: Database.Statement<[number, string]>;
  private readonly counters: Database.Statement<[], CounterRow>;
  private readonly pendingStats: Database.Statement<[], { endpoint: string; pending: number; retrying: number; oldest: number | null }>;
  private readonly enqueueMany: Database.Transaction<(events: QueuedEvent[], now: number, limit: number) => void>;
  private readonly claimMany: Database.Transaction<(endpoint: string, holder: string, now: number, leaseMs: number, max: number) => ClaimedDelivery[]>;

  constructor(path: string) {
    this.db = new Database(path, { timeout: 5_000 });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.exec(SCHEMA);
    this.insert = this.db.prepare(
      `INSERT INTO notification_queue (endpoint, ordering_key, event_id, action, payload, created_at, next_at)
       VALUES (@endpoint, @orderingKey, @eventId, @action, @payload, @now, @now)`,
    );
    this.countPending = this.db.prepare("SELECT COUNT(*) AS n FROM notification_queue WHERE endpoint = ?");
    this.dropOldest = this.db.prepare(
      "DELETE FROM notification_queue WHERE seq IN (SELECT seq FROM notification_queue WHERE endpoint = ? ORDER BY seq LIMIT ?)",
    );
    this.touchEndpoint = this.db.prepare("INSERT OR IGNORE INTO notification_endpoints (endpoint) VALUES (?)");
    this.addDropped = this.db.prepare("UPDATE notification_endpoints SET dropped = dropped + ? WHERE endpoint = ?");
    // The head (oldest row) of every key of this endpoint that is due and not held by a live claim.
    this.due = this.db.prepare(
      `SELECT q.seq, q.endpoint, q.ordering_key, q.event_id, q.action, q.payload, q.created_at, q.attempts
         FROM notification_queue q
        WHERE q.endpoint = @endpoint AND q.next_at <= @now AND (q.claim_until IS NULL OR q.claim_until <= @now)
          AND q.seq = (SELECT MIN(h.seq) FROM notification_queue h WHERE h.endpoint = q.endpoint AND h.ordering_key = q.ordering_key)
        ORDER BY q.seq LIMIT @max`,
    );
    this.claimRow = this.db.prepare(
      "UPDATE notification_queue SET claimed_by = ?, claim_until = ? WHERE seq = ? AND (claim_until IS NULL OR claim_until <= ?)",
    );
    this.remove = this.db.prepare("DELETE FROM notification_queue WHERE seq = ? AND claimed_by = ?");
    this.delivered = this.db.prepare("UPDATE notification_endpoints SET delivered = delivered + 1, last_success_at = ? WHERE endpoint = ?");
    this.retry = this.db.prepare(
      "UPDATE notification_queue SET attempts = attempts + 1, next_at = ?, last_error = ?, claimed_by = NULL, claim_until = NULL WHERE seq = ? AND claimed_by = ?",
    );
    this.failed = this.db.prepare(
      "UPDATE notification_endpoints SET failed_attempts = failed_attempts + 1, last_failure_at = ?, last_error = ? WHERE endpoint = ?",
    );
    this.givenUp = this.db.prepare("UPDATE notification_endpoints SET given_up = given_up + 1 WHERE endpoint = ?");
    this.release = this.db.prepare("UPDATE notification_queue SET claimed_by = NULL, claim_until = NULL WHERE seq = ? AND claimed_by = ?");
    this.counters = this.db.prepare("SELECT * FROM notification_endpoints ORDER BY endpoint");
    this.pendingStats = this.db.prepare(
      `SELECT endpoint, COUNT(*) AS pending, SUM(attempts > 0) AS retrying, MIN(created_at) AS oldest
         FROM notification_queue GROUP BY endpoint`,
    );

    this.enqueueMany = this.db.transaction((events: QueuedEvent[], now: number, limit: number) => {
      const endpoints = new Set<string>();
      for (const event of events) {
        this.insert.run({ ...event, now });
        endpoints.add(event.endpoint);
      }
      for (const endpoint of endpoints) {
        this.touchEndpoint.run(endpoint);
        const excess = this.countPending.get(endpoint)!.n - limit;
        if (excess > 0) {
          this.dropOldest.run(endpoint, excess);
          this.addDropped.run(excess, endpoint);
        }
      }
    });
    this.claimMany = this.db.transaction((endpoint: string, holder: string, now: number, leaseMs: number, max: number) => {
      const claimed: ClaimedDelivery[] = [];
      for (const row of this.due.all({ endpoint, now, max })) {
        if (this.claimRow.run(holder, now + leaseMs, row.seq, now).changes === 0) continue;
        claimed.push({
          seq: row.seq,
          endpoint: row.endpoint,
          orderingKey: row.ordering_key,
          eventId: row.event_id,
          action: row.action,
          payload: row.payload,
          createdAt: row.created_at,
          attempts: row.attempts,
        });
      }
      return claimed;
    });
  }

  /** Queues events (in this order) in one transaction; an endpoint over `limit` loses its oldest. */
  enqueue(events: QueuedEvent[], now: number, limit: number): void {
    if (events.length > 0) this.enqueueMany.immediate(events, now, limit);
  }

  /** Claims up to `max` deliveries for this endpoint: the oldest due event of keys nobody holds. */
  claim(endpoint: string, holder: string, now: number, leaseMs: number, max: number): ClaimedDelivery[] {
    if (max <= 0) return [];
    // IMMEDIATE: the read and the claim happen under the write lock, so no other process claims between them.
    return this.claimMany.immediate(endpoint, holder, now, leaseMs, max);
  }

  succeeded(delivery: ClaimedDelivery, holder: string, now: number): void {
    this.db.transaction(() => {
      this.remove.run(delivery.seq, holder);
      this.touchEndpoint.run(delivery.endpoint);
      this.delivered.run(now, delivery.endpoint);
    })();
  }

  /** A failed attempt: retried at `retryAt`, or removed (and counted as given up) when retryAt is null. */
  failedAttempt(delivery: ClaimedDelivery, holder: string, now: number, error: string, retryAt: number | null): void {
    this.db.transaction(() => {
      this.touchEndpoint.run(delivery.endpoint);
      this.failed.run(now, error, delivery.endpoint);
      if (retryAt === null) {
        if (this.remove.run(delivery.seq, holder).changes > 0) this.givenUp.run(delivery.endpoint);
      } else {
        this.retry.run(retryAt, error, delivery.seq, holder);
      }
    })();
  }

  /** Gives a claim back without counting an attempt (shutdown interrupted it). */
  unclaim(delivery: ClaimedDelivery, holder: string): void {
    this.release.run(delivery.seq, holder);
  }

  /** Counters and queue depth per endpoint (every endpoint that ever had an event). */
  stats(): Map<string, EndpointCounters> {
    const out = new Map<string, EndpointCounters>();
    for (const row of this.counters.all()) {
      out.set(row.endpoint, {
        endpoint: row.endpoint,
        delivered: row.delivered,
        failedAttempts: row.failed_attempts,
        givenUp: row.given_up,
        dropped: row.dropped,
        pending: 0,
        retrying: 0,
        oldestPendingAt: null,
        lastSuccessAt: row.last_success_at,
        lastFailureAt: row.last_failure_at,
        lastError: row.last_error,
      });
    }
    for (const row of this.pendingStats.all()) {
      const entry = out.get(row.endpoint);
      if (!entry) continue;
      entry.pending = row.pending;
      entry.retrying = row.retrying ?? 0;
      entry.oldestPendingAt = row.oldest;
    }
    return out;
  }

  close(): void {
    this.db.close();
  }
}
