/**
 * Failed logins shared by every process and replica on one metadata store,
 * so that N replicas (or `--workers N`) do not give an attacker N times the
 * attempts (rate-limit.ts). Each process keeps its bounded tables
 * (failure-table.ts) as the working copy: before a login it loads the shared
 * failures of the keys involved, and each failure it counts is written here.
 *
 * The SQLite implementation keeps them in a file of its own next to the
 * metadata database (`<metadata>.logins`), like leases: WAL so processes
 * share it, no fsync (a failure count is worthless after a crash anyway), and
 * no writes queued behind the metadata's fsynced commits. Rows older than
 * the window are deleted as they pass, and the table holds at most about
 * `maxRows` rows: past that, keys with a single failure go first (oldest
 * first), like FailureTable's eviction, so a flood of made-up names costs
 * bounded disk and never wipes the count of a name under attack.
 */
import Database from "better-sqlite3";

export type FailureKind = "user" | "address" | "pair";

export interface SharedFailureLog {
  /** Failure times of `key` after `since`, ascending, at most the newest `limit`. */
  times(kind: FailureKind, key: string, since: number, limit: number): number[];
  record(kind: FailureKind, key: string, at: number): void;
  close(): void;
}

export class SqliteFailureLog implements SharedFailureLog {
  private readonly db: Database.Database;
  private readonly select: Database.Statement<[string, string, number, number], { at: number }>;
  private readonly insert: Database.Statement<[string, string, number]>;
  private readonly prune: Database.Statement<[number]>;
  private readonly count: Database.Statement<[], { n: number }>;
  private readonly trimSingles: Database.Statement<[number]>;
  private readonly trimOldest: Database.Statement<[number]>;
  private writes = 0;

  constructor(
    path: string,
    private readonly windowMs: number,
    private readonly maxRows: number,
    private readonly now: () => number = Date.now,
  ) {
    this.db = new Database(path);
    this.db.pragma("busy_timeout = 5000");
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = OFF");
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS login_failures (kind TEXT NOT NULL, key TEXT NOT NULL, at INTEGER NOT NULL);
       CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (kind, key, at);
       CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures (at);`,
    );
    this.select = this.db.prepare("SELECT at FROM login_failures WHERE kind = ? AND key = ? AND at > ? ORDER BY at DESC LIMIT ?");
    this.insert = this.db.prepare("INSERT INTO login_failures (kind, key, at) VALUES (?, ?, ?)");
    this.prune = this.db.prepare("DELETE FROM login_failures WHERE at <= ?");
    this.count = this.db.prepare("SELECT count(*) AS n FROM login_failures");
    this.trimSingles = this.db.prepare(
      `DELETE FROM login_failures WHERE rowid IN
         (SELECT min(rowid) FROM login_failures GROUP BY kind, key HAVING count(*) = 1 ORDER BY min(at) LIMIT ?)`,
    );
    this.trimOldest = this.db.prepare("DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM login_failures ORDER BY at LIMIT ?)");
  }

  times(kind: FailureKind, key: string, since: number, limit: number): number[] {
    return this.select
      .all(kind, key, since, limit)
      .map((row) => row.at)
      .reverse();
  }

  record(kind: FailureKind, key: string, at: number): void {
    this.insert.run(kind, key, at);
    // Housekeeping every 256 writes: expired rows, then the oldest past the bound.
    if (++this.writes % 256 !== 0) return;
    this.prune.run(this.now() - this.windowMs);
    let excess = this.count.get()!.n - this.maxRows;
    if (excess > 0) excess -= this.trimSingles.run(excess).changes;
    if (excess > 0) this.trimOldest.run(excess);
  }

  close(): void {
    this.db.close();
  }
}
