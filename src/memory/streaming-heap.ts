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
 * 100 MiB blob per pull): 38 mark-compacts over six cold pulls, 13 with the
 * factor at 4x while the fetch ran, and the mirror's CPU per pull from a
 * median of 620 ms to 470 (docs/mirrors.md "Speed").
 *
 * So while such a body streams, the factor is 4x; once none has streamed for
 * `quietMs`, it is 2x again (V8 reads the flag whenever it sizes the heap
 * after a collection, so each change takes effect at the next one), and a
 * full collection and a trim of the C heap hand back what the streams left:
 * without one an idle mirror kept its peak (~215 MiB after five cold 100 MiB
 * pulls, ~180 MiB under the 2x factor alone) until its next collection; with
 * it, ~90 MiB two seconds after the last pull. Bodies
 * that Ferry's native paths move (pushes and pulls on plain TCP) never reach
 * JavaScript and do not count. The flag is the process's: serving threads
 * each count their own streams, so one thread going quiet can lower it under
 * another's stream, which then only pays the collections it would have paid
 * anyway.
 */
import v8 from "node:v8";
import { returnMemory } from "./collect.js";
import { chosenHeapGrowth, HEAP_GROWING_PERCENT } from "./heap-growth.js";

/** While a large body streams through JavaScript: the old generation may grow to 4x what was live. */
export const STREAMING_HEAP_GROWING_PERCENT = 300;

/** Bodies from this size on count as streams: below it, they fit in the slack a 2x limit leaves. */
export const STREAMING_MIN_BYTES = 4 * 1024 * 1024;

/** How long after the last stream the factor goes back: a burst of pulls keeps the room it already has. */
export const STREAMING_QUIET_MS = 2000;

export class StreamingHeap {
  private streams = 0;
  private raised = false;
  private timer: NodeJS.Timeout | null = null;
  private normalPercent: number | null = null;

  constructor(
    private readonly setPercent: (percent: number) => void = (percent) => v8.setFlagsFromString(`--heap-growing-percent=${percent}`),
    private readonly streamingPercent = STREAMING_HEAP_GROWING_PERCENT,
    private readonly quietMs = STREAMING_QUIET_MS,
    private readonly afterLower: () => void = () => returnMemory(true),
  ) {}

  /**
   * Turns the adjustment on, with the factor to return to once streams are
   * over. Off (the default) streams are only counted: a process that did not
   * set the growth policy (tests, the client) or whose operator chose a
   * factor keeps V8's as it is.
   */
  enable(normalPercent: number): void {
    this.normalPercent = normalPercent;
  }

  /** Bodies streaming now (for tests and diagnostics). */
  get active(): number {
    return this.streams;
  }

  /** A large body starts streaming through JavaScript; call the returned function once it ended, however it ended. */
  enter(): () => void {
    this.streams += 1;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.normalPercent !== null && !this.raised) {
      this.raised = true;
      this.setPercent(this.streamingPercent);
    }
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.streams -= 1;
      if (this.streams === 0 && this.raised) this.lowerWhenQuiet();
    };
  }

  private lowerWhenQuiet(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.streams > 0 || !this.raised || this.normalPercent === null) return;
      this.raised = false;
      this.setPercent(this.normalPercent);
      this.afterLower();
    }, this.quietMs);
    this.timer.unref();
  }
}

/** The process's (each serving thread's) streams; `ferry serve` enables it with its growth policy. */
export const streamingHeap = new StreamingHeap();

/**
 * Enables this thread's `streamingHeap` when the growth policy in force is
 * Ferry's own (heap-growth.ts), not one an operator chose; returns whether it did.
 */
export function enableStreamingRoom(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ""): boolean {
  if (chosenHeapGrowth(execArgv, nodeOptions) !== null) return false;
  streamingHeap.enable(HEAP_GROWING_PERCENT);
  return true;
}
