/**
 * Worker-thread side of OffThreadHashes: one crypto Hash per session id, fed
 * from shared slabs the request thread fills. Every slab is acknowledged so the
 * request thread can reuse it; messages arrive in order, so acknowledgements do too.
 */
import { createHash, type Hash } from "node:crypto";
import { parentPort } from "node:worker_threads";
import type { ToHashThread, FromHashThread } from "./hash-protocol.js";
import { collectGarbage } from "../memory/collect.js";

/**
 * Each slab arrives as a new SharedArrayBuffer object on this thread, and its
 * memory stays allocated while that object does, even after the request
 * thread dropped the slab from its pool. This thread allocates so little that
 * V8 would collect those objects only after thousands of slabs; a young
 * collection every UPDATES_PER_COLLECTION slabs (32 MiB hashed, well under a
 * millisecond on this small heap) lets dropped slabs go.
 */
const UPDATES_PER_COLLECTION = 64;
let updates = 0;

const port = parentPort;
if (!port) throw new Error("hash-thread must run in a worker thread");
const hashes = new Map<number, Hash>();

function reply(message: FromHashThread): void {
  port!.postMessage(message);
}

port.on("message", (message: ToHashThread) => {
  switch (message.op) {
    case "update": {
      let hash = hashes.get(message.id);
      if (!hash) hashes.set(message.id, (hash = createHash("sha256")));
      hash.update(new Uint8Array(message.slab, message.offset, message.length));
      reply({ op: "released", id: message.id });
      if (++updates % UPDATES_PER_COLLECTION === 0) collectGarbage(false);
      break;
    }
    case "digest": {
      const hash = hashes.get(message.id) ?? createHash("sha256");
      hashes.delete(message.id);
      reply({ op: "digest", id: message.id, hex: hash.digest("hex") });
      break;
    }
    case "discard":
      hashes.delete(message.id);
      break;
  }
});
