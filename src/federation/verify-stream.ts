/**
 * Streams that let proxied bytes reach a client while they are verified
 * (OCI image-spec: content fetched from `urls` SHOULD be verified against
 * `digest` and `size`). The last chunk is held back until the digest and the
 * size have been checked, so a client never receives a complete response for
 * wrong bytes: on a mismatch the stream errors and the HTTP layer cuts the
 * connection before the final bytes go out.
 */
import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import type { ByteRange } from "../storage/blob-store.js";

export class ContentMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ContentMismatchError";
  }
}

export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private readonly expectedHex: string;
  private held: Buffer | null = null;
  private seen = 0;

  constructor(
    private readonly digest: string,
    private readonly size: number,
  ) {
    super();
    const [algorithm, hex] = digest.split(":", 2) as [string, string];
    this.hash = createHash(algorithm);
    this.expectedHex = hex;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.size) {
      callback(new ContentMismatchError(`size mismatch: the source sent more than the ${this.size} bytes the descriptor declares`));
      return;
    }
    this.hash.update(chunk);
    const previous = this.held;
    this.held = chunk;
    callback(null, previous ?? undefined);
  }

  override _flush(callback: TransformCallback): void {
    if (this.seen !== this.size) {
      callback(new ContentMismatchError(`size mismatch: the source sent ${this.seen} bytes, the descriptor declares ${this.size}`));
      return;
    }
    const actual = this.hash.digest("hex");
    if (actual !== this.expectedHex) {
      callback(new ContentMismatchError(`digest mismatch: the bytes hash to ${this.digest.split(":")[0]}:${actual}, not ${this.digest}`));
      return;
    }
    callback(null, this.held ?? undefined);
  }
}

/**
 * Passes only the bytes of an inclusive range. Its last piece waits for the
 * upstream's end, so a verification failure upstream still cuts the response.
 */
export class RangeSlice extends Transform {
  private offset = 0;
  private held: Buffer | null = null;

  constructor(private readonly range: ByteRange) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const start = this.offset;
    this.offset += chunk.length;
    const from = Math.max(this.range.start - start, 0);
    const to = Math.min(this.range.end + 1 - start, chunk.length);
    if (to <= from) {
      callback();
      return;
    }
    const previous = this.held;
    this.held = chunk.subarray(from, to);
    callback(null, previous ?? undefined);
  }

  override _flush(callback: TransformCallback): void {
    callback(null, this.held ?? undefined);
  }
}

/** Drops the first `count` bytes: a fallback source that ignored a Range resumes where the last one stopped. */
export class SkipBytes extends Transform {
  private left: number;

  constructor(count: number) {
    super();
    this.left = count;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.left >= chunk.length) {
      this.left -= chunk.length;
      callback();
      return;
    }
    const rest = chunk.subarray(this.left);
    this.left = 0;
    callback(null, rest);
  }
}

/**
 * For a forwarded range, the most that can be checked without the whole
 * blob: exactly `length` bytes arrive. Like VerifyingStream, the last chunk
 * waits for the source's end, so a short or long answer cuts the response
 * before it looks complete.
 */
export class ExactLength extends Transform {
  private seen = 0;
  private held: Buffer | null = null;

  constructor(private readonly length: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.length) {
      callback(new ContentMismatchError(`size mismatch: the source sent more than the ${this.length} bytes of the range`));
      return;
    }
    const previous = this.held;
    this.held = chunk;
    callback(null, previous ?? undefined);
  }

  override _flush(callback: TransformCallback): void {
    if (this.seen !== this.length) {
      callback(new ContentMismatchError(`size mismatch: the source sent ${this.seen} bytes of the ${this.length}-byte range`));
      return;
    }
    callback(null, this.held ?? undefined);
  }
}

export interface ContentRange {
  start: number;
  end: number;
  total: number | null;
}

/** `bytes START-END/TOTAL` (TOTAL may be `*`); null for anything else. */
export function parseContentRange(value: string | string[] | undefined): ContentRange | null {
  const text = Array.isArray(value) ? value[0] : value;
  const match = text === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(text.trim());
  if (!match) return null;
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (end < start) return null;
  return { start, end, total: match[3] === "*" ? null : Number(match[3]) };
}
