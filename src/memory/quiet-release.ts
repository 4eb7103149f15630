/**
 * Memory that big pushes grow, handed back once they have gone quiet.
 *
 * Pushes of large blobs take page-aligned slabs for O_DIRECT writes, shared
 * slabs for off-thread hashing and a hashing thread (~10 MiB of its own).
 * Each pool keeps what it grew, so the next push finds its memory mapped and
 * warm; but a registry that took a burst of concurrent pushes then kept
 * 40-50 MiB more resident for as long as it ran, and a mixed load of pulls
 * and small pushes right after peaked at ~1.9x the reference registry's RSS
 * instead of ~1.4x (docs/benchmarks-history.md, "Speed round 7").
 *
 * So the pools register here, and the off-thread hash reports with `busy()`
 * each slab it takes or is lent, which only bodies over 64 KiB cause (small
 * pushes, which also take O_DIRECT slabs, do not: a steady trickle of them
 * must not keep a past burst's memory resident). Once no such take has happened for `quietMs`,
 * each pool lets go of what it holds idle (memory in use stays), then
 * a young collection and a trim of the C heap return the rest. The pools keep
 * their buffers and hand back only their pages (madvise), because freeing the
 * buffers themselves needs a full collection, after which V8 sizes the heap
 * so small that the next 100 MiB push ran ~60 ms more CPU; stopping the
 * hashing thread cost it ~100 ms more. Faulting pages back in costs ~2 us
 * per 4 KiB here. Measured: docs/benchmarks-history.md, "Speed round 7".
 */
import { returnMemory } from "./collect.js";

/** A pool whose idle memory can go. */
export interface Releasable {
  /** Lets go of everything idle; returns whether anything was let go. */
  releaseIdle(): boolean;
}

/** Two seconds: long enough to span the gaps inside a burst of pushes (the bench's one-client rows come 1.1-1.5 s apart), short enough to be gone before the next kind of load. */
export const QUIET_MS = 2000;

export class QuietRelease {
  private readonly pools = new Set<Releasable>();
  private lastBusy = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly quietMs = QUIET_MS,
    private readonly afterRelease: () => void = () => returnMemory(false),
    private readonly now: () => number = Date.now,
  ) {}

  register(pool: Releasable): void {
    this.pools.add(pool);
  }

  unregister(pool: Releasable): void {
    this.pools.delete(pool);
  }

  /** A pool handed out memory: the release waits for another `quietMs` of quiet. */
  busy(): void {
    this.lastBusy = this.now();
    // One timer for many calls: it re-arms itself for the rest of the quiet period when it fires early.
    if (this.timer === null) this.arm(this.quietMs);
  }

  private arm(delayMs: number): void {
    this.timer = setTimeout(() => this.fire(), delayMs);
    this.timer.unref();
  }

  private fire(): void {
    this.timer = null;
    const quietFor = this.now() - this.lastBusy;
    if (quietFor < this.quietMs) return this.arm(this.quietMs - quietFor);
    let released = false;
    for (const pool of this.pools) released = pool.releaseIdle() || released;
    if (released) this.afterRelease();
  }
}

/**
 * The process's (each serving thread's) pools of push memory, first step:
 * the pooled slabs' pages, body chunks still waiting for a collection and the
 * C heap's free pages. Cheap to fault back in, so after QUIET_MS.
 */
export const pushMemory = new QuietRelease();

/**
 * Second step: the hashing thread (~10 MiB for its V8 isolate), which costs
 * the next big push ~100 ms of CPU to start again. After 30 s, so that a
 * registry taking pushes every few seconds keeps it (the S3 part buffers'
 * last step waits as long, src/storage/s3-piece-cache.ts).
 */
export const pushThreads = new QuietRelease(30_000, () => undefined);
