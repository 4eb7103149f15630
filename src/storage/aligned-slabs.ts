/**
 * Page-aligned scratch buffers for O_DIRECT writes. Node gives no control over
 * Buffer alignment, but a WebAssembly.Memory is mapped by the engine on its
 * own pages, so every 1 MiB slice of one is page aligned. The Memory is a
 * shared one, so a hashing thread can read a slab while it is written
 * (direct-file-writer.ts). A Memory cannot give
 * back parts of itself, so the pool grows in groups of four slabs only as far
 * as concurrent uploads need, up to a cap; when it is exhausted the caller
 * writes through the page cache instead of waiting. Once pushes have gone
 * quiet (src/memory/quiet-release.ts) the free slabs' pages are handed back
 * to the kernel; the slabs stay in the pool.
 */
import { pushMemory, type QuietRelease, type Releasable } from "../memory/quiet-release.js";
import { discardEach } from "../native/addon.js";

export const SLAB_BYTES = 1024 * 1024;
const WASM_PAGE = 64 * 1024;
const GROUP_SLABS = 4;

/** Where DirectFileWriter takes its slabs from (tests substitute their own). */
export interface SlabPool {
  take(): Buffer | undefined;
  give(slab: Buffer): void;
  /** Optional: a large body is using slabs (QuietRelease.busy), so the pool's idle memory stays for now. */
  busy?(): void;
}

export class AlignedSlabs implements SlabPool, Releasable {
  private readonly free: Buffer[] = [];
  private created = 0;

  constructor(
    private readonly maxSlabs: number,
    private readonly quiet?: QuietRelease,
  ) {
    quiet?.register(this);
  }

  take(): Buffer | undefined {
    // Not a sign of big pushes by itself: every push takes a slab, 16 KiB ones too, and a
    // steady trickle of small pushes must not keep a past burst's slabs resident. The off-thread
    // hash reports to `quiet` for bodies over 64 KiB, also for the slabs lent to it (off-thread-hashes.ts).
    if (this.free.length === 0 && this.created < this.maxSlabs) this.grow();
    return this.free.pop();
  }

  give(slab: Buffer): void {
    this.free.push(slab);
  }

  busy(): void {
    this.quiet?.busy();
  }

  /** Slabs allocated so far, free or in use (tests). */
  get allocated(): number {
    return this.created;
  }

  releaseIdle(): boolean {
    return discardEach(this.free);
  }

  private grow(): void {
    const count = Math.min(GROUP_SLABS, this.maxSlabs - this.created);
    const pages = (count * SLAB_BYTES) / WASM_PAGE;
    const group = Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer);
    for (let i = 0; i < count; i++) this.free.push(group.subarray(i * SLAB_BYTES, (i + 1) * SLAB_BYTES));
    this.created += count;
  }
}

let shared: AlignedSlabs | undefined;

/**
 * One pool per process (per serving thread), at most 48 MiB: as many bodies
 * as may be received natively at once (MAX_TAKEN, 16) with their three slabs
 * each (direct-file-writer.ts, RING_SLABS), or sixteen uploads streaming at
 * full speed (one slab filling and two being written each); resident only
 * while pushes are not quiet. A slow client holds its slabs as long as it
 * sends, so with 24 eight trickling bodies left none for anyone else (review
 * of round 10); when the pool is empty an upload writes through the page cache.
 */
export function sharedAlignedSlabs(): AlignedSlabs {
  return (shared ??= new AlignedSlabs(48, pushMemory));
}
