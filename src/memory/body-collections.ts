/**
 * Young-generation collections paced by request-body bytes.
 *
 * Node's HTTP parser hands every body chunk over in a fresh malloc'd buffer
 * of up to 64 KiB, and V8 frees that memory only when it collects the small
 * JavaScript wrapper. A push allocates almost no JavaScript per byte, so
 * V8's young generation (4 MiB with the launcher's flag) fills only after
 * hundreds of MiB of body: in between, the wrappers that happened to be in
 * flight at the rare collections got promoted, and their buffers waited for
 * a full collection, which V8 starts only when ~64 MiB of such memory has
 * piled up. glibc's heap then grew by tens of MiB per push and gave the top
 * back afterwards, so the next push faulted it in again.
 *
 * A young collection every 8 MiB of body (all requests of this thread
 * together) keeps the chunks short-lived: it finds almost nothing alive (the
 * chunks have been copied onwards), so it costs well under a millisecond,
 * and their memory is reused while still mapped and in cache. Measured with
 * `bench/push-cpu.ts` (docs/benchmarks-history.md, "Speed round 7"): a 100 MiB push
 * took ~30% less CPU. 8 MiB measured as well as 4 with one push at a time and
 * better with eight (4 MiB let more chunks of the eight queues live through
 * two collections, into the old generation); 1 and 16 MiB were worse.
 *
 * A client cannot turn this against the registry: it costs one young
 * collection per 8 MiB the client has to send.
 */
import { collectGarbage } from "./collect.js";

export const BODY_BYTES_PER_COLLECTION = 8 * 1024 * 1024;

let received = 0;

/** Counts `bytes` of request body just received; runs a young collection every BODY_BYTES_PER_COLLECTION. */
export function bodyBytesReceived(bytes: number): void {
  received += bytes;
  if (received < BODY_BYTES_PER_COLLECTION) return;
  received = 0;
  collectGarbage(false);
}
