/**
 * Failed-login limits for a registry where many clients may share one
 * address (a TLS proxy, a NAT) and an attacker may be one of them.
 *
 * - Per user name: after `perUser` failures for a name within `window`, every
 *   attempt for it, from any address, gets 429 before its password is
 *   checked (so a right guess then teaches nothing). Every name counts,
 *   existing or not, so a 429 never tells whether a user exists.
 * - Per address: after `perAddress` failures from an address, its failed
 *   attempts are answered 429 instead of 401, and each name gets only
 *   `LIMITED_ADDRESS_TRIES` more failures from it per window (instead of
 *   `perUser`). A *correct* password for a user who is not locked still
 *   succeeds: an attacker behind the same proxy as everyone else cannot lock
 *   the others (the admin included) out by spraying made-up names.
 * - A success resets nothing: otherwise each login of a victim would hand an
 *   attacker a fresh allowance. Failures leave the sliding window on their own.
 *
 * Counts live in bounded tables (see FailureTable), one per kind, so names
 * sprayed to fill memory cannot push address or pair counts out. With a
 * shared log (shared-failures.ts: the metadata store, SQLite or PostgreSQL)
 * every process and replica on the store counts the same failures: the
 * tables are reloaded from it for the keys of each login (admitShared,
 * failedShared) and each failure is written to it, so three replicas behind
 * a load balancer, on one host or several, allow what one would, not three
 * times as much. The user name's limit is claimed atomically before the
 * password check (admitShared), so logins racing on several replicas cannot
 * overshoot it; the address limits are read before the check and can be
 * overshot by the attempts in flight: the overshoot is at
 * most the number of concurrent attempts, never a multiple of the limit.
 */
import { RegistryError } from "../oci/errors.js";
import { FailureTable, storedKey } from "./failure-table.js";
import type { FailureKind, SharedFailureLog } from "./shared-failures.js";

/** Failures per name allowed from an address that is over its limit, before that pair is refused too. */
export const LIMITED_ADDRESS_TRIES = 3;

export interface LoginLimits {
  windowMs: number;
  perUser: number;
  perAddress: number;
  /** Keys per table (user names, addresses, address+name pairs). */
  maxEntries: number;
}

export type LimitKind = "user" | "address";

/** A login attempt counted before its password check (admitShared): hand it to failedShared or succeeded. */
export interface LoginClaim {
  id: number;
}

export interface FailureOutcome {
  /** The 429 to answer instead of 401 (the address is over its limit), or null. */
  error: RegistryError | null;
  /** Limits this failure has just reached, for a log line. */
  reached: LimitKind[];
}

export class LoginLimiter {
  private readonly users: FailureTable;
  private readonly addresses: FailureTable;
  /** Failures from an address while it was over its limit, per address+name. */
  private readonly pairs: FailureTable;

  constructor(
    readonly limits: LoginLimits,
    private readonly now: () => number = Date.now,
    private readonly shared?: SharedFailureLog,
  ) {
    const common = { windowMs: limits.windowMs, maxEntries: limits.maxEntries, now };
    this.users = new FailureTable({ ...common, limit: limits.perUser });
    this.addresses = new FailureTable({ ...common, limit: limits.perAddress });
    this.pairs = new FailureTable({ ...common, limit: Math.min(LIMITED_ADDRESS_TRIES, limits.perUser) });
  }

  /** Before a password is checked: throws 429 when the name is locked, or used up its tries from this limited address (this process's counts). */
  admit(address: string, user: string): void {
    const userWait = this.users.wait(user);
    const pairWait = this.addresses.wait(address) > 0 ? this.pairs.wait(pairKey(address, user)) : 0;
    const wait = Math.max(userWait, pairWait);
    if (wait > 0) throw tooMany(wait, userWait >= pairWait ? "for this user name" : "for this user name from this address");
  }

  /**
   * Records a failed login in this process's counts (`user` null: a
   * credential without a name, e.g. a refresh token). Returns the 429 to
   * answer when the address was already over its limit; otherwise the caller
   * answers 401.
   */
  failed(address: string, user: string | null): FailureOutcome {
    return this.count(address, user).outcome;
  }

  /**
   * admit(), after loading what every process and replica recorded for this
   * login's keys; then, where the shared log can, claims the attempt against
   * the user name's limit atomically (counted as a failure until succeeded()
   * releases it), so simultaneous attempts on several replicas cannot each
   * pass a check made before any of them was counted. What the HTTP layer calls.
   */
  async admitShared(address: string, user: string, claimAttempt = true): Promise<LoginClaim | undefined> {
    await this.loadShared(address, user);
    this.admit(address, user);
    const claim = this.shared?.claim;
    if (!claim || !claimAttempt) return undefined;
    let id: number | null | undefined;
    try {
      id = await claim.call(this.shared, "user", storedKey(user), this.now(), this.now() - this.limits.windowMs, this.limits.perUser);
    } catch {
      // The shared log is unwritable: this process's own counts limit, failures are recorded after the check.
      return undefined;
    }
    if (id === undefined) return undefined;
    if (id === null) {
      // Attempts on other replicas reached the limit first.
      await this.loadShared(address, user);
      throw tooMany(this.users.wait(user) || this.limits.windowMs, "for this user name");
    }
    return { id };
  }

  /** The claimed attempt's password was right: it is not a failure. */
  async succeeded(claim: LoginClaim | undefined): Promise<void> {
    if (claim) await this.shared?.release?.(claim.id).catch(() => undefined);
  }

  /**
   * failed(), counted on the shared log too (awaited: the next attempt, on any
   * replica, sees it). With `claim`, the user name's failure is already recorded.
   */
  async failedShared(address: string, user: string | null, claim?: LoginClaim): Promise<FailureOutcome> {
    await this.loadShared(address, user);
    const { outcome, writes } = this.count(address, user, claim !== undefined);
    if (this.shared) {
      const at = this.now();
      try {
        await Promise.all(writes.map(([kind, key]) => this.shared!.record(kind, storedKey(key), at)));
      } catch {
        // The shared log is unwritable: counted locally (never fewer than one replica's).
      }
    }
    return outcome;
  }

  private count(address: string, user: string | null, claimed = false): { outcome: FailureOutcome; writes: Array<[FailureKind, string]> } {
    const limited = this.addresses.wait(address) > 0;
    const reached: LimitKind[] = [];
    const writes: Array<[FailureKind, string]> = [["address", address]];
    if (crossed(this.addresses, address, this.limits.perAddress)) reached.push("address");
    if (user !== null) {
      if (claimed) {
        // The claim is in the shared log, so the load above counted it already.
        if (this.users.count(user) === this.limits.perUser) reached.push("user");
      } else {
        if (crossed(this.users, user, this.limits.perUser)) reached.push("user");
        writes.push(["user", user]);
      }
      if (limited) {
        this.pairs.record(pairKey(address, user));
        writes.push(["pair", pairKey(address, user)]);
      }
    }
    return { outcome: { error: limited ? tooMany(this.addresses.wait(address), "from this address") : null, reached }, writes };
  }

  /** Replaces the local counts of this login's keys with what every process recorded. */
  private async loadShared(address: string, user: string | null): Promise<void> {
    const shared = this.shared;
    if (!shared) return;
    const since = this.now() - this.limits.windowMs;
    const pairLimit = Math.min(LIMITED_ADDRESS_TRIES, this.limits.perUser);
    try {
      const [addressTimes, userTimes, pairTimes] = await Promise.all([
        shared.times("address", storedKey(address), since, this.limits.perAddress),
        user === null ? null : shared.times("user", storedKey(user), since, this.limits.perUser),
        user === null ? null : shared.times("pair", storedKey(pairKey(address, user)), since, pairLimit),
      ]);
      // Never fewer than this process counted itself (a failure whose write failed stays counted here).
      merge(this.addresses, address, addressTimes);
      if (user === null) return;
      merge(this.users, user, userTimes!);
      merge(this.pairs, pairKey(address, user), pairTimes!);
    } catch {
      // The shared log is unreadable: this process's own counts still limit (never fewer than one replica's).
    }
  }

  /** Keys held per table, for tests and metrics. */
  get sizes(): { users: number; addresses: number; pairs: number } {
    return { users: this.users.size, addresses: this.addresses.size, pairs: this.pairs.size };
  }
}

/** Loads the shared times of `key` unless this process already counts more of them itself. */
function merge(table: FailureTable, key: string, times: number[]): void {
  if (times.length >= table.count(key)) table.load(key, times);
}

/** Records a failure; true when it is the one that brings `key` to its limit (a table keeps no more than `limit`). */
function crossed(table: FailureTable, key: string, limit: number): boolean {
  const before = table.count(key);
  return table.record(key) >= limit && before < limit;
}

function pairKey(address: string, user: string): string {
  return `${address}\u0000${user}`;
}

function tooMany(waitMs: number, what: string): RegistryError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new RegistryError("TOOMANYREQUESTS", `too many failed logins ${what}; try again in ${seconds} seconds`, {
    headers: { "Retry-After": String(seconds) },
    detail: { retryAfterSeconds: seconds },
  });
}
