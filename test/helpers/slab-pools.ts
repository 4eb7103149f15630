/**
 * Slab pools for the O_DIRECT writer's tests: one over the shared aligned
 * memory the registry uses, counting the slabs out of it.
 */
import { AlignedSlabs, type SlabPool } from "../../src/storage/aligned-slabs.js";

export function countingPool(slabs: number): SlabPool & { out: number } {
  const inner = new AlignedSlabs(slabs);
  const pool = {
    out: 0,
    take(): Buffer | undefined {
      const slab = inner.take();
      if (slab) pool.out++;
      return slab;
    },
    give(slab: Buffer): void {
      pool.out--;
      inner.give(slab);
    },
  };
  return pool;
}
