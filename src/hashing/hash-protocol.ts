/** Messages between OffThreadHashes and its worker thread. */
export type ToHashThread =
  | { op: "update"; id: number; slab: SharedArrayBuffer; length: number }
  | { op: "digest"; id: number }
  | { op: "discard"; id: number };

export type FromHashThread = { op: "released"; id: number } | { op: "digest"; id: number; hex: string };
