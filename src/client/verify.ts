/**
 * A pass-through stream that checks size and digest of what flows through it
 * (image-spec: content from `urls` SHOULD be verified against digest and size).
 * Too many bytes fail at once; a short or wrong body fails at the end, before
 * the consumer sees the stream finish, so nothing unverified is committed.
 */
import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { parseDigest } from "../oci/digest.js";
import { SourceError } from "./errors.js";

export class VerifyingStream extends Transform {
  private readonly hash;
  private received = 0;

  constructor(
    private readonly digest: string,
    private readonly size: number,
    private readonly onBytes?: (total: number) => void,
  ) {
    super();
    this.hash = createHash(parseDigest(digest).algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    if (this.received > this.size) {
      callback(new SourceError(`more than the expected ${this.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    this.onBytes?.(this.received);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.received !== this.size) {
      callback(new SourceError(`size mismatch: expected ${this.size} bytes, got ${this.received}`));
      return;
    }
    const actual = `${parseDigest(this.digest).algorithm}:${this.hash.digest("hex")}`;
    if (actual !== this.digest) {
      callback(new SourceError(`digest mismatch: expected ${this.digest}, got ${actual}`));
      return;
    }
    callback();
  }
}
