/**
 * AppendOptions.hash for drivers that keep no copy of the bytes in shared
 * memory: the bytes are fed to the hash on their way through, and the stream
 * waits when the hash asks (a slow hasher then slows the socket instead of
 * growing memory).
 */
import { Transform } from "node:stream";
import type { IncrementalHash } from "../hashing/incremental-hash.js";

/** A pass-through stage that feeds `hash`. */
export function hashingStage(hash: IncrementalHash): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const wait = hash.update(chunk);
      if (wait) wait.then(() => callback(null, chunk));
      else callback(null, chunk);
    },
  });
}
