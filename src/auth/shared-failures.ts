/**
 * Failed logins shared by every process and replica on one metadata store
 * (SQLite or PostgreSQL), so that N replicas (or `--workers N`) do not give
 * an attacker N times the attempts (rate-limit.ts). Each process keeps its
 * bounded tables (failure-table.ts) as the working copy: before a login it
 * loads the shared failures of the keys involved, and each failure it counts
 * is written here.
 *
 * The rows live in the store's `login_failures` table (sql/auth-state.ts):
 * replicas on different hosts, with data directories of their own, share it
 * as long as they share the database. Rows older than the window are deleted
 * every PRUNE_EVERY writes of a process, and the table is held to about
 * `maxRows` rows (single failures of made-up names go first).
 */
import { createHash } from "node:crypto";
import type { LoginFailureKind, MetaStore } from "../metadata/meta-store.js";

export type FailureKind = LoginFailureKind;

export interface SharedFailureLog {
  /** Failure times of `key` after `since`, ascending, at most the newest `limit`. */
  times(kind: FailureKind, key: string, since: number, limit: number): Promise<number[]>;
  record(kind: FailureKind, key: string, at: number): Promise<void>;
  /**
   * Records a failure before the password is checked unless `limit` are
   * recorded after `since` (atomic across replicas): its id, null when
   * refused, undefined when the store cannot claim (then failures are recorded after the check).
   */
  claim?(kind: FailureKind, key: string, at: number, since: number, limit: number): Promise<number | null | undefined>;
  /** Forgets a claimed failure (the login succeeded). */
  release?(id: number): Promise<void>;
}

const PRUNE_EVERY = 256;

type FailureStore = Required<Pick<MetaStore, "recordLoginFailure" | "loginFailureTimes" | "pruneLoginFailures">> & Pick<MetaStore, "claimLoginAttempt" | "releaseLoginAttempt">;

/** The store's failure log, or undefined when its driver keeps none. */
export function storeFailureLog(meta: MetaStore, windowMs: number, maxRows: number, now: () => number = Date.now): SharedFailureLog | undefined {
  if (!meta.recordLoginFailure || !meta.loginFailureTimes || !meta.pruneLoginFailures) return undefined;
  return new StoreFailureLog(meta as FailureStore, windowMs, maxRows, now);
}

class StoreFailureLog implements SharedFailureLog {
  private writes = 0;
  private pruning: Promise<unknown> | null = null;

  constructor(
    private readonly meta: FailureStore,
    private readonly windowMs: number,
    private readonly maxRows: number,
    private readonly now: () => number,
  ) {}

  times(kind: FailureKind, key: string, since: number, limit: number): Promise<number[]> {
    return this.meta.loginFailureTimes(kind, databaseKey(key), since, limit);
  }

  claim(kind: FailureKind, key: string, at: number, since: number, limit: number): Promise<number | null | undefined> {
    if (!this.meta.claimLoginAttempt) return Promise.resolve(undefined);
    return this.meta.claimLoginAttempt(kind, databaseKey(key), at, since, limit).then(async (id) => {
      if (id !== null) await this.housekeeping();
      return id;
    });
  }

  async release(id: number): Promise<void> {
    await this.meta.releaseLoginAttempt?.(id);
  }

  async record(kind: FailureKind, key: string, at: number): Promise<void> {
    await this.meta.recordLoginFailure(kind, databaseKey(key), at);
    await this.housekeeping();
  }

  private async housekeeping(): Promise<void> {
    // Housekeeping off the login's path, one run at a time per process.
    if (++this.writes % PRUNE_EVERY !== 0 || this.pruning) return;
    this.pruning = this.meta
      .pruneLoginFailures(this.now() - this.windowMs, this.maxRows)
      .catch(() => undefined)
      .finally(() => (this.pruning = null));
  }
}

/**
 * PostgreSQL text cannot hold NUL (pair keys contain one, and so can a user
 * name sent in Basic auth): such keys are stored as their hash. Otherwise a
 * name with a NUL in it would fail every write and escape the shared count.
 */
function databaseKey(key: string): string {
  return key.includes("\u0000") ? `#${createHash("sha256").update(key).digest("base64url")}` : key;
}
