/**
 * One upstream fetch of one blob, shared by every client that asks for it
 * meanwhile (single flight). The upstream's bytes are read once, checked
 * against the digest, kept in memory for a while, and handed from there to
 * the blob store and to each waiting client, each at its own pace:
 *
 * - the fetch waits for neither a client nor, within a bound, the store:
 *   clients get the bytes as fast as the upstream sends them while the store
 *   writes behind (at most `maxLagBytes` behind; then the upstream is read
 *   no faster than the store writes);
 * - a slow or vanished client cannot slow or abort the fetch for the others;
 * - the digest check holds the chunk carrying the last byte back until the
 *   whole blob matched, so no client and not the store ever gets a complete
 *   body that is wrong: on a mismatch or a failed upstream the clients'
 *   connections are cut and the store's session is dropped, nothing stays;
 * - a client further behind than the in-memory window waits until the blob
 *   is committed and reads the rest from the store.
 *
 * Hashing runs inline, on the upstream's 'data' events: at a stream's pace
 * the hash thread's postMessage and slab copies cost more than SHA-256 itself.
 * Chunks are held only while the store or a client still needs them (plus a
 * little for late joiners), so most die young and cost no full GC.
 */
import { createHash, type Hash } from "node:crypto";
import { finished, Readable } from "node:stream";
import { parseDigest } from "../oci/digest.js";

/** Bytes of recent chunks a flight keeps for clients that are behind the fetch. */
export const FLIGHT_WINDOW_BYTES = 16 * 1024 * 1024;
/**
 * Bytes a flight keeps behind the newest byte for clients that join late,
 * beyond what its current clients still need. Small on purpose: chunks that
 * stay alive for long are promoted out of V8's young generation and then only
 * a full garbage collection frees them; a flight that kept its whole window
 * alive cost four mark-compacts and ~0.25 s of CPU per 100 MiB (docs/mirrors.md "Speed").
 */
export const FLIGHT_LATE_JOIN_BYTES = 1024 * 1024;
/** How far the store may fall behind the upstream before the fetch waits for it. */
export const FLIGHT_MAX_LAG_BYTES = 64 * 1024 * 1024;

export type FlightPiece = { kind: "bytes"; bytes: Buffer } | { kind: "wait" } | { kind: "behind" } | { kind: "end" };

export interface FlightOptions {
  windowBytes?: number;
  lateJoinBytes?: number;
  maxLagBytes?: number;
}

/** Where one client is in the flight: the chunks from its offset on are kept (within the window) until it moves on. */
export interface FlightCursor {
  offset: number;
}

export class DigestMismatchError extends Error {}

export class BlobFlight {
  private readonly chunks: Buffer[] = [];
  private readonly starts: number[] = [];
  private received = 0;
  /** Bytes handed to the store so far. */
  private stored = 0;
  private ended = false;
  private waiters: Array<() => void> = [];
  private failure: Error | null = null;
  private committed = false;
  private readonly windowBytes: number;
  private readonly lateJoinBytes: number;
  private readonly maxLagBytes: number;
  private readonly cursors = new Set<FlightCursor>();
  private feed: Readable | null = null;
  private upstream: Readable | null = null;
  private upstreamPaused = false;
  private feedEnded = false;
  /** Settles when the blob is committed (or the fetch failed); never rejects unhandled. */
  readonly done: Promise<void>;
  private settle!: (error: Error | null) => void;

  constructor(
    readonly digest: string,
    readonly size: number,
    options: FlightOptions = {},
  ) {
    this.windowBytes = options.windowBytes ?? FLIGHT_WINDOW_BYTES;
    this.lateJoinBytes = Math.min(options.lateJoinBytes ?? FLIGHT_LATE_JOIN_BYTES, this.windowBytes);
    this.maxLagBytes = Math.max(options.maxLagBytes ?? FLIGHT_MAX_LAG_BYTES, this.windowBytes);
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (error) => (error ? reject(error) : resolve());
    });
    this.done.catch(() => undefined);
  }

  get failed(): Error | null {
    return this.failure;
  }

  get isStored(): boolean {
    return this.committed;
  }

  /** Bytes of upstream chunks held in memory now (for tests and diagnostics). */
  get heldBytes(): number {
    let held = 0;
    for (const chunk of this.chunks) held += chunk.length;
    return held;
  }

  /**
   * Runs the fetch: `body` (the upstream's bytes) through the digest check,
   * to the clients and into `store`, which must consume the stream it is
   * given and resolve once the blob is committed. Resolves or rejects with
   * the flight.
   *
   * The upstream's chunks are taken straight from its 'data' events and
   * hashed there (no Transform in between: each stream stage costs per chunk,
   * ~1,600 chunks per 100 MiB); the chunk carrying the last byte is held back
   * until the digest matched.
   */
  async run(body: Readable, store: (verified: Readable) => Promise<void>): Promise<void> {
    const feed = new Readable({ highWaterMark: 1024 * 1024, read: () => this.feedStore() });
    // A failure can come before the store attached to the feed (a small blob arrives whole first): the store
    // still sees the error (the stream is errored), and it is no uncaught exception meanwhile.
    feed.on("error", () => undefined);
    this.feed = feed;
    this.upstream = body;
    const { algorithm } = parseDigest(this.digest);
    const hash: Hash = createHash(algorithm);
    let seen = 0;
    body.on("data", (chunk: Buffer) => {
      if (this.failure) return;
      seen += chunk.length;
      if (seen > this.size) {
        this.fail(new Error(`the upstream sent more than the expected ${this.size} bytes`));
        return;
      }
      hash.update(chunk);
      if (seen === this.size && !this.verified(hash)) return;
      this.append(chunk);
      // Memory is bounded: past maxLagBytes ahead of the store, the upstream is read as fast as the store writes.
      if (this.received - this.stored > this.maxLagBytes) {
        this.upstreamPaused = true;
        body.pause();
      }
      this.feedStore();
    });
    // A body handed over paused (the fetcher's plain bodies) starts only when asked to.
    body.resume();
    finished(body, { writable: false }, (error) => {
      if (this.failure) return;
      if (error) this.fail(error);
      else if (seen !== this.size) this.fail(new Error(`size mismatch: the upstream sent ${seen} bytes, expected ${this.size}`));
      // An empty blob has no last chunk to hold back: its digest is checked here.
      else if (this.size === 0 && !this.verified(hash)) return;
      else {
        this.ended = true;
        this.feedStore();
        this.wake();
      }
    });
    try {
      await store(feed);
      if (this.failure) throw this.failure;
      if (this.received !== this.size || this.stored !== this.size) throw new Error(`the upstream sent ${this.received} of ${this.size} bytes`);
      this.committed = true;
      this.settle(null);
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
      throw this.failure!;
    } finally {
      this.wake();
    }
  }

  /** True when what was hashed is the digest; fails the flight otherwise. */
  private verified(hash: Hash): boolean {
    const actual = `${parseDigest(this.digest).algorithm}:${hash.digest("hex")}`;
    if (actual === this.digest) return true;
    this.fail(new DigestMismatchError(`digest mismatch: expected ${this.digest}, got ${actual}`));
    return false;
  }

  /** Fails the flight before it ran (the upstream could not be opened). */
  abort(error: Error): void {
    this.fail(error);
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    // The store's session sees the failure and is dropped; the upstream is read no further.
    this.feed?.destroy(error);
    this.upstream?.destroy();
    this.settle(error);
    this.wake();
  }

  /** A client starts following the flight at offset 0; `leave` once it is done with it. */
  join(): FlightCursor {
    const cursor = { offset: 0 };
    this.cursors.add(cursor);
    return cursor;
  }

  leave(cursor: FlightCursor): void {
    this.cursors.delete(cursor);
  }

  /** Pushes what the store has not had yet, and the end once everything went. */
  private feedStore(): void {
    const feed = this.feed;
    if (!feed || this.failure || feed.destroyed) return;
    let more = true;
    while (more && this.stored < this.received) {
      const piece = this.pieceFor(this.stored);
      if (!piece) break;
      this.stored += piece.length;
      more = feed.push(piece);
    }
    this.trim();
    if (this.ended && this.stored === this.received && !this.feedEnded) {
      this.feedEnded = true;
      feed.push(null);
    }
    if (this.upstreamPaused && this.received - this.stored <= this.maxLagBytes) {
      this.upstreamPaused = false;
      this.upstream?.resume();
    }
  }

  private append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.starts.push(this.received);
    this.received += chunk.length;
    this.trim();
    this.wake();
  }

  /**
   * Drops the chunks nobody needs: the store has had them, every client is
   * past them (or further behind than the window: it reads from the store
   * later), and they are older than the late-join bytes.
   */
  private trim(): void {
    let keepFrom = this.received - this.lateJoinBytes;
    for (const cursor of this.cursors) if (cursor.offset < keepFrom) keepFrom = cursor.offset;
    keepFrom = Math.min(Math.max(keepFrom, this.received - this.windowBytes), this.stored);
    while (this.chunks.length > 1 && this.starts[0]! + this.chunks[0]!.length <= keepFrom) {
      this.chunks.shift();
      this.starts.shift();
    }
  }

  private pieceFor(offset: number): Buffer | null {
    if (this.starts.length === 0 || offset < this.starts[0]! || offset >= this.received) return null;
    let low = 0;
    let high = this.starts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.starts[mid]! <= offset) low = mid;
      else high = mid - 1;
    }
    const chunk = this.chunks[low]!;
    const skip = offset - this.starts[low]!;
    // The chunk itself when it is wanted whole (the usual case): no view object per piece.
    return skip === 0 ? chunk : chunk.subarray(skip);
  }

  /** What a client at `offset` can send next (`cursor`: that client's, which keeps its bytes held). */
  pieceAt(offset: number, cursor?: FlightCursor): FlightPiece {
    if (cursor) cursor.offset = offset;
    if (offset >= this.size) return { kind: "end" };
    if (this.failure || offset >= this.received) return { kind: "wait" };
    const piece = this.pieceFor(offset);
    return piece ? { kind: "bytes", bytes: piece } : { kind: "behind" };
  }

  /** Resolves at the next change: more bytes, the end, or a failure. */
  changed(): Promise<void> {
    if (this.failure || this.committed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}
