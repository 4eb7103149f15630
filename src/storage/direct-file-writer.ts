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
 */
import { write } from "node:fs";
import { Writable } from "node:stream";
import { SLAB_BYTES, type SlabPool } from "./aligned-slabs.js";

/** Block size every direct write is a multiple of (the largest logical block size in common use). */
export const DIRECT_ALIGN = 4096;
const MAX_IN_FLIGHT = 2;

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
  ) {
    // One body chunk of queue, not a slab's worth: _write copies each chunk into a slab at once,
    // so queued chunks only wait. With 1 MiB, 8 concurrent pushes kept ~8 MiB of chunks queued,
    // long enough for their wrappers to be promoted: full collections took ~13% of the CPU
    // (docs/benchmarks.md, "Speed round 7").
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
          this.writeBuffered(Buffer.from(chunk.subarray(offset)), this.slabPosition);
          this.slabPosition += chunk.length - offset;
          // Later direct writes need an aligned start again; stay buffered for this append.
          this.directBroken = true;
          break;
        }
      }
      const n = Math.min(SLAB_BYTES - this.filled, chunk.length - offset);
      chunk.copy(this.slab, this.filled, offset, offset + n);
      this.filled += n;
      offset += n;
      if (this.filled === SLAB_BYTES) this.flushSlab();
    }
    this.afterDispatch(callback);
  }

  override _final(callback: Callback): void {
    if (this.slab && this.filled > 0) {
      const aligned = this.filled - (this.filled % DIRECT_ALIGN);
      const tail = this.filled - aligned;
      const tailPosition = this.slabPosition + aligned;
      if (tail > 0) this.writeBuffered(Buffer.from(this.slab.subarray(aligned, this.filled)), tailPosition);
      if (aligned > 0) {
        this.filled = aligned;
        this.flushSlab();
      } else {
        this.releaseSlab(this.slab);
        this.slab = undefined;
      }
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

  private flushSlab(): void {
    const slab = this.slab!;
    const length = this.filled;
    const position = this.slabPosition;
    this.slab = undefined;
    this.filled = 0;
    this.slabPosition += length;
    this.inFlight++;
    this.writeAll(this.directFd, slab, 0, length, position, (error) => {
      if (error && (error as NodeJS.ErrnoException).code === "EINVAL") {
        // The filesystem takes O_DIRECT at open but not these writes: go through the cache.
        this.directBroken = true;
        this.writeAll(this.bufferedFd, slab, 0, length, position, (retryError) => {
          if (!retryError) this.counts.buffered += length;
          this.slabDone(slab, retryError);
        });
        return;
      }
      if (!error) this.counts.direct += length;
      this.slabDone(slab, error);
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
