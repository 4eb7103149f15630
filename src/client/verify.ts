/**
 * A pass-through stream that checks size and digest of what flows through it
 * (image-spec: content from `urls` SHOULD be verified against digest and size).
 * Too many bytes fail at once. The chunk carrying the last expected byte is
 * held back until the digest is checked, so a consumer (an upload, a file)
 * never receives a complete but wrong body; a short body fails at the end,
 * before the consumer sees the stream finish. Each byte is hashed once.
 */
import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { parseDigest } from "../oci/digest.js";
import { SourceError } from "./errors.js";

export class VerifyingStream extends Transform {
  private readonly hash;
  private received = 0;
  private checked = false;

  constructor(
    readonly digest: string,
    readonly size: number,
    private readonly onBytes?: (total: number) => void,
  ) {
    // Pass the source's chunks on as they are; buffer up to 1 MiB ahead of a slow consumer.
    super({ readableHighWaterMark: 1024 * 1024, writableHighWaterMark: 1024 * 1024 });
    this.hash = createHash(parseDigest(digest).algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    if (this.received > this.size) {
      callback(new SourceError(`more than the expected ${this.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    if (this.received === this.size) {
      const error = this.check();
      if (error) {
        callback(error);
        return;
      }
    }
    this.onBytes?.(this.received);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.received !== this.size) {
      callback(new SourceError(`size mismatch: expected ${this.size} bytes, got ${this.received}`));
      return;
    }
    callback(this.checked ? null : this.check());
  }

  private check(): SourceError | null {
    this.checked = true;
    const actual = `${parseDigest(this.digest).algorithm}:${this.hash.digest("hex")}`;
    return actual === this.digest ? null : new SourceError(`digest mismatch: expected ${this.digest}, got ${actual}`);
  }
}
