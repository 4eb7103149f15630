/**
 * Page-aligned scratch buffers for O_DIRECT writes. Node gives no control over
 * Buffer alignment, but a WebAssembly.Memory is mapped by the engine on its
 * own pages, so every 1 MiB slice of one is page aligned. The pool is fixed
 * (a Memory cannot give back parts of itself); when it is empty the caller
 * writes through the page cache instead of waiting.
 */
export const SLAB_BYTES = 1024 * 1024;
const WASM_PAGE = 64 * 1024;

/** Where DirectFileWriter takes its slabs from (tests substitute their own). */
export interface SlabPool {
  take(): Buffer | undefined;
  give(slab: Buffer): void;
}

export class AlignedSlabs implements SlabPool {
  private readonly free: Buffer[] = [];

  constructor(count: number) {
    const memory = new WebAssembly.Memory({ initial: (count * SLAB_BYTES) / WASM_PAGE, maximum: (count * SLAB_BYTES) / WASM_PAGE });
    const whole = Buffer.from(memory.buffer);
    for (let i = 0; i < count; i++) this.free.push(whole.subarray(i * SLAB_BYTES, (i + 1) * SLAB_BYTES));
  }

  take(): Buffer | undefined {
    return this.free.pop();
  }

  give(slab: Buffer): void {
    this.free.push(slab);
  }
}

let shared: AlignedSlabs | undefined;

/** One pool per process: 32 MiB, enough for 8 uploads streaming at full speed at once. */
export function sharedAlignedSlabs(): AlignedSlabs {
  return (shared ??= new AlignedSlabs(32));
}
