/**
 * Worker-thread side of OffThreadHashes: one crypto Hash per session id, fed
 * from shared slabs the request thread fills. Every slab is acknowledged so the
 * request thread can reuse it; messages arrive in order, so acknowledgements do too.
 */
import { createHash, type Hash } from "node:crypto";
import { parentPort } from "node:worker_threads";
import type { ToHashThread, FromHashThread } from "./hash-protocol.js";

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
      hash.update(new Uint8Array(message.slab, 0, message.length));
      reply({ op: "released", id: message.id });
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
