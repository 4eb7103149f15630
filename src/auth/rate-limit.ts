/**
 * Failed-login limiter: after `perUser` failures for one user name, or
 * `perAddress` from one client address, within `window`, further attempts
 * get 429 TOOMANYREQUESTS with Retry-After until the oldest failure ages out.
 * Attempts are refused before the password is checked, so a locked-out
 * attacker learns nothing even when guessing right. Per process: with
 * several workers each keeps its own counts.
 */
import { RegistryError } from "../oci/errors.js";

const MAX_KEYS = 100_000;

export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly windowMs: number,
    private readonly perUser: number,
    private readonly perAddress: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Throws 429 when `address` or `user` has failed too often recently. */
  check(address: string, user: string | null): void {
    const wait = Math.max(
      this.waitFor(`a:${address}`, this.perAddress),
      user === null ? 0 : this.waitFor(`u:${user}`, this.perUser),
    );
    if (wait <= 0) return;
    const seconds = Math.ceil(wait / 1000);
    throw new RegistryError("TOOMANYREQUESTS", `too many failed logins; try again in ${seconds} seconds`, {
      headers: { "Retry-After": String(seconds) },
      detail: { retryAfterSeconds: seconds },
    });
  }

  fail(address: string, user: string | null): void {
    if (this.failures.size >= MAX_KEYS) this.sweep();
    this.record(`a:${address}`);
    if (user !== null) this.record(`u:${user}`);
  }

  succeed(user: string): void {
    this.failures.delete(`u:${user}`);
  }

  private record(key: string): void {
    const list = this.recent(key);
    list.push(this.now());
    this.failures.set(key, list);
  }

  private recent(key: string): number[] {
    const cutoff = this.now() - this.windowMs;
    const list = (this.failures.get(key) ?? []).filter((t) => t > cutoff);
    if (list.length === 0) this.failures.delete(key);
    return list;
  }

  /** Milliseconds until fewer than `max` failures remain in the window (0: not limited). */
  private waitFor(key: string, max: number): number {
    const list = this.recent(key);
    if (list.length < max) return 0;
    return list[list.length - max]! + this.windowMs - this.now();
  }

  private sweep(): void {
    for (const key of [...this.failures.keys()]) this.recent(key);
    if (this.failures.size >= MAX_KEYS) this.failures.clear();
  }
}
