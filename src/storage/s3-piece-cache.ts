/**
 * What this process remembers of the upload sessions it wrote to (s3.ts),
 * to spare S3 round trips; all of it can be lost at any time.
 *
 * PieceCache: bytes of upload pieces this process wrote lately, bounded in size.
 * A piece's key names its offset and size and its bytes never change once a
 * session state names it, so a cached copy is never stale; a piece written
 * by another replica is simply not here and is read from S3.
 */
import { returnMemory } from "../memory/collect.js";

const MAX_ENTRY_BYTES = 8 * 1024 * 1024;
const MAX_TOTAL_BYTES = 32 * 1024 * 1024;

export class PieceCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  get(key: string): Buffer | undefined {
    return this.entries.get(key);
  }

  remember(key: string, body: Buffer): void {
    if (body.length > MAX_ENTRY_BYTES) return;
    this.forget([key]);
    this.entries.set(key, body);
    this.bytes += body.length;
    // Oldest first (Map keeps insertion order).
    for (const [oldest, value] of this.entries) {
      if (this.bytes <= MAX_TOTAL_BYTES) break;
      this.entries.delete(oldest);
      this.bytes -= value.length;
    }
  }

  forget(keys: Iterable<string>): void {
    for (const key of keys) {
      const value = this.entries.get(key);
      if (value === undefined) continue;
      this.entries.delete(key);
      this.bytes -= value.length;
    }
  }
}

/**
 * ETags of parts uploaded by appends of this process that succeeded. Once a
 * session's state counts part n, no writer uploads part n again (appends only
 * add parts above the count), so these stay right; anything missing or not
 * adding up is asked of S3 instead.
 */
export class KnownParts {
  private readonly uploads = new Map<string, Array<{ n: number; etag: string; size: number }>>();

  add(mpu: string, parts: Array<{ n: number; etag: string; size: number }>): void {
    const list = this.uploads.get(mpu) ?? [];
    this.uploads.delete(mpu);
    for (const part of parts) list[part.n - 1] = part;
    this.uploads.set(mpu, list);
    if (this.uploads.size > 10_000) this.uploads.delete(this.uploads.keys().next().value!);
  }

  /** Parts 1..count if all are known and sum to `bytes`; forgets the upload either way. */
  take(mpu: string, count: number, bytes: number): Array<{ n: number; etag: string; size: number }> | null {
    const list = this.uploads.get(mpu);
    this.uploads.delete(mpu);
    if (!list || list.length < count) return null;
    const parts = list.slice(0, count);
    // A plain loop: some() would skip the holes a missing part leaves in the array.
    for (let i = 0; i < count; i++) if (!parts[i] || parts[i].n !== i + 1) return null;
    return parts.reduce((sum, p) => sum + p.size, 0) === bytes ? parts : null;
  }
}

/**
 * Part-sized buffers for appends, reused: a fresh 16 MiB buffer is a fresh
 * mapping whose every page faults on first write (~6 ms of CPU per part on a
 * quiet VM here, up to ~80 ms measured on a busy one). Up to `keep` idle
 * buffers stay.
 *
 * An append holds one buffer while it fills a part and may hold more while
 * earlier parts are still uploading; `tryTakeExtra` hands out such extra
 * buffers only while fewer than `maxExtra` are out process-wide, so
 * concurrent pushes cannot multiply memory: past the budget an append waits
 * for its previous part instead of filling the next one.
 *
 * Memory goes back to the system in two steps once pushes go quiet. After
 * `trimMs` without a buffer taken, a young-generation collection
 * (`collect(false)`) frees the request-body chunks the pushes left for the
 * collector and the C heap those chunks grew is trimmed: glibc keeps the free
 * space inside its heap resident (after 8 concurrent 100 MiB pushes: 75 MiB of
 * heap, 40 MiB of it free; the benchmark's mix right after peaked at 256-297
 * MiB, docs/storage.md). After `idleMs`, the idle buffers are let go too,
 * with a full collection (`collect(true)`, ~10-15 ms on a heap of ~25 MB):
 * buffers that lived long enough to reach V8's old space, including those
 * handed back while `keep` were already idle, are freed by nothing else until
 * one, which a process serving small requests may not run for minutes.
 * 10 s and 30 s, not less: the first push after a step faults its pages in
 * anew (~30-70 ms more CPU for a 100 MiB push after the first step), so a
 * registry pushing every few seconds keeps them.
 */
export class PartBufferPool {
  private readonly idle: Buffer[] = [];
  private extra = 0;
  private lastTake = 0;
  /** The first step ran since the last take. */
  private collected = true;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly size: number,
    private readonly keep = 4,
    private readonly maxExtra = 4,
    private readonly release: { trimMs: number; idleMs: number; collect: (full: boolean) => void } = { trimMs: 10_000, idleMs: 30_000, collect: returnMemory },
    private readonly now: () => number = Date.now,
  ) {}

  take(): Buffer {
    this.lastTake = this.now();
    if (this.collected && this.timer !== null) {
      // Armed for the idle step: the first step is due sooner now (re-armed on give).
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.collected = false;
    return this.idle.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buffer: Buffer): void {
    // Beyond `keep` the buffer is simply dropped: the second step's full collection frees it if nothing did before.
    if (this.idle.length < this.keep) this.idle.push(buffer);
    this.scheduleRelease();
  }

  /** A buffer counted against the process-wide extra budget, or null when it is spent. */
  tryTakeExtra(): Buffer | null {
    if (this.extra >= this.maxExtra) return null;
    this.extra++;
    return this.take();
  }

  giveExtra(buffer: Buffer): void {
    this.extra--;
    this.give(buffer);
  }

  /** Idle buffers held right now (for tests and metrics). */
  get idleCount(): number {
    return this.idle.length;
  }

  private scheduleRelease(): void {
    if (this.timer !== null) return;
    const { trimMs, idleMs } = this.release;
    const due = (this.collected ? idleMs : Math.min(trimMs, idleMs)) - (this.now() - this.lastTake);
    this.timer = setTimeout(() => this.step(), Math.max(due, 1));
    this.timer.unref();
  }

  private step(): void {
    this.timer = null;
    const quiet = this.now() - this.lastTake;
    let collect: "minor" | "full" | null = null;
    if (!this.collected && quiet >= this.release.trimMs) {
      this.collected = true;
      collect = "minor";
    }
    if (quiet >= this.release.idleMs && this.idle.length > 0) {
      this.idle.length = 0;
      collect = "full";
    }
    if (collect !== null) this.release.collect(collect === "full");
    // Nothing left to let go until the next push.
    if (this.collected && this.idle.length === 0) return;
    this.scheduleRelease();
  }
}

/**
 * Session states this process read in full or wrote, for a few seconds: long enough for
 * the rest of the request that read them, too short to outlive it by much.
 */
export class RecentStates<T = import("./s3-layout.js").SessionState> {
  private readonly entries = new Map<string, { state: T; at: number }>();

  constructor(
    private readonly maxAgeMs = 10_000,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  get(id: string): T | undefined {
    const entry = this.entries.get(id);
    if (!entry) return undefined;
    if (this.now() - entry.at > this.maxAgeMs) {
      this.entries.delete(id);
      return undefined;
    }
    return entry.state;
  }

  remember(id: string, state: T): void {
    this.entries.delete(id);
    this.entries.set(id, { state, at: this.now() });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  forget(id: string): void {
    this.entries.delete(id);
  }
}
