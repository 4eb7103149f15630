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
 * before it was delivered or given up. That row carries `head = 1`, kept up
 * to date on every insert and delete, so finding what is due reads the heads
 * (one per repository with pending events), not the whole backlog; and each
 * endpoint's count is a column, not a COUNT(*): a full queue of 100 000 rows
 * costs an enqueue or a claim no more than an empty one. A claim is a lease (`claim_until`):
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
  last_error TEXT,
  head INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS notification_queue_key ON notification_queue (endpoint, ordering_key, seq);
CREATE INDEX IF NOT EXISTS notification_queue_age ON notification_queue (endpoint, seq);
CREATE INDEX IF NOT EXISTS notification_queue_heads ON notification_queue (endpoint, head, next_at);
CREATE TABLE IF NOT EXISTS notification_endpoints (
  endpoint TEXT PRIMARY KEY,
  queued INTEGER NOT NULL DEFAULT 0,
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
  /** The next events of the same key, sent in the same envelope after this one (oldest first). */
  followers: Array<{ seq: number; eventId: string; payload: string }>;
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
  queued: number;
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
  private readonly queuedCount: Database.Statement<[string], { queued: number }>;
  private readonly addQueued: Database.Statement<[number, string]>;
  private readonly oldest: Database.Statement<[string, number], { seq: number; ordering_key: string }>;
  private readonly removeSeq: Database.Statement<[number]>;
  private readonly promote: Database.Statement<[string, string]>;
  private readonly touchEndpoint: Database.Statement<[string]>;
  private readonly addDropped: Database.Statement<[number, string]>;
  private readonly due: Database.Statement<[Record<string, string | number>], QueueRow>;
  private readonly claimRow: Database.Statement<[string, number, number, number]>;
  private readonly remove: Database.Statement<[number, string]>;
  private readonly followers: Database.Statement<[string, string, number, number], { seq: number; event_id: string; payload: string }>;
  private readonly claimFollower: Database.Statement<[string, number, number]>;
  private readonly delivered: Database.Statement<[number, number, string]>;
  private readonly retry: Database.Statement<[number, string, number, string]>;
  private readonly failed: Database.Statement<[number, string, string]>;
  private readonly givenUp: Database.Statement<[number, string]>;
  private readonly release: Database.Statement<[number, string]>;
  private readonly counters: Database.Statement<[], CounterRow>;
  private readonly oldestAt: Database.Statement<[string], { created_at: number }>;
  private readonly retryingCount: Database.Statement<[string], { n: number }>;
  private readonly enqueueMany: Database.Transaction<(events: QueuedEvent[], now: number, limit: number) => void>;
  private readonly claimMany: Database.Transaction<
    (endpoint: string, holder: string, now: number, leaseMs: number, max: number, batch: number) => ClaimedDelivery[]
  >;

  constructor(path: string) {
    this.db = new Database(path, { timeout: 5_000 });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.exec(SCHEMA);
    this.insert = this.db.prepare(
      `INSERT INTO notification_queue (endpoint, ordering_key, event_id, action, payload, created_at, next_at, head)
       SELECT @endpoint, @orderingKey, @eventId, @action, @payload, @now, @now,
              NOT EXISTS (SELECT 1 FROM notification_queue WHERE endpoint = @endpoint AND ordering_key = @orderingKey)`,
    );
    this.queuedCount = this.db.prepare("SELECT queued FROM notification_endpoints WHERE endpoint = ?");
    this.addQueued = this.db.prepare("UPDATE notification_endpoints SET queued = queued + ? WHERE endpoint = ?");
    this.oldest = this.db.prepare("SELECT seq, ordering_key FROM notification_queue WHERE endpoint = ? ORDER BY seq LIMIT ?");
    this.removeSeq = this.db.prepare("DELETE FROM notification_queue WHERE seq = ?");
    // The oldest remaining row of a key becomes its head.
    this.promote = this.db.prepare(
      `UPDATE notification_queue SET head = 1
        WHERE seq = (SELECT MIN(seq) FROM notification_queue WHERE endpoint = ? AND ordering_key = ?) AND head = 0`,
    );
    this.touchEndpoint = this.db.prepare("INSERT OR IGNORE INTO notification_endpoints (endpoint) VALUES (?)");
    this.addDropped = this.db.prepare("UPDATE notification_endpoints SET dropped = dropped + ? WHERE endpoint = ?");
    // The head (oldest row) of every key of this endpoint that is due and not held by a live claim.
    this.due = this.db.prepare(
      `SELECT seq, endpoint, ordering_key, event_id, action, payload, created_at, attempts
         FROM notification_queue
        WHERE endpoint = @endpoint AND head = 1 AND next_at <= @now AND (claim_until IS NULL OR claim_until <= @now)
        ORDER BY seq LIMIT @max`,
    );
    this.claimRow = this.db.prepare(
      "UPDATE notification_queue SET claimed_by = ?, claim_until = ? WHERE seq = ? AND (claim_until IS NULL OR claim_until <= ?)",
    );
    this.remove = this.db.prepare("DELETE FROM notification_queue WHERE seq = ? AND claimed_by = ?");
    this.followers = this.db.prepare(
      "SELECT seq, event_id, payload FROM notification_queue WHERE endpoint = ? AND ordering_key = ? AND seq > ? ORDER BY seq LIMIT ?",
    );
    // Rows behind a head are never claimed on their own, so whoever holds the head takes them.
    this.claimFollower = this.db.prepare("UPDATE notification_queue SET claimed_by = ?, claim_until = ? WHERE seq = ?");
    this.delivered = this.db.prepare("UPDATE notification_endpoints SET delivered = delivered + ?, last_success_at = ? WHERE endpoint = ?");
    this.retry = this.db.prepare(
      "UPDATE notification_queue SET attempts = attempts + 1, next_at = ?, last_error = ?, claimed_by = NULL, claim_until = NULL WHERE seq = ? AND claimed_by = ?",
    );
    this.failed = this.db.prepare(
      "UPDATE notification_endpoints SET failed_attempts = failed_attempts + 1, last_failure_at = ?, last_error = ? WHERE endpoint = ?",
    );
    this.givenUp = this.db.prepare("UPDATE notification_endpoints SET given_up = given_up + ? WHERE endpoint = ?");
    this.release = this.db.prepare("UPDATE notification_queue SET claimed_by = NULL, claim_until = NULL WHERE seq = ? AND claimed_by = ?");
    this.counters = this.db.prepare("SELECT * FROM notification_endpoints ORDER BY endpoint");
    this.oldestAt = this.db.prepare("SELECT created_at FROM notification_queue WHERE endpoint = ? ORDER BY seq LIMIT 1");
    // Only heads are ever attempted, so only heads can be waiting for a retry.
    this.retryingCount = this.db.prepare("SELECT COUNT(*) AS n FROM notification_queue WHERE endpoint = ? AND head = 1 AND attempts > 0");

    this.enqueueMany = this.db.transaction((events: QueuedEvent[], now: number, limit: number) => {
      const endpoints = new Set<string>();
      for (const event of events) {
        this.touchEndpoint.run(event.endpoint);
        this.insert.run({ ...event, now });
        this.addQueued.run(1, event.endpoint);
        endpoints.add(event.endpoint);
      }
      for (const endpoint of endpoints) {
        const excess = this.queuedCount.get(endpoint)!.queued - limit;
        if (excess <= 0) continue;
        const keys = new Set<string>();
        for (const row of this.oldest.all(endpoint, excess)) {
          this.removeSeq.run(row.seq);
          keys.add(row.ordering_key);
        }
        for (const key of keys) this.promote.run(endpoint, key);
        this.addQueued.run(-excess, endpoint);
        this.addDropped.run(excess, endpoint);
      }
    });
    this.claimMany = this.db.transaction((endpoint: string, holder: string, now: number, leaseMs: number, max: number, batch: number) => {
      const claimed: ClaimedDelivery[] = [];
      for (const row of this.due.all({ endpoint, now, max })) {
        if (this.claimRow.run(holder, now + leaseMs, row.seq, now).changes === 0) continue;
        const followers = batch > 1 ? this.followers.all(endpoint, row.ordering_key, row.seq, batch - 1) : [];
        for (const follower of followers) this.claimFollower.run(holder, now + leaseMs, follower.seq);
        claimed.push({
          seq: row.seq,
          endpoint: row.endpoint,
          orderingKey: row.ordering_key,
          eventId: row.event_id,
          action: row.action,
          payload: row.payload,
          createdAt: row.created_at,
          attempts: row.attempts,
          followers: followers.map((f) => ({ seq: f.seq, eventId: f.event_id, payload: f.payload })),
        });
      }
      return claimed;
    });
  }

  /** Queues events (in this order) in one transaction; an endpoint over `limit` loses its oldest. */
  enqueue(events: QueuedEvent[], now: number, limit: number): void {
    if (events.length > 0) this.enqueueMany.immediate(events, now, limit);
  }

  /**
   * Claims up to `max` deliveries for this endpoint: the oldest due event of
   * keys nobody holds, each with up to `batch - 1` events that follow it.
   */
  claim(endpoint: string, holder: string, now: number, leaseMs: number, max: number, batch = 1): ClaimedDelivery[] {
    if (max <= 0) return [];
    // IMMEDIATE: the read and the claim happen under the write lock, so no other process claims between them.
    return this.claimMany.immediate(endpoint, holder, now, leaseMs, max, batch);
  }

  succeeded(delivery: ClaimedDelivery, holder: string, now: number): void {
    this.db.transaction(() => {
      this.touchEndpoint.run(delivery.endpoint);
      // A claim that ran out belongs to whoever took the event over: it sends and counts it.
      const removed = this.removeClaimed(delivery, holder);
      if (removed > 0) this.delivered.run(removed, now, delivery.endpoint);
    }).immediate();
  }

  /**
   * Removes a claimed delivery's rows (those whose claim is still ours) and
   * makes the next row of its key the head; returns how many were removed.
   */
  private removeClaimed(delivery: ClaimedDelivery, holder: string): number {
    let removed = 0;
    for (const seq of [delivery.seq, ...delivery.followers.map((f) => f.seq)]) removed += this.remove.run(seq, holder).changes;
    if (removed === 0) return 0;
    this.addQueued.run(-removed, delivery.endpoint);
    this.promote.run(delivery.endpoint, delivery.orderingKey);
    return removed;
  }

  /** A failed attempt: retried at `retryAt`, or removed (and counted as given up) when retryAt is null. */
  failedAttempt(delivery: ClaimedDelivery, holder: string, now: number, error: string, retryAt: number | null): void {
    this.db.transaction(() => {
      this.touchEndpoint.run(delivery.endpoint);
      this.failed.run(now, error, delivery.endpoint);
      if (retryAt === null) {
        const removed = this.removeClaimed(delivery, holder);
        if (removed > 0) this.givenUp.run(removed, delivery.endpoint);
      } else {
        this.retry.run(retryAt, error, delivery.seq, holder);
        for (const follower of delivery.followers) this.release.run(follower.seq, holder);
      }
    }).immediate();
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
        pending: row.queued,
        retrying: row.queued > 0 ? this.retryingCount.get(row.endpoint)!.n : 0,
        oldestPendingAt: row.queued > 0 ? (this.oldestAt.get(row.endpoint)?.created_at ?? null) : null,
        lastSuccessAt: row.last_success_at,
        lastFailureAt: row.last_failure_at,
        lastError: row.last_error,
      });
    }
    return out;
  }

  close(): void {
    this.db.close();
  }
}
