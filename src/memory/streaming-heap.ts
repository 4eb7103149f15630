/**
 * Room in V8's heap while a large body streams through JavaScript.
 *
 * `ferry serve` lets the old generation grow to twice what the last full
 * collection found live (heap-growth.ts): that keeps a mixed request load's
 * memory near the reference registry's. But V8 also counts the array-buffer
 * memory allocated since the last mark-compact against that limit, even
 * buffers that die young. A body read through Node's HTTP client (a mirror's
 * or the federation cache's fetch from an upstream) allocates a fresh buffer
 * for every socket read and copies each parsed piece into another: about two
 * bytes of short-lived buffers per byte. With a heap of ~17 MB live the 2x
 * limit leaves ~20 MB of slack, so such a stream set off a mark-compact every
 * 10-15 MiB, 5-6 per 100 MiB, each marking the whole heap again. Measured
 * on a mirror that had served before (`bench/mirror-cpu.ts --warm`, a new
 * 100 MiB blob per pull): 38 mark-compacts over six cold pulls, 13 with more
 * room while the fetch ran, and less mirror CPU per pull (docs/mirrors.md
 * "Speed" has the figures and what the room costs).
 *
 * So while such a body streams, the growth factor is raised: to 4x, or less
 * on a heap so large that 4x would grant more than `STREAMING_EXTRA_BYTES`
 * over 2x (a large heap's 2x slack is already room enough). V8 reads the flag
 * whenever it sizes the heap after a collection, so a change takes effect at
 * the next one. Once no stream has run for `quietMs`, the factor is 2x again.
 * Nothing is collected then: what the streams left goes back as V8 reduces
 * the idle heap on its own (a forced full collection and trim there cost
 * ~0.5 s of CPU per pull, measured: more than the room saves). Bodies that Ferry's native paths move (pushes and
 * pulls on plain TCP) never reach JavaScript and do not count.
 *
 * The flag is the process's, so serving threads share one count of streams
 * (a SharedArrayBuffer handed to each thread): the factor goes up with the
 * first stream of any thread and down only once every thread's are over.
 */
import v8 from "node:v8";
import { chosenHeapGrowth, HEAP_GROWING_PERCENT } from "./heap-growth.js";

/** While a large body streams through JavaScript: the old generation may grow to 4x what was live. */
export const STREAMING_HEAP_GROWING_PERCENT = 300;

/** At most this much room over the 2x limit: on a large heap the factor stays lower. */
export const STREAMING_EXTRA_BYTES = 64 * 1024 * 1024;

/** Bodies announced at this size or more count as streams: below it, they fit in the slack a 2x limit leaves. */
export const STREAMING_MIN_BYTES = 4 * 1024 * 1024;

/** How long after the last stream the factor goes back: a burst of pulls keeps the room it already has. */
export const STREAMING_QUIET_MS = 2000;

/**
 * A stream still counted after this long is let go: a body nobody reads or
 * closes must not keep the room (and the memory it lets V8 keep) forever.
 */
export const STREAMING_MAX_MS = 15 * 60 * 1000;

/** Slots of the shared count: streams running in the process, and whether the factor is raised (0/1). */
const STREAMS = 0;
const RAISED = 1;

/** Fresh shared state for StreamingHeap instances (threads) that count together. */
export function newStreamingState(): SharedArrayBuffer {
  return new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
}

/** The factor for a stream: 4x, or what keeps the room over 2x within STREAMING_EXTRA_BYTES of a heap of `liveBytes`. */
export function streamingPercent(normalPercent: number, liveBytes: number): number {
  const bounded = normalPercent + Math.floor((STREAMING_EXTRA_BYTES * 100) / Math.max(liveBytes, 1));
  return Math.max(normalPercent, Math.min(STREAMING_HEAP_GROWING_PERCENT, bounded));
}

export interface StreamingHeapOptions {
  setPercent?: (percent: number) => void;
  /** The heap's live size now (what V8 multiplies by the factor). */
  liveBytes?: () => number;
  quietMs?: number;
  maxStreamMs?: number;
}

export class StreamingHeap {
  private shared = new Int32Array(newStreamingState());
  /** This thread's streams (the shared count has every thread's). */
  private mine = 0;
  private timer: NodeJS.Timeout | null = null;
  private normalPercent: number | null = null;
  private readonly setPercent: (percent: number) => void;
  private readonly liveBytes: () => number;
  private readonly quietMs: number;
  private readonly maxStreamMs: number;

  constructor(options: StreamingHeapOptions = {}) {
    this.setPercent = options.setPercent ?? ((percent) => v8.setFlagsFromString(`--heap-growing-percent=${percent}`));
    this.liveBytes = options.liveBytes ?? (() => v8.getHeapStatistics().used_heap_size);
    this.quietMs = options.quietMs ?? STREAMING_QUIET_MS;
    this.maxStreamMs = options.maxStreamMs ?? STREAMING_MAX_MS;
  }

  /**
   * Turns the adjustment on, with the factor to return to once streams are
   * over, over the process's shared state (the main thread's own, which
   * serving threads are handed: `state`). Off (the
   * default) streams are only counted: a process that did not set the growth
   * policy (tests, the client) or whose operator chose a factor keeps V8's.
   */
  enable(normalPercent: number, state?: SharedArrayBuffer): void {
    this.normalPercent = normalPercent;
    if (state) this.shared = new Int32Array(state);
  }

  /** The shared state this instance counts on: what a serving thread is handed. */
  get state(): SharedArrayBuffer {
    return this.shared.buffer as SharedArrayBuffer;
  }

  /** This thread's bodies streaming now (for tests and diagnostics). */
  get active(): number {
    return this.mine;
  }

  /** A large body starts streaming through JavaScript; call the returned function once it ended, however it ended. */
  enter(): () => void {
    this.mine += 1;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    Atomics.add(this.shared, STREAMS, 1);
    this.raise();
    let left = false;
    const cap = setTimeout(() => leave(), this.maxStreamMs);
    cap.unref();
    const leave = (): void => {
      if (left) return;
      left = true;
      clearTimeout(cap);
      this.mine -= 1;
      Atomics.sub(this.shared, STREAMS, 1);
      if (this.mine === 0 && this.normalPercent !== null) this.whenQuiet();
    };
    return leave;
  }

  /** Raises the factor unless another stream (of any thread) already did. */
  private raise(): void {
    if (this.normalPercent === null) return;
    if (Atomics.compareExchange(this.shared, RAISED, 0, 1) !== 0) return;
    this.setPercent(streamingPercent(this.normalPercent, this.liveBytes()));
  }

  /** Once this thread has been quiet for `quietMs`: the factor back, unless some thread streams (its last leave looks again). */
  private whenQuiet(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      const normal = this.normalPercent;
      if (this.mine > 0 || normal === null || Atomics.load(this.shared, STREAMS) > 0) return;
      if (Atomics.compareExchange(this.shared, RAISED, 1, 0) !== 1) return;
      this.setPercent(normal);
      // A stream that began on another thread meanwhile keeps its room.
      if (Atomics.load(this.shared, STREAMS) > 0) this.raise();
    }, this.quietMs);
    this.timer.unref();
  }
}

/** This thread's streams; `ferry serve` enables it, with the process's shared state, under its growth policy. */
export const streamingHeap = new StreamingHeap();

/**
 * Enables this thread's `streamingHeap` when the growth policy in force is
 * Ferry's own (heap-growth.ts), not one an operator chose; returns whether it
 * did. A serving thread passes the main thread's `streamingHeap.state`.
 */
export function enableStreamingRoom(state?: SharedArrayBuffer, execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ""): boolean {
  if (chosenHeapGrowth(execArgv, nodeOptions) !== null) return false;
  streamingHeap.enable(HEAP_GROWING_PERCENT, state);
  return true;
}
