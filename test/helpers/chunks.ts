/** Request bodies as they arrive: the same bytes cut into chunks of varying sizes. */
import { Readable } from "node:stream";

/** `data` in chunks of the given sizes (cycled), as a stream. */
export function chunkedReadable(data: Buffer, sizes: number[]): Readable {
  const parts: Buffer[] = [];
  for (let offset = 0, i = 0; offset < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length], data.length - offset);
    parts.push(data.subarray(offset, offset + n));
    offset += n;
  }
  return Readable.from(parts);
}
