/**
 * SHA-256 on a worker thread. The request thread copies incoming chunks into
 * shared slabs (a memcpy, far cheaper than hashing) and posts each full slab;
 * the worker hashes it and hands the slab back for reuse. Measured on 100 MiB
 * pushes over loopback: about 150 ms to receive and hash against about 235 ms
 * hashing inline, because the socket keeps being read while the worker hashes.
 * A caller that already holds the bytes in shared memory (the O_DIRECT
 * writer's slabs) lends them instead (updateShared): the worker hashes them
 * there and the copy into a slab of ours is saved.
 *
 * Small uploads never reach the worker: the slabs of a first request that
 * ends before INLINE_SLABS of them fill (2 MiB) are hashed inline, and so is
 * the rest of that session, which saves a thread round trip per manifest- or
 * layer-sized blob; a larger body posts what it held and goes on off-thread.
 * If the worker dies, sessions in flight fail their digest (the caller
 * re-reads the bytes) and new sessions hash inline.
 *
 * The worker starts with the first slab that needs it, not with the registry:
 * its V8 isolate is ~10 MiB of resident memory that a registry serving pulls
 * and small pushes never uses (docs/benchmarks-history.md, "Speed round 3"). For the
 * same reason it stops once pushes have been quiet for a while and no session
 * has state on it; the free slabs' pages go back sooner (src/memory/quiet-release.ts).
 * The next slab starts a new worker.
 */
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { FromHashThread, ToHashThread } from "./hash-protocol.js";
import { InlineSha256, syncSha256, type HashFactory, type IncrementalHash, type SyncSha256 } from "./incremental-hash.js";
import { pushMemory, pushThreads, type QuietRelease, type Releasable } from "../memory/quiet-release.js";
import { copyIntoShared, discardEach, type NativeSha256 } from "../native/addon.js";

const SLAB_BYTES = 512 * 1024;
/**
 * A request that ends before this many slabs fill is hashed on the request thread
 * (~1 ms for 2 MiB with SHA-NI). 1 MiB blobs, common in images and in the
 * benchmark's mix, then never start the worker thread (~10 MiB resident).
 */
const INLINE_SLABS = 4;
/**
 * Bytes a session copies into plain buffers before it takes a slab: a 16 KiB
 * push then holds 16 KiB, not a 512 KiB slab. In the benchmark's mix
 * (16 KiB pushes among pulls) slabs taken and dropped that way made up
 * nearly all of the ~30-80 MiB of array buffers at its RSS peak
 * (docs/benchmarks-history.md, "Speed round 4").
 */
const PREFIX_BYTES = 64 * 1024;
/** Slabs one session may have queued at the worker before update() asks the caller to wait. */
const MAX_IN_FLIGHT = 4;
/** Free slabs kept for reuse; more are left to the garbage collector. */
const POOL_KEEP = 32;

export class OffThreadHashes implements HashFactory, Releasable {
  private worker: Worker | null = null;
  private readonly sessions = new Map<number, OffThreadSha256>();
  private readonly freeSlabs: SharedArrayBuffer[] = [];
  private nextId = 1;
  private failure: Error | null = null;
  private closed = false;

  /** Registered with `threads`: stops the worker (see releaseIdle for the slabs). */
  private readonly idleWorker: Releasable = { releaseIdle: () => this.stopIdleWorker() };

  constructor(
    private readonly logger?: Logger,
    private readonly quiet: QuietRelease = pushMemory,
    private readonly threads: QuietRelease = pushThreads,
  ) {
    quiet.register(this);
    threads.register(this.idleWorker);
  }

  /** Whether the worker thread has been started (by the first body of INLINE_SLABS slabs or more). */
  get workerStarted(): boolean {
    return this.worker !== null;
  }

  private startedWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL("./hash-thread.js", import.meta.url));
    // The worker must not keep a finished process alive.
    worker.unref();
    worker.on("message", (message: FromHashThread) => this.receive(message));
    // A worker stopped while idle (stopIdleWorker) is no longer this.worker: its exit is expected.
    worker.on("error", (error) => {
      if (worker === this.worker) this.fail(error);
    });
    worker.on("exit", (code) => {
      if (!this.closed && worker === this.worker) this.fail(new Error(`hash worker exited with code ${code}`));
    });
    return (this.worker = worker);
  }

  /** Pushes went quiet: the free slabs' pages go back to the kernel (the slabs stay pooled). */
  releaseIdle(): boolean {
    return discardEach(this.freeSlabs.map((slab) => new Uint8Array(slab)));
  }

  /**
   * Pushes have been quiet for longer: the worker stops unless a session has
   * state on it. Sessions that never reached it (every upload session has one
   * from its POST on, and an abandoned one lives until purged) do not count:
   * if they grow later, their first post starts a new worker.
   */
  private stopIdleWorker(): boolean {
    if (!this.worker || this.closed) return false;
    for (const session of this.sessions.values()) if (session.onWorker) return false;
    const worker = this.worker;
    this.worker = null;
    void worker.terminate();
    return true;
  }

  create(): IncrementalHash {
    if (this.failure || this.closed) return new InlineSha256();
    const id = this.nextId++;
    const session = new OffThreadSha256(this, id);
    this.sessions.set(id, session);
    return session;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.quiet.unregister(this);
    this.threads.unregister(this.idleWorker);
    this.failSessions(new Error("registry is shutting down"));
    await this.worker?.terminate();
  }

  /** @internal */ takeSlab(): SharedArrayBuffer {
    this.busy();
    return this.freeSlabs.pop() ?? new SharedArrayBuffer(SLAB_BYTES);
  }

  /** @internal A large body is being hashed: push memory and the worker stay. */
  busy(): void {
    this.quiet.busy();
    this.threads.busy();
  }

  /** @internal */ returnSlab(slab: SharedArrayBuffer): void {
    if (this.freeSlabs.length < POOL_KEEP) this.freeSlabs.push(slab);
  }

  /** Free slabs held for reuse (tests). */
  pooledSlabs(): number {
    return this.freeSlabs.length;
  }

  /** @internal Returns false when the worker is gone and the session must fail. */
  post(message: ToHashThread): boolean {
    if (this.failure || this.closed) return false;
    // Messages posted while the thread boots are queued and delivered in order.
    this.startedWorker().postMessage(message);
    return true;
  }

  /** @internal */ forget(id: number): void {
    this.sessions.delete(id);
  }

  private receive(message: FromHashThread): void {
    const session = this.sessions.get(message.id);
    if (!session) return; // discarded meanwhile
    if (message.op === "released") session.released();
    else session.finished(message.hex);
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    this.logger?.error({ err: error }, "hash worker failed; hashing on the request thread from now on");
    this.failSessions(error);
  }

  private failSessions(error: Error): void {
    for (const session of this.sessions.values()) session.failed(error);
    this.sessions.clear();
  }
}

type Mode = "buffering" | "offthread" | "inline" | "failed" | "ended";

class OffThreadSha256 implements IncrementalHash {
  private mode: Mode = "buffering";
  private filling: SharedArrayBuffer | null = null;
  private fillLength = 0;
  /** Full slabs held while buffering, in order: posted when the body outgrows INLINE_SLABS, else hashed inline. */
  private readonly held: SharedArrayBuffer[] = [];
  /** What each update at the worker gives back once hashed, oldest first: a pool slab, or a caller's shared bytes. */
  private readonly inFlight: Array<() => void> = [];
  /** Copies of the first chunks, while the body is under PREFIX_BYTES; moved into a slab when it grows past. */
  private prefix: Buffer[] = [];
  private prefixLength = 0;
  private inline: SyncSha256 | null = null;
  private wake: (() => void) | null = null;
  private result: { resolve(value: string): void; reject(error: Error): void } | null = null;
  private error: Error | null = null;

  constructor(
    private readonly owner: OffThreadHashes,
    private readonly id: number,
  ) {}

  /** Whether the worker holds this session's hash state. */
  get onWorker(): boolean {
    return this.mode === "offthread";
  }

  update(chunk: Uint8Array): void | Promise<void> {
    if (this.mode === "inline") {
      this.inline!.update(chunk);
      return;
    }
    if (this.mode !== "buffering" && this.mode !== "offthread") return; // digest() reports the failure
    if (this.mode === "buffering" && !this.filling && this.held.length === 0) {
      if (this.prefixLength + chunk.length <= PREFIX_BYTES) {
        this.prefix.push(Buffer.from(chunk)); // a copy: the caller may reuse its buffer
        this.prefixLength += chunk.length;
        return;
      }
      if (this.prefixLength > 0) this.movePrefixToSlab();
    }
    let offset = 0;
    while (offset < chunk.length) {
      if (!this.filling) {
        this.filling = this.owner.takeSlab();
        this.fillLength = 0;
      }
      const n = Math.min(SLAB_BYTES - this.fillLength, chunk.length - offset);
      // Not `set`: into shared memory V8 copies with atomic moves (the slab is only ours until posted).
      copyIntoShared(new Uint8Array(this.filling), this.fillLength, chunk.subarray(offset, offset + n));
      this.fillLength += n;
      offset += n;
      if (this.fillLength === SLAB_BYTES) this.slabFull();
    }
    if (this.inFlight.length >= MAX_IN_FLIGHT) {
      return new Promise((resolve) => {
        this.wake = resolve;
      });
    }
  }

  updateShared(bytes: Uint8Array, release: () => void): void {
    if (this.mode !== "offthread" || !(bytes.buffer instanceof SharedArrayBuffer)) {
      // Inline, failed or ended; or still buffering, where the body may yet turn out small
      // enough to hash inline: copied like update()'s bytes, so the caller has its memory back
      // at once. (Holding the caller's buffers until the request ends could stall it: the
      // caller bounds how many it has out.) Backpressure is the caller's, so update()'s is not waited for.
      void this.update(bytes);
      release();
      return;
    }
    // Bytes update() copied and has not posted yet come first.
    if (this.filling) {
      if (this.fillLength > 0) this.postFilling();
      else this.releaseFilling();
    }
    this.owner.busy();
    this.inFlight.push(release);
    const update: ToHashThread = { op: "update", id: this.id, slab: bytes.buffer, offset: bytes.byteOffset, length: bytes.byteLength };
    if (!this.owner.post(update)) this.failed(new Error("hash worker unavailable"));
  }

  pause(): void {
    if (this.mode === "buffering") {
      // The whole of what was fed fits in INLINE_SLABS: not worth a thread round trip.
      if (this.filling || this.held.length > 0 || this.prefixLength > 0) this.goInline();
      return;
    }
    if (!this.filling) return;
    if (this.mode === "offthread") {
      if (this.fillLength > 0) this.postFilling();
      else this.releaseFilling();
    }
  }

  digest(): Promise<string> {
    if (this.mode === "buffering") this.goInline();
    if (this.mode === "inline") {
      this.mode = "ended";
      this.owner.forget(this.id);
      return Promise.resolve(`sha256:${this.inline!.hex()}`);
    }
    if (this.mode === "offthread") this.pause();
    if (this.mode !== "offthread") return Promise.reject(this.error ?? new Error("hash already finished"));
    return new Promise((resolve, reject) => {
      this.result = { resolve, reject };
      if (!this.owner.post({ op: "digest", id: this.id })) this.failed(new Error("hash worker unavailable"));
    });
  }

  /**
   * A body about to be received natively (receiveFile) can feed this hash on
   * the addon's threads when nothing of it went to the worker yet: what is
   * buffered is hashed here (at most INLINE_SLABS, ~2 ms) and the session
   * goes on inline, in a state that job can feed. The worker's state cannot
   * be handed over: null, and the caller feeds the hash as before.
   */
  nativeState(): NativeSha256 | null {
    if (this.mode === "buffering") this.goInline();
    return this.mode === "inline" ? this.inline!.native : null;
  }

  /** Hashes what buffering holds on this thread; the session stays inline. */
  private goInline(): void {
    const inline = (this.inline = syncSha256());
    // A prefix is only ever held before any slab, so it comes first.
    for (const part of this.prefix) inline.update(part);
    this.prefix = [];
    this.prefixLength = 0;
    for (const slab of this.held.splice(0)) {
      inline.update(new Uint8Array(slab));
      this.owner.returnSlab(slab);
    }
    if (this.filling) {
      inline.update(new Uint8Array(this.filling, 0, this.fillLength));
      this.releaseFilling();
    }
    this.mode = "inline";
  }

  discard(): void {
    if (this.mode === "offthread") this.owner.post({ op: "discard", id: this.id });
    if (this.filling) this.releaseFilling();
    for (const slab of this.held.splice(0)) this.owner.returnSlab(slab);
    this.prefix = [];
    this.prefixLength = 0;
    this.mode = "ended";
    this.owner.forget(this.id);
    // The worker may still read what is in flight, for a hash nobody will ask for: the memory can go back now.
    this.giveBackInFlight();
    this.wakeWriter();
  }

  /** The worker is done with the oldest slab in flight. */
  released(): void {
    this.inFlight.shift()?.();
    if (this.inFlight.length < MAX_IN_FLIGHT) this.wakeWriter();
  }

  finished(hex: string): void {
    this.mode = "ended";
    this.owner.forget(this.id);
    this.result?.resolve(`sha256:${hex}`);
    this.result = null;
  }

  failed(error: Error): void {
    if (this.mode === "ended") return;
    this.mode = "failed";
    this.error = error;
    this.result?.reject(error);
    this.result = null;
    this.giveBackInFlight();
    this.wakeWriter();
  }

  /** The slab being filled is full: held while the body may still be small, else posted with everything held. */
  private slabFull(): void {
    if (this.mode === "buffering" && this.held.length < INLINE_SLABS - 1) {
      this.held.push(this.filling!);
      this.filling = null;
      this.fillLength = 0;
      return;
    }
    for (const slab of this.held.splice(0)) this.post(slab, SLAB_BYTES);
    this.postFilling();
  }

  /** The body outgrew PREFIX_BYTES: its copies go to the start of the first slab (they fit: PREFIX_BYTES < SLAB_BYTES). */
  private movePrefixToSlab(): void {
    this.filling = this.owner.takeSlab();
    this.fillLength = 0;
    for (const part of this.prefix) {
      copyIntoShared(new Uint8Array(this.filling), this.fillLength, part);
      this.fillLength += part.length;
    }
    this.prefix = [];
    this.prefixLength = 0;
  }

  private postFilling(): void {
    const slab = this.filling!;
    const length = this.fillLength;
    this.filling = null;
    this.fillLength = 0;
    this.post(slab, length);
  }

  private post(slab: SharedArrayBuffer, length: number): void {
    if (this.mode === "failed") {
      this.owner.returnSlab(slab);
      return;
    }
    this.mode = "offthread";
    this.inFlight.push(() => this.owner.returnSlab(slab));
    if (!this.owner.post({ op: "update", id: this.id, slab, offset: 0, length })) this.failed(new Error("hash worker unavailable"));
  }

  private releaseFilling(): void {
    this.owner.returnSlab(this.filling!);
    this.filling = null;
    this.fillLength = 0;
  }

  private giveBackInFlight(): void {
    for (const giveBack of this.inFlight.splice(0)) giveBack();
  }

  private wakeWriter(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}
