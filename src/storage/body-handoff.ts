/**
 * A request body whose bytes a storage driver may take straight from the
 * connection into memory of its own, instead of through the stream.
 *
 * Why: a stream delivers a body in chunks Node's HTTP parser copied out of
 * its read buffer, which the O_DIRECT writer then copies into an aligned
 * slab; at 8 concurrent 100 MiB pushes that reading and copying kept the
 * event loop ~85% busy. Handed over, the kernel copies each byte once, into
 * the slab the disk write and the hash use, on a thread of the native
 * addon's (docs/benchmarks-history.md, "Speed round 9"); with receiveToFile the
 * addon also hashes and writes it, and the event loop hears of the body once
 * ("Speed round 10").
 *
 * The HTTP layer offers it (src/http/body.ts) where it can: a plain TCP
 * connection, a Content-Length body, the native addon loaded. The registry
 * passes the offer along with the body; a driver that has no use for it just
 * reads the stream, which works as it always did.
 */
import type { Readable } from "node:stream";
import type { FileSink, FileSinkResult } from "../native/addon.js";

export interface BodyHandoff {
  /** Body bytes still to come through the stream: read exactly these from it first, in order. */
  readonly streamed: number;
  /** The bytes after them, which only receive() delivers. */
  readonly remaining: number;
  /**
   * Receives the next `length` of the remaining bytes into target[offset, offset + length),
   * one call at a time. Rejects with the body's failure (the client went away, the body went
   * quiet, the consumer's source was stopped); `target` is not written once it settled.
   */
  receive(target: Uint8Array, offset: number, length: number): Promise<void>;
  /**
   * Optional (where the addon can): receives all `remaining` bytes into a file
   * at once, written and hashed on the addon's threads (see FileSink). Rejects
   * as receive() does, or with the write's error (code ENOSPC, EIO...) when the
   * file refused one. Resolves with how the bytes were written.
   */
  receiveToFile?(sink: FileSink): Promise<FileSinkResult>;
  /** Ends a receive in flight, which then rejects with `reason`. */
  abort(reason: Error): void;
}

export interface BodyHandoffOffer {
  /**
   * Stops the stream's own reading and hands over the rest of a body of
   * `expectedBytes` bytes, or resolves null (the stream carries on as
   * before) when it cannot: the body has another length, has already
   * arrived whole, or failed.
   */
  takeOver(expectedBytes: number): Promise<BodyHandoff | null>;
}

const OFFER = Symbol("ferry.bodyHandoff");

type Offering = Readable & { [OFFER]?: BodyHandoffOffer };

/** Attaches `offer` to `stream` (nothing when undefined). */
export function offerHandoff<S extends Readable>(stream: S, offer: BodyHandoffOffer | undefined): S {
  if (offer) (stream as Offering)[OFFER] = offer;
  return stream;
}

/** The offer attached to `stream`, if any. */
export function handoffOffer(stream: Readable): BodyHandoffOffer | undefined {
  return (stream as Offering)[OFFER];
}
