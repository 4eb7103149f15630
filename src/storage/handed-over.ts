/**
 * Writes a handed-over request body (body-handoff.ts) into a DirectFileWriter:
 * first the bytes the stream still delivers, then the rest straight from the
 * connection into the writer's slabs. It fails the way the stream would:
 * with the source's error when the source is destroyed (the client went
 * away, the session's lease was lost), and only once nothing writes any more.
 */
import type { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import type { BodyHandoff } from "./body-handoff.js";
import type { DirectFileWriter } from "./direct-file-writer.js";

/** Counts bytes on their way to the file; returns the error to stop with when there are too many. */
export type ByteCounter = (bytes: number) => Error | null;

export async function writeHandedOver(source: Readable, handoff: BodyHandoff, writer: DirectFileWriter, count: ByteCounter): Promise<void> {
  const stop = (): void => handoff.abort(stoppedError(source));
  source.once("close", stop);
  try {
    if (source.destroyed) throw stoppedError(source);
    await streamExactly(source, handoff.streamed, writer, count);
    await writer.receive(handoff, count);
    writer.end();
    await finished(writer);
  } catch (error) {
    handoff.abort(error instanceof Error ? error : new Error(String(error)));
    if (!writer.closed) {
      const closed = new Promise((resolveClosed) => writer.once("close", resolveClosed));
      writer.destroy();
      await closed;
    }
    throw error;
  } finally {
    source.off("close", stop);
  }
}

function stoppedError(source: Readable): Error {
  return source.errored ?? new Error("the upload was stopped");
}

/** Writes exactly `bytes` from `source` (which may not end after them) into `writer`. */
async function streamExactly(source: Readable, bytes: number, writer: DirectFileWriter, count: ByteCounter): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const chunk = source.read() as Buffer | null;
    if (chunk === null) {
      await readable(source);
      continue;
    }
    // The offer counted these bytes itself; more would mean the body is not what it said.
    if (chunk.length > left) throw new Error("the request stream delivered more bytes than the handoff said");
    left -= chunk.length;
    const tooMany = count(chunk.length);
    if (tooMany) throw tooMany;
    await new Promise<void>((resolveWrite, reject) => writer.write(chunk, (error) => (error ? reject(error) : resolveWrite())));
  }
}

/** Resolves when `source` has something to read; rejects when it ended, failed or was destroyed first. */
function readable(source: Readable): Promise<void> {
  return new Promise<void>((resolveReadable, reject) => {
    if (source.destroyed) return reject(stoppedError(source));
    if (source.readableEnded) return reject(new Error("the request stream ended before the handoff said"));
    const done = (error: Error | null): void => {
      source.off("readable", onReadable);
      source.off("close", onGone);
      source.off("end", onGone);
      if (error) reject(error);
      else resolveReadable();
    };
    const onReadable = (): void => done(null);
    const onGone = (): void => done(source.readableEnded ? new Error("the request stream ended before the handoff said") : stoppedError(source));
    source.on("readable", onReadable);
    source.on("close", onGone);
    source.on("end", onGone);
  });
}
