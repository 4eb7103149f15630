/**
 * One upstream fetch of one blob, shared by every client that asks for it
 * meanwhile (single flight). The bytes flow upstream → digest check → blob
 * store once; each waiting client is fed from a window of recent chunks kept
 * in memory, at its own pace:
 *
 * - the fetch never waits for a client (a slow or vanished client cannot
 *   slow or abort it for the others); it only waits for storage;
 * - the digest check holds the chunk carrying the last byte back until the
 *   whole blob matched, so no client (and not the store) ever gets a
 *   complete body that is wrong: on a mismatch or a failed upstream the
 *   clients' connections are cut and the session is dropped, nothing stays;
 * - a client that falls further behind than the window waits until the blob
 *   is committed and reads the rest from the store.
 */
import { pipeline } from "node:stream";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { VerifyingStream } from "../client/verify.js";

/** Bytes of recent chunks a flight keeps for clients that are behind the fetch. */
export const FLIGHT_WINDOW_BYTES = 16 * 1024 * 1024;

export type FlightPiece = { kind: "bytes"; bytes: Buffer } | { kind: "wait" } | { kind: "behind" } | { kind: "end" };

export class BlobFlight {
  private readonly chunks: Buffer[] = [];
  private readonly starts: number[] = [];
  private retained = 0;
  private received = 0;
  private waiters: Array<() => void> = [];
  private failure: Error | null = null;
  private stored = false;
  /** Settles when the blob is committed (or the fetch failed); never rejects unhandled. */
  readonly done: Promise<void>;
  private settle!: (error: Error | null) => void;

  constructor(
    readonly digest: string,
    readonly size: number,
    private readonly windowBytes = FLIGHT_WINDOW_BYTES,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (error) => (error ? reject(error) : resolve());
    });
    this.done.catch(() => undefined);
  }

  get failed(): Error | null {
    return this.failure;
  }

  get isStored(): boolean {
    return this.stored;
  }

  /**
   * Runs the fetch: `body` (the upstream's bytes) through the digest check
   * into `store`, which must consume the stream it is given and resolve once
   * the blob is committed. Resolves or rejects with the flight.
   */
  async run(body: Readable, store: (verified: Readable) => Promise<void>): Promise<void> {
    const verifier = new VerifyingStream(this.digest, this.size);
    const tap = new Transform({
      readableHighWaterMark: 1024 * 1024,
      writableHighWaterMark: 1024 * 1024,
      transform: (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) => {
        this.append(chunk);
        callback(null, chunk);
      },
    });
    // Any failure on the way destroys every stage, so `store` sees it and drops its session.
    pipeline(body, verifier, tap, () => undefined);
    try {
      await store(tap);
      if (this.received !== this.size) throw new Error(`the upstream sent ${this.received} of ${this.size} bytes`);
      this.stored = true;
      this.settle(null);
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error));
      tap.destroy(this.failure);
      body.destroy();
      this.settle(this.failure);
      throw this.failure;
    } finally {
      this.wake();
    }
  }

  /** Fails the flight before it ran (the upstream could not be opened). */
  abort(error: Error): void {
    this.failure = error;
    this.settle(error);
    this.wake();
  }

  private append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.starts.push(this.received);
    this.received += chunk.length;
    this.retained += chunk.length;
    while (this.retained > this.windowBytes && this.chunks.length > 1) {
      this.retained -= this.chunks.shift()!.length;
      this.starts.shift();
    }
    this.wake();
  }

  /** What a client at `offset` can send next. */
  pieceAt(offset: number): FlightPiece {
    if (offset >= this.size) return { kind: "end" };
    if (this.failure) return { kind: "wait" };
    if (offset >= this.received) return { kind: "wait" };
    if (this.starts.length === 0 || offset < this.starts[0]!) return { kind: "behind" };
    // Binary search for the chunk holding `offset`.
    let low = 0;
    let high = this.starts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.starts[mid]! <= offset) low = mid;
      else high = mid - 1;
    }
    const chunk = this.chunks[low]!;
    return { kind: "bytes", bytes: chunk.subarray(offset - this.starts[low]!) };
  }

  /** Resolves at the next change: more bytes, the end, or a failure. */
  changed(): Promise<void> {
    if (this.failure || this.stored) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}
