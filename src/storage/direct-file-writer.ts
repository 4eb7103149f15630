/**
 * A Writable that appends to a file opened with O_DIRECT, so pushed bytes go
 * to the device without passing through the page cache.
 *
 * Why: on the machines we measured (VMs whose guest memory is backed lazily by
 * the host), copying a fresh upload into newly allocated page-cache pages was
 * the single largest cost of a push: 35% of the registry's CPU, about 270 ms
 * per 100 MiB, more than hashing. O_DIRECT writes skip that copy and leave the
 * page cache to blobs that are read.
 *
 * O_DIRECT needs block-aligned memory, offsets and lengths: chunks are copied
 * into page-aligned 1 MiB slabs (see aligned-slabs.ts) written at aligned
 * offsets; the unaligned tail (< 4 KiB) goes through `bufferedFd`. When no
 * slab is free, or the filesystem refuses a direct write (EINVAL), the bytes
 * go through `bufferedFd` instead: slower, never wrong, since every write
 * names its position.
 *
 * Given a running hash, the writer feeds it the same slabs (updateShared): a
 * hash on another thread reads them where they are, while they are written,
 * instead of taking a copy of its own. A slab goes back to the pool once both
 * its write and its hash are done. On a 100 MiB push that is one copy of the
 * body fewer (docs/benchmarks-history.md, "Speed round 8").
 *
 * A body handed over by the connection (receive()) skips the event loop
 * altogether where it can: one native job receives, hashes and writes it
 * through a ring of three slabs (receiveNatively; "Speed round 10").
 */
import { write } from "node:fs";
import { Writable } from "node:stream";
import { SLAB_BYTES, type SlabPool } from "./aligned-slabs.js";
import type { IncrementalHash } from "../hashing/incremental-hash.js";
import type { BodyHandoff } from "./body-handoff.js";
import { copyIntoShared } from "../native/addon.js";

/** Block size every direct write is a multiple of (the largest logical block size in common use). */
export const DIRECT_ALIGN = 4096;
const MAX_IN_FLIGHT = 2;
/**
 * Slabs a body received natively passes along (receiveNatively): one being
 * received, one hashed, one written: as many as the shared pool plans per
 * upload (aligned-slabs.ts).
 */
const RING_SLABS = 3;
/**
 * What a handed-over body is received in when no slab is free (receive()):
 * each piece is a thread start in the addon, so not a streamed chunk's 64 KiB
 * (1,600 per 100 MiB), but not a slab's worth of ordinary memory per slow client either.
 */
const UNALIGNED_PIECE = 256 * 1024;

type Callback = (error?: Error | null) => void;

export class DirectFileWriter extends Writable {
  private slab: Buffer | undefined;
  private filled = 0;
  /** File position of slab[0]. */
  private slabPosition: number;
  private inFlight = 0;
  private directBroken = false;
  private failure: Error | null = null;
  private waiting: Callback | null = null;
  /** Bytes that went to the device directly, and through the page cache (for tests and diagnostics). */
  readonly counts = { direct: 0, buffered: 0 };

  constructor(
    private readonly directFd: number,
    private readonly bufferedFd: number,
    position: number,
    private readonly slabs: SlabPool,
    /** Fed every byte written, in order, before the write stream finishes. */
    private readonly hash?: IncrementalHash,
  ) {
    // One body chunk of queue, not a slab's worth: _write copies each chunk into a slab at once,
    // so queued chunks only wait. With 1 MiB, 8 concurrent pushes kept ~8 MiB of chunks queued,
    // long enough for their wrappers to be promoted: full collections took ~13% of the CPU
    // (docs/benchmarks-history.md, "Speed round 7").
    super({ highWaterMark: 64 * 1024 });
    if (position % DIRECT_ALIGN !== 0) throw new Error("direct writes must start at an aligned position");
    this.slabPosition = position;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    if (this.failure) return callback(this.failure);
    let offset = 0;
    while (offset < chunk.length) {
      if (!this.slab) {
        this.slab = this.directBroken ? undefined : this.slabs.take();
        this.filled = 0;
        if (!this.slab) {
          // No aligned memory free: this chunk's remainder goes through the page cache.
          const rest = chunk.subarray(offset);
          this.writeBuffered(Buffer.from(rest), this.slabPosition);
          this.slabPosition += rest.length;
          // Later direct writes need an aligned start again; stay buffered for this append.
          this.directBroken = true;
          const hashing = this.hash?.update(rest);
          if (hashing) return void hashing.then(() => this.afterDispatch(callback));
          break;
        }
      }
      const n = Math.min(SLAB_BYTES - this.filled, chunk.length - offset);
      // Not `copy`: into shared memory V8 copies with atomic moves.
      copyIntoShared(this.slab, this.filled, chunk.subarray(offset, offset + n));
      this.filled += n;
      offset += n;
      if (this.filled === SLAB_BYTES) this.flushSlab();
    }
    this.afterDispatch(callback);
  }

  /**
   * Appends the handed-over rest of a request body (body-handoff.ts) after
   * everything written so far: each slab is filled straight from the
   * connection, then written and hashed as _write's are. Call it only once
   * earlier writes' callbacks ran, and end() the writer after it. `count` may
   * refuse the bytes (too many). Without a free slab the bytes are received
   * into ordinary memory and go through the page cache, as in _write.
   */
  async receive(handoff: BodyHandoff, count: (bytes: number) => Error | null): Promise<void> {
    if (await this.receiveNatively(handoff, count)) return;
    let left = handoff.remaining;
    while (left > 0) {
      if (this.failure) throw this.failure;
      if (!this.slab && !this.directBroken) {
        this.slab = this.slabs.take();
        this.filled = 0;
      }
      const slab = this.slab;
      const n = Math.min(slab ? SLAB_BYTES - this.filled : UNALIGNED_PIECE, left);
      const tooMany = count(n);
      if (tooMany) throw tooMany;
      if (slab) {
        await handoff.receive(slab, this.filled, n);
        this.filled += n;
        if (this.filled === SLAB_BYTES) this.flushSlab();
      } else {
        const bytes = Buffer.allocUnsafe(n);
        await handoff.receive(bytes, 0, n);
        this.writeBuffered(bytes, this.slabPosition);
        this.slabPosition += n;
        this.directBroken = true;
        await this.hash?.update(bytes);
      }
      left -= n;
      await new Promise<void>((resolveRoom, reject) => this.afterDispatch((error) => (error ? reject(error) : resolveRoom())));
    }
  }

  /**
   * receive() in one native job (handoff.receiveToFile): the rest of the body
   * goes from the connection through a ring of this writer's slabs into the
   * file, hashed on the way, on the addon's threads (body-file.c). Only when
   * the hash can be fed there (nativeState) or there is none, and writes are
   * still direct; false, with nothing done, otherwise.
   */
  private async receiveNatively(handoff: BodyHandoff, count: (bytes: number) => Error | null): Promise<boolean> {
    if (!handoff.receiveToFile || this.directBroken || this.failure || handoff.remaining === 0) return false;
    const slabs: Buffer[] = [];
    if (this.slab) slabs.push(this.slab);
    while (slabs.length < RING_SLABS) {
      const slab = this.slabs.take();
      if (!slab) break;
      slabs.push(slab);
    }
    const state = slabs.length > 0 && this.hash ? this.hash.nativeState?.() ?? null : null;
    if (slabs.length === 0 || (this.hash && !state)) {
      for (const slab of slabs) if (slab !== this.slab) this.slabs.give(slab);
      return false;
    }
    const prefilled = this.slab ? this.filled : 0;
    const position = this.slabPosition;
    this.slab = undefined;
    this.filled = 0;
    this.inFlight++;
    // A large push: the pools' memory stays until pushes have been quiet for a while, counted from its end.
    // (The off-thread hash reports the slabs it is lent; this body's never reach it.)
    this.slabs.busy?.();
    try {
      const tooMany = count(handoff.remaining);
      if (tooMany) throw tooMany;
      const result = await handoff.receiveToFile({ directFd: this.directFd, bufferedFd: this.bufferedFd, position, slabs, prefilled, hash: state });
      this.counts.direct += result.direct;
      this.counts.buffered += result.buffered;
      this.slabPosition = position + prefilled + result.received;
      return true;
    } finally {
      // The job has ended (it reports only then): its slabs are ours again.
      for (const slab of slabs) this.releaseSlab(slab);
      this.slabs.busy?.();
      this.done(null);
    }
  }

  override _final(callback: Callback): void {
    if (this.slab && this.filled > 0) {
      // Direct writes end at a block boundary; the tail (< 4 KiB) goes through the cache.
      this.flushSlab(this.filled - (this.filled % DIRECT_ALIGN));
    } else if (this.slab) {
      this.releaseSlab(this.slab);
      this.slab = undefined;
    }
    this.whenIdle(callback);
  }

  override _destroy(error: Error | null, callback: Callback): void {
    if (this.slab) {
      this.releaseSlab(this.slab);
      this.slab = undefined;
    }
    // Report only once nothing is in flight: the caller truncates the file
    // after a failed append, and a write landing later would undo that.
    const settle = (): void => {
      if (this.inFlight === 0) callback(error);
      else this.waiting = settle;
    };
    settle();
  }

  /** Writes the slab's first `direct` bytes directly and the rest of what it holds through the cache, and hashes all of it. */
  private flushSlab(direct = this.filled): void {
    const slab = this.slab!;
    const length = this.filled;
    const position = this.slabPosition;
    this.slab = undefined;
    this.filled = 0;
    this.slabPosition += length;
    this.inFlight++;
    // The slab is done once its direct write and, when there is a hash, its hashing are.
    let parts = this.hash ? 2 : 1;
    let failure: Error | null = null;
    const partDone = (error: Error | null): void => {
      failure ??= error;
      if (--parts === 0) this.slabDone(slab, failure);
    };
    this.hash?.updateShared(slab.subarray(0, length), () => partDone(null));
    if (direct < length) this.writeBuffered(Buffer.from(slab.subarray(direct, length)), position + direct);
    if (direct === 0) return partDone(null);
    this.writeAll(this.directFd, slab, 0, direct, position, (error) => {
      if (error && (error as NodeJS.ErrnoException).code === "EINVAL") {
        // The filesystem takes O_DIRECT at open but not these writes: go through the cache.
        this.directBroken = true;
        this.writeAll(this.bufferedFd, slab, 0, direct, position, (retryError) => {
          if (!retryError) this.counts.buffered += direct;
          partDone(retryError);
        });
        return;
      }
      if (!error) this.counts.direct += direct;
      partDone(error);
    });
  }

  private writeBuffered(bytes: Buffer, position: number): void {
    this.inFlight++;
    this.writeAll(this.bufferedFd, bytes, 0, bytes.length, position, (error) => {
      if (!error) this.counts.buffered += bytes.length;
      this.done(error);
    });
  }

  private slabDone(slab: Buffer, error: Error | null): void {
    this.releaseSlab(slab);
    this.done(error);
  }

  private releaseSlab(slab: Buffer): void {
    this.slabs.give(slab);
  }

  private done(error: Error | null): void {
    this.inFlight--;
    if (error && !this.failure) this.failure = error;
    const waiting = this.waiting;
    if (waiting && (this.inFlight < MAX_IN_FLIGHT || this.failure || this.destroyed)) {
      this.waiting = null;
      waiting(this.failure);
    }
  }

  /** Lets the stream continue once fewer than MAX_IN_FLIGHT writes are pending. */
  private afterDispatch(callback: Callback): void {
    if (this.failure) return callback(this.failure);
    if (this.inFlight < MAX_IN_FLIGHT) return callback();
    this.waiting = callback;
  }

  private whenIdle(callback: Callback): void {
    if (this.failure || this.inFlight === 0) return callback(this.failure);
    this.waiting = () => this.whenIdle(callback);
  }

  /** Positional writes may be short (signals, full disks); continue until all bytes are down. */
  private writeAll(fd: number, buffer: Buffer, offset: number, length: number, position: number, callback: (error: Error | null) => void): void {
    write(fd, buffer, offset, length, position, (error, written) => {
      if (error) return callback(error);
      if (written === length) return callback(null);
      if (written === 0) return callback(new Error("short write"));
      this.writeAll(fd, buffer, offset + written, length - written, position + written, callback);
    });
  }
}
