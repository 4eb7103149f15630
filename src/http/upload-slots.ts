/**
 * A cap on the requests with a body (blob uploads, manifest pushes, token
 * forms) one client may have in progress at once. Each holds a socket,
 * buffers and often a session file for as long as its body keeps trickling
 * in, so without a cap one client can exhaust the descriptors and memory of
 * the whole registry. Clients are keyed by address (IPv6 by /64).
 */
import { RegistryError } from "../oci/errors.js";
import { clientKey } from "./client-address.js";

export class UploadSlots {
  private readonly inUse = new Map<string, number>();

  constructor(private readonly perClient: number) {}

  /** Takes a slot for `address`, or throws 429 TOOMANYREQUESTS. The returned function gives it back (once). */
  acquire(address: string): () => void {
    const key = clientKey(address);
    const current = this.inUse.get(key) ?? 0;
    if (current >= this.perClient) {
      throw new RegistryError(
        "TOOMANYREQUESTS",
        `too many uploads in progress from this client (requests with a body): at most ${this.perClient} at once; retry when one has finished`,
        { status: 429, detail: { limit: this.perClient }, headers: { "Retry-After": "1" } },
      );
    }
    this.inUse.set(key, current + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.inUse.get(key) ?? 1) - 1;
      if (left <= 0) this.inUse.delete(key);
      else this.inUse.set(key, left);
    };
  }

  /** Uploads in progress from `address` (for tests and metrics). */
  count(address: string): number {
    return this.inUse.get(clientKey(address)) ?? 0;
  }
}
