/**
 * SHA-256 over a stream of chunks, with room for the work to happen off the
 * request thread. Pushing a blob is bound by hashing: done inline, the event
 * loop stops reading the socket while it hashes, the client's window fills and
 * the transfer stalls; done on another thread, receiving and hashing overlap.
 */
import { createHash } from "node:crypto";
import { NativeSha256, nativeSha256Available } from "../native/addon.js";

export interface IncrementalHash {
  /**
   * Feeds bytes. The hash may keep a reference to `chunk` only until update
   * returns. A returned promise asks the caller to wait before feeding more
   * (backpressure); it never rejects.
   */
  update(chunk: Uint8Array): void | Promise<void>;
  /**
   * Feeds bytes the caller already holds in shared memory (a SharedArrayBuffer)
   * and leaves unchanged until `release` is called: a hash that works on another
   * thread reads them there instead of copying them. `release` is called exactly
   * once, also when the hash fails or is discarded meanwhile. The caller bounds
   * how many such buffers it has out, which is its backpressure.
   */
  updateShared(bytes: Uint8Array, release: () => void): void;
  /**
   * Marks the end of one request's bytes: lets the hash release buffers it
   * holds while the session waits for its next chunk. Feeding may continue.
   */
  pause(): void;
  /** `sha256:<hex>` of everything fed; the hash cannot be used afterwards. Rejects if the hash failed. */
  digest(): Promise<string>;
  /** Drops the state without a result. */
  discard(): void;
  /**
   * Optional: the running state as a NativeSha256 with every byte fed so far
   * in it, for a native job to go on feeding (body-file.c's receiveFile); or
   * null when the state is where that cannot reach (another thread's hash).
   * Until that job ended, the caller feeds nothing else.
   */
  nativeState?(): NativeSha256 | null;
}

/** SHA-256 fed and finished on the calling thread: OpenSSL's through the addon (its state can be handed to a native job), else Node's. */
export interface SyncSha256 {
  update(bytes: Uint8Array): void;
  hex(): string;
  /** The native state, when it is one. */
  readonly native: NativeSha256 | null;
}

export function syncSha256(): SyncSha256 {
  if (nativeSha256Available()) {
    const native = new NativeSha256();
    return { native, update: (bytes) => native.update(bytes), hex: () => native.hex() };
  }
  const hash = createHash("sha256");
  return { native: null, update: (bytes) => void hash.update(bytes), hex: () => hash.digest("hex") };
}

export interface HashFactory {
  create(): IncrementalHash;
  close(): Promise<void>;
}

/** Hashing on the calling thread: the fallback, and the right choice for small data. */
export class InlineSha256 implements IncrementalHash {
  private readonly hash = syncSha256();

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }

  updateShared(bytes: Uint8Array, release: () => void): void {
    this.hash.update(bytes);
    release();
  }

  pause(): void {}

  digest(): Promise<string> {
    return Promise.resolve(`sha256:${this.hash.hex()}`);
  }

  discard(): void {}

  nativeState(): NativeSha256 | null {
    return this.hash.native;
  }
}

export const inlineHashes: HashFactory = {
  create: () => new InlineSha256(),
  close: async () => {},
};
