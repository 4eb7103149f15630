/**
 * A blob read from S3 as consecutive ranged GETs, a few of them in flight
 * ahead of the client, emitted strictly in order.
 *
 * Why: one GetObject is served by RGW one stripe after another, so a single
 * stream is bound by RGW's per-request pipeline (and, streamed through Node,
 * by the hop through this process); windows fetched side by side keep RGW's
 * and the OSD's work overlapping with the client's reading. Memory stays
 * bounded: a pull holds its current window plus at most WINDOWS_AHEAD more,
 * and windows ahead are only fetched within a process-wide byte budget, so
 * many pulls at once fall back to one window at a time instead of growing.
 *
 * A window that fails, or ends short or long, fails the stream: a cut-off
 * store never ends a blob early with success.
 */
import { Readable } from "node:stream";

/** 4 MiB: RGW's default stripe (rgw_obj_stripe_size), so a window is one RADOS object. */
export const READ_WINDOW_BYTES = 4 * 1024 * 1024;
/** Windows fetched ahead of the one being sent. */
export const WINDOWS_AHEAD = 2;

export interface WindowBody {
  body: Readable;
  /** Bytes S3 announced for this window. */
  length: number;
}

/** GETs bytes start..end (inclusive) of the object. */
export type FetchWindow = (start: number, end: number, signal: AbortSignal) => Promise<WindowBody>;

/** Bytes of windows fetched ahead, across every pull of the process. */
export class PrefetchBudget {
  private used = 0;
  constructor(readonly maxBytes: number) {}

  tryTake(bytes: number): boolean {
    if (this.used + bytes > this.maxBytes) return false;
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used -= bytes;
  }
}

interface Window {
  start: number;
  end: number;
  chunks: Buffer[];
  received: number;
  length: number | null;
  done: boolean;
  error: Error | null;
  reserved: number;
  controller: AbortController;
  body: Readable | null;
}

export class RangedObjectStream extends Readable {
  private readonly windows: Window[] = [];
  private nextStart: number;
  private wanted = false;

  /**
   * @param first the already open GET of the first window (bytes start..firstEnd)
   * @param end last byte to send, inclusive
   */
  constructor(
    private readonly fetchWindow: FetchWindow,
    private readonly budget: PrefetchBudget,
    first: { start: number; end: number; open: WindowBody },
    private readonly end: number,
    private readonly windowBytes = READ_WINDOW_BYTES,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    const window = this.newWindow(first.start, first.end, 0);
    this.attach(window, first.open);
    this.nextStart = first.end + 1;
    this.fill();
  }

  override _read(): void {
    this.wanted = true;
    this.pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    for (const window of this.windows.splice(0)) this.abandon(window);
    callback(error);
  }

  private newWindow(start: number, end: number, reserved: number): Window {
    const window: Window = { start, end, chunks: [], received: 0, length: null, done: false, error: null, reserved, controller: new AbortController(), body: null };
    this.windows.push(window);
    return window;
  }

  /** Starts windows ahead while the budget allows (the current window never waits for it). */
  private fill(): void {
    while (this.nextStart <= this.end && this.windows.length < 1 + WINDOWS_AHEAD) {
      const start = this.nextStart;
      const end = Math.min(this.end, start + this.windowBytes - 1);
      const size = end - start + 1;
      const reserved = this.windows.length === 0 ? 0 : size;
      if (reserved > 0 && !this.budget.tryTake(reserved)) return;
      const window = this.newWindow(start, end, reserved);
      this.nextStart = end + 1;
      this.fetchWindow(start, end, window.controller.signal).then(
        (open) => {
          if (this.destroyed || window.controller.signal.aborted) {
            open.body.destroy();
            return;
          }
          this.attach(window, open);
        },
        (error: unknown) => {
          window.error = error instanceof Error ? error : new Error(String(error));
          this.pump();
        },
      );
    }
  }

  private attach(window: Window, open: WindowBody): void {
    window.body = open.body;
    window.length = open.length;
    open.body.on("data", (chunk: Buffer) => {
      window.chunks.push(chunk);
      window.received += chunk.length;
      this.pump();
    });
    open.body.on("end", () => {
      window.done = true;
      this.pump();
    });
    open.body.on("error", (error: Error) => {
      window.error = error;
      this.pump();
    });
  }

  private pump(): void {
    while (this.wanted && !this.destroyed) {
      const window = this.windows[0];
      if (window === undefined) {
        this.wanted = false;
        this.push(null);
        return;
      }
      const chunk = window.chunks.shift();
      if (chunk !== undefined) {
        if (!this.push(chunk)) this.wanted = false;
        continue;
      }
      if (window.error) {
        this.destroy(window.error);
        return;
      }
      if (!window.done) return; // its next chunk, end or error calls pump again
      const expected = window.end - window.start + 1;
      if (window.received !== expected || window.length !== expected) {
        this.destroy(new Error(`the object store sent ${window.received} of ${expected} bytes for bytes ${window.start}-${window.end}`));
        return;
      }
      this.windows.shift();
      this.release(window);
      this.fill();
    }
  }

  private release(window: Window): void {
    if (window.reserved > 0) this.budget.give(window.reserved);
    window.reserved = 0;
  }

  private abandon(window: Window): void {
    window.controller.abort();
    window.body?.destroy();
    window.chunks = [];
    this.release(window);
  }
}

/** Total object size from a Content-Range header ("bytes 0-4194303/104857600"), or null. */
export function totalFromContentRange(header: string | undefined): number | null {
  const match = header === undefined ? null : /^bytes \d+-\d+\/(\d+)$/.exec(header.trim());
  return match ? Number(match[1]) : null;
}
