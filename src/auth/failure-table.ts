/**
 * Recent failures per key (a user name, an address, a pair) in a sliding
 * window, in bounded memory.
 *
 * Each key keeps at most `limit` timestamps: nothing older than the last
 * `limit` failures matters for "is this key over its limit, and until when".
 * The table holds at most `maxEntries` keys. When it is full, a new key
 * replaces one of the `SAMPLE` least recently failing keys, the one with the
 * fewest failures still in the window (an expired key first, a locked key
 * last). So filling the table with fresh names, which is cheap for an
 * attacker, evicts other fresh names and never resets every count at once,
 * nor the count of a key that is being attacked.
 */
import { createHash } from "node:crypto";

const SAMPLE = 32;
/** Longer keys are stored as their SHA-256, so a 16 KiB user name costs no more than a short one. */
const MAX_KEY_LENGTH = 128;

export interface FailureTableOptions {
  limit: number;
  windowMs: number;
  maxEntries: number;
  now: () => number;
}

export class FailureTable {
  /** Key → ascending failure times; Map order is least recently failing first. */
  private readonly entries = new Map<string, number[]>();

  constructor(private readonly options: FailureTableOptions) {}

  get size(): number {
    return this.entries.size;
  }

  /** Failures of `key` still in the window (at most `limit`). */
  count(key: string): number {
    const times = this.entries.get(storedKey(key));
    return times === undefined ? 0 : this.live(times);
  }

  /** Milliseconds until `key` has fewer than `limit` failures in the window; 0 when it has already. */
  wait(key: string): number {
    const times = this.entries.get(storedKey(key));
    const { limit, windowMs, now } = this.options;
    if (times === undefined || this.live(times) < limit) return 0;
    return Math.max(0, times[times.length - limit]! + windowMs - now());
  }

  /**
   * Replaces what the table knows of `key` with `times` (ascending): the
   * failures every process recorded, read from the shared log (shared-failures.ts).
   */
  load(key: string, times: number[]): void {
    const stored = storedKey(key);
    if (times.length === 0) {
      this.entries.delete(stored);
      return;
    }
    if (!this.entries.has(stored) && this.entries.size >= this.options.maxEntries) this.evictOne();
    this.entries.delete(stored);
    this.entries.set(stored, times.slice(-this.options.limit));
  }

  /** Records a failure now; returns the failures in the window including it. */
  record(key: string): number {
    const stored = storedKey(key);
    const times = this.entries.get(stored);
    if (times === undefined) {
      if (this.entries.size >= this.options.maxEntries) this.evictOne();
      this.entries.set(stored, [this.options.now()]);
      return 1;
    }
    times.push(this.options.now());
    if (times.length > this.options.limit) times.splice(0, times.length - this.options.limit);
    // Re-inserting moves the key to the end: the front stays the least recently failing.
    this.entries.delete(stored);
    this.entries.set(stored, times);
    return this.live(times);
  }

  private live(times: number[]): number {
    const cutoff = this.options.now() - this.options.windowMs;
    let first = 0;
    while (first < times.length && times[first]! <= cutoff) first++;
    return times.length - first;
  }

  private evictOne(): void {
    let victim: string | undefined;
    let fewest = Infinity;
    let seen = 0;
    for (const [key, times] of this.entries) {
      const live = this.live(times);
      if (live < fewest) {
        victim = key;
        fewest = live;
        if (live === 0) break;
      }
      if (++seen >= SAMPLE) break;
    }
    if (victim !== undefined) this.entries.delete(victim);
  }
}

/** The key as kept (long keys as their hash): also the shared log's key. */
export function storedKey(key: string): string {
  return key.length <= MAX_KEY_LENGTH ? key : `#${createHash("sha256").update(key).digest("base64url")}`;
}
