/**
 * Bounds the CPU that password checks can take. A bcrypt check costs ~300 ms
 * of CPU at cost 12, and a failed login is only known to have failed after
 * that check, so rate limits on failures cannot bound it: a few clients
 * sending wrong passwords in parallel would keep every core busy and starve
 * everyone else. Checks run at most `concurrency` at a time; one address may
 * have at most `perAddress` in progress or waiting, and the queue as a whole
 * is bounded. Beyond that the attempt is refused with 429 before any work.
 */
import { RegistryError } from "../oci/errors.js";

export interface CheckGateLimits {
  concurrency: number;
  perAddress: number;
  maxWaiting: number;
}

export const DEFAULT_CHECK_GATE: CheckGateLimits = { concurrency: 2, perAddress: 4, maxWaiting: 256 };

export class CheckGate {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly byAddress = new Map<string, number>();

  constructor(private readonly limits: CheckGateLimits = DEFAULT_CHECK_GATE) {}

  async run<T>(address: string, work: () => Promise<T>): Promise<T> {
    const mine = this.byAddress.get(address) ?? 0;
    if (mine >= this.limits.perAddress || this.waiting.length >= this.limits.maxWaiting) {
      throw new RegistryError("TOOMANYREQUESTS", "too many sign-in attempts in progress; retry in a moment", {
        status: 429,
        headers: { "Retry-After": "1" },
      });
    }
    this.byAddress.set(address, mine + 1);
    try {
      if (this.running >= this.limits.concurrency) await new Promise<void>((resolve) => this.waiting.push(resolve));
      else this.running++;
      try {
        return await work();
      } finally {
        // Hand the slot to the next waiter, or give it back.
        const next = this.waiting.shift();
        if (next) next();
        else this.running--;
      }
    } finally {
      const left = (this.byAddress.get(address) ?? 1) - 1;
      if (left === 0) this.byAddress.delete(address);
      else this.byAddress.set(address, left);
    }
  }
}
