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
 * Hashing runs on the registry's hash thread when it has one (as uploads do),
 * so the request thread only moves bytes.
 */
import { createHash } from "node:crypto";
import { pipeline, Readable, Transform, type TransformCallback } from "node:stream";
import { parseDigest } from "../oci/digest.js";
import { inlineHashes, type HashFactory, type IncrementalHash } from "../hashing/incremental-hash.js";

/** Bytes of recent chunks a flight keeps for clients that are behind the fetch. */
export const FLIGHT_WINDOW_BYTES = 16 * 1024 * 1024;
/** How far the store may fall behind the upstream before the fetch waits for it. */
export const FLIGHT_MAX_LAG_BYTES = 64 * 1024 * 1024;

export type FlightPiece = { kind: "bytes"; bytes: Buffer } | { kind: "wait" } | { kind: "behind" } | { kind: "end" };

export interface FlightOptions {
  windowBytes?: number;
  maxLagBytes?: number;
  /** The registry's hash thread (sha256 only); inline hashing without it. */
  hashes?: HashFactory;
}

export class DigestMismatchError extends Error {}

export class BlobFlight {
  private readonly chunks: Buffer[] = [];
  private readonly starts: number[] = [];
  private retained = 0;
  private received = 0;
  /** Bytes handed to the store so far. */
  private stored = 0;
  private ended = false;
  private waiters: Array<() => void> = [];
  private failure: Error | null = null;
  private committed = false;
  private readonly windowBytes: number;
  private readonly maxLagBytes: number;
  private readonly hashes: HashFactory;
  private feed: Readable | null = null;
  private upstream: Transform | null = null;
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
    this.maxLagBytes = Math.max(options.maxLagBytes ?? FLIGHT_MAX_LAG_BYTES, this.windowBytes);
    this.hashes = options.hashes ?? inlineHashes;
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

  /**
   * Runs the fetch: `body` (the upstream's bytes) through the digest check,
   * to the clients and into `store`, which must consume the stream it is
   * given and resolve once the blob is committed. Resolves or rejects with
   * the flight.
   */
  async run(body: Readable, store: (verified: Readable) => Promise<void>): Promise<void> {
    const verifier = this.verifier();
    const feed = new Readable({ highWaterMark: 1024 * 1024, read: () => this.feedStore() });
    this.feed = feed;
    this.upstream = verifier;
    pipeline(body, verifier, (error) => {
      if (error) this.fail(error);
    });
    verifier.on("data", (chunk: Buffer) => {
      this.append(chunk);
      // Memory is bounded: past maxLagBytes ahead of the store, the upstream is read as fast as the store writes.
      if (this.received - this.stored > this.maxLagBytes) verifier.pause();
      this.feedStore();
    });
    verifier.on("end", () => {
      this.ended = true;
      this.feedStore();
      this.wake();
    });
    try {
      await store(feed);
      if (this.failure) throw this.failure;
      if (this.received !== this.size || this.stored !== this.size) throw new Error(`the upstream sent ${this.received} of ${this.size} bytes`);
      this.committed = true;
      this.settle(null);
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
      verifier.destroy();
      body.destroy();
      feed.destroy();
      throw this.failure!;
    } finally {
      this.wake();
    }
  }

  /** Fails the flight before it ran (the upstream could not be opened). */
  abort(error: Error): void {
    this.fail(error);
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    // The store's session sees the failure and is dropped.
    this.feed?.destroy(error);
    this.settle(error);
    this.wake();
  }

  /** Checks size and digest as bytes pass; the chunk with the last byte leaves only once the digest matched. */
  private verifier(): Transform {
    const { algorithm } = parseDigest(this.digest);
    const hash: IncrementalHash = algorithm === "sha256" ? this.hashes.create() : inlineHash(algorithm);
    let seen = 0;
    const expected = this.digest;
    const size = this.size;
    return new Transform({
      readableHighWaterMark: 1024 * 1024,
      writableHighWaterMark: 1024 * 1024,
      transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
        seen += chunk.length;
        if (seen > size) {
          hash.discard();
          callback(new Error(`the upstream sent more than the expected ${size} bytes`));
          return;
        }
        const wait = hash.update(chunk);
        if (seen === size) {
          Promise.resolve(wait)
            .then(() => hash.digest())
            .then(
              (actual) => callback(actual === expected ? null : new DigestMismatchError(`digest mismatch: expected ${expected}, got ${actual}`), chunk),
              (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
            );
          return;
        }
        if (wait) wait.then(() => callback(null, chunk));
        else callback(null, chunk);
      },
      flush(callback: TransformCallback) {
        if (seen !== size) {
          hash.discard();
          callback(new Error(`size mismatch: the upstream sent ${seen} bytes, expected ${size}`));
          return;
        }
        callback();
      },
    });
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
      this.trim();
      more = feed.push(piece);
    }
    if (this.ended && this.stored === this.received && !this.feedEnded) {
      this.feedEnded = true;
      feed.push(null);
    }
    const upstream = this.upstream;
    if (upstream && upstream.isPaused() && this.received - this.stored <= this.maxLagBytes) upstream.resume();
  }

  private append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.starts.push(this.received);
    this.received += chunk.length;
    this.retained += chunk.length;
    this.trim();
    this.wake();
  }

  /** Drops chunks the store has had and that are older than the clients' window. */
  private trim(): void {
    while (this.chunks.length > 1 && this.retained > this.windowBytes && this.starts[0]! + this.chunks[0]!.length <= this.stored) {
      this.retained -= this.chunks.shift()!.length;
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
    return this.chunks[low]!.subarray(offset - this.starts[low]!);
  }

  /** What a client at `offset` can send next. */
  pieceAt(offset: number): FlightPiece {
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

function inlineHash(algorithm: "sha256" | "sha512"): IncrementalHash {
  const hash = createHash(algorithm);
  return {
    update: (chunk) => void hash.update(chunk),
    pause: () => undefined,
    digest: () => Promise.resolve(`${algorithm}:${hash.digest("hex")}`),
    discard: () => undefined,
  };
}
