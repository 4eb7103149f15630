/** Messages between OffThreadHashes and its worker thread. */
export type ToHashThread =
  /** Hash `length` bytes of `slab` from `offset` (a slab of the pool at 0, or a storage writer's shared slab). */
  | { op: "update"; id: number; slab: SharedArrayBuffer; offset: number; length: number }
  | { op: "digest"; id: number }
  | { op: "discard"; id: number };

export type FromHashThread = { op: "released"; id: number } | { op: "digest"; id: number; hex: string };
