/**
 * Native blob bodies: a byte range of a local file goes to the client's
 * socket from a thread of the optional addon in native/sendfile (built by
 * scripts/build-native.mjs at `npm install`), in one of two modes
 * (storage.blobTransfer):
 * - "copy": pread() into a 64 KiB buffer and send() it. Fastest on loopback
 *   (100 MiB pull: ~2.4 GB/s vs 1.3 for sendfile and 1.5 for the reference
 *   registry), since the receiver copies cache-hot data.
 * - "sendfile": sendfile(2), zero-copy; saves CPU on a real NIC.
 * Streaming through Node instead pulls a 100 MiB blob at 0.25-0.9 GB/s on a
 * 2-core box.
 *
 * When the addon is missing (not Linux, no compiler) `reserveNativeTransfer`
 * answers null and callers keep streaming: nothing else changes.
 *
 * The rules that make handing the socket to a native thread safe:
 * - plain TCP only (TLS must encrypt in user space), with a real descriptor;
 * - the response headers are in the kernel before the thread writes, and
 *   nothing else writes to the socket until it finished; then `res.end()`
 *   completes the response as usual, so keep-alive works;
 * - the socket's 'close' (client gone, server shutdown, closeAllConnections)
 *   cancels the transfer: the addon shuts its duplicate of the socket down;
 * - no progress for `idleTimeoutMs` ends the transfer; any failure after the
 *   headers destroys the connection (the only honest signal left).
 */
import { loadNativeAddon, type NativeAddon } from "../native/addon.js";
import { createReadStream } from "node:fs";
import { constants as osConstants } from "node:os";
import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { pipeline } from "node:stream/promises";

/** How the native thread moves the bytes (storage.blobTransfer minus "stream"). */
export type NativeTransferMode = "copy" | "sendfile";

/** The copy loop's buffer: 64 KiB measured best on loopback (16 KiB 1.5 GB/s, 32 KiB 2.2, 64 KiB 2.4, 256 KiB 1.8). */
export const COPY_BUFFER_BYTES = 64 * 1024;

/** The addon's `copyBufferBytes` for a mode: the buffer size for "copy", 0 (sendfile) for "sendfile". */
export function copyBufferBytesFor(mode: NativeTransferMode): number {
  return mode === "copy" ? COPY_BUFFER_BYTES : 0;
}

export interface NativeTransferLimits {
  /** Below this a stream costs about the same and needs no thread. */
  minBytes: number;
  /** Transfers running at once (one thread each); more are streamed. */
  maxInFlight: number;
  /** A transfer that makes no progress for this long fails (client stopped reading). */
  idleTimeoutMs: number;
}

const DEFAULT_LIMITS: NativeTransferLimits = { minBytes: 256 * 1024, maxInFlight: 64, idleTimeoutMs: 60_000 };
const limits: NativeTransferLimits = { ...DEFAULT_LIMITS };

/** The limits in force. */
export function nativeTransferLimits(): NativeTransferLimits {
  return { ...limits };
}

/** Changes limits process-wide (tests); returns a function that restores the defaults. */
export function setNativeTransferLimits(changes: Partial<NativeTransferLimits>): () => void {
  Object.assign(limits, changes);
  return () => void Object.assign(limits, DEFAULT_LIMITS);
}

/** `partialWrites`: sends/sendfiles that took fewer bytes than offered (the socket buffer filled). */
/** Whether the addon is built and loads. */
export function available(): boolean {
  return "addon" in loadNativeAddon();
}

/** Why `available()` is false, or null when it is true. */
export function unavailableReason(): string | null {
  const state = loadNativeAddon();
  return "reason" in state ? state.reason : null;
}

export interface NativeTransferStats {
  /** Transfers handed to the native thread. */
  started: number;
  /** Of those, in "copy" mode. */
  startedCopy: number;
  /** Of those, in "sendfile" mode. */
  startedSendfile: number;
  /** Of those, finished with every byte sent. */
  completed: number;
  /** Of those, ended by an error, a cancel or the idle timeout. */
  failed: number;
  /** Bytes sent by native transfers (complete or not). */
  bytes: number;
  /** Transfers reserved and not yet finished. */
  inFlight: number;
  /** Requests that were eligible but streamed because maxInFlight were running. */
  overCap: number;
  /** Writes of finished transfers that the socket took only in part (its buffer was full). */
  partialWrites: number;
}

const stats: NativeTransferStats = {
  started: 0,
  startedCopy: 0,
  startedSendfile: 0,
  completed: 0,
  failed: 0,
  bytes: 0,
  inFlight: 0,
  overCap: 0,
  partialWrites: 0,
};

/** A copy of the process-wide counters (tests, metrics). */
export function nativeTransferStats(): NativeTransferStats {
  return { ...stats };
}

/** A place among the `maxInFlight` transfers; release it if you end up not sending. */
export interface NativeTransferSlot {
  release(): void;
}

/**
 * Reserves a native transfer for a GET body of `length` bytes on `res`, or
 * null when the body must be streamed: addon missing, HEAD, small body, TLS
 * or descriptor-less socket, or too many transfers already running.
 */
export function reserveNativeTransfer(res: ServerResponse, length: number): NativeTransferSlot | null {
  if (length < limits.minBytes || res.req?.method !== "GET") return null;
  if (!available() || socketFd(res.socket) === null) return null;
  if (stats.inFlight >= limits.maxInFlight) {
    stats.overCap++;
    return null;
  }
  stats.inFlight++;
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      stats.inFlight--;
    },
  };
}

export interface NativeTransferRequest {
  status: number;
  /** Every response header, Content-Length included. */
  headers: Record<string, string | number | string[]>;
  /** An open descriptor of the file; the caller closes it once the returned promise settles. */
  fd: number;
  offset: number;
  length: number;
  /** > 0: copy through a buffer of this size; 0: sendfile(2). See `copyBufferBytesFor`. */
  copyBufferBytes: number;
  idleTimeoutMs?: number;
}

export type NativeTransferOutcome =
  | { ok: true; bytes: number; native: boolean }
  /** The connection was destroyed; `clientGone` when the client (or a shutdown) closed it rather than a fault. */
  | { ok: false; bytes: number; native: boolean; error: Error; clientGone: boolean };

/**
 * Writes the response: headers, then `length` bytes of `fd` from `offset`.
 * Never throws; on failure the connection is destroyed and the outcome says
 * why. Releases `slot` when done.
 */
export async function nativeTransferResponse(
  slot: NativeTransferSlot,
  res: ServerResponse,
  request: NativeTransferRequest,
): Promise<NativeTransferOutcome> {
  try {
    return await send(res, request);
  } finally {
    slot.release();
  }
}

const EMPTY = Buffer.alloc(0);

async function send(res: ServerResponse, request: NativeTransferRequest): Promise<NativeTransferOutcome> {
  const { addon } = loadNativeAddon() as { addon: NativeAddon };
  res.writeHead(request.status, request.headers);
  res.flushHeaders();
  const socket = res.socket;
  if (!socket || !(await headersWritten(socket)) || res.socket !== socket) {
    res.destroy();
    return { ok: false, bytes: 0, native: false, error: codedError("ECONNRESET", "the connection closed before the body"), clientGone: true };
  }
  const fd = socketFd(socket);
  if (fd === null || socket.writableLength !== 0) return streamInstead(res, request);

  let handle: unknown;
  const copyBufferBytes = request.copyBufferBytes;
  const result = new Promise<{ errno: number; bytes: number; partialWrites: number }>((resolve) => {
    try {
      handle = addon.start(
        fd,
        request.fd,
        request.offset,
        request.length,
        request.idleTimeoutMs ?? limits.idleTimeoutMs,
        (errno, bytes, partialWrites) => resolve({ errno, bytes, partialWrites }),
        copyBufferBytes,
      );
    } catch {
      // dup(), the buffer or thread creation failed (e.g. EMFILE): nothing was sent yet.
      resolve({ errno: -1, bytes: 0, partialWrites: 0 });
    }
  });
  if (handle === undefined) {
    await result;
    return streamInstead(res, request);
  }
  stats.started++;
  if (copyBufferBytes > 0) stats.startedCopy++;
  else stats.startedSendfile++;
  // Node closed its descriptor (client gone, destroy, closeAllConnections):
  // the addon's duplicate would keep the connection open, so stop it now.
  // No handle (the addon could not make one, out of memory): the transfer still ends, by its idle timeout at worst.
  const cancel = () => void (handle !== undefined && addon.cancel(handle));
  socket.once("close", cancel);
  const { errno, bytes, partialWrites } = await result;
  socket.off("close", cancel);
  stats.bytes += bytes;
  stats.partialWrites += partialWrites;
  if (errno === 0) {
    stats.completed++;
    if (!socket.destroyed) res.end();
    return { ok: true, bytes, native: true };
  }
  stats.failed++;
  res.destroy();
  const code = errnoCode(errno);
  const clientGone = code === "EPIPE" || code === "ECONNRESET" || code === "ECANCELED";
  const error = codedError(code, code === "EIO" ? "the file is shorter than the range sent" : `${copyBufferBytes > 0 ? "copy" : "sendfile"} transfer failed after ${bytes} bytes`);
  return { ok: false, bytes, native: true, error, clientGone };
}

/** Resolves once everything written so far is in the kernel (true), or the socket closed first (false). */
function headersWritten(socket: Socket): Promise<boolean> {
  if (socket.destroyed || !socket.writable) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onClose = () => resolve(false);
    socket.once("close", onClose);
    // Socket writes complete in order: this callback runs after the headers' write.
    socket.write(EMPTY, (error) => {
      socket.off("close", onClose);
      resolve(!error && !socket.destroyed);
    });
  });
}

/** Headers already went out but the native path cannot run: send the body the ordinary way. */
async function streamInstead(res: ServerResponse, request: NativeTransferRequest): Promise<NativeTransferOutcome> {
  const body = createReadStream("", {
    fd: request.fd,
    autoClose: false,
    start: request.offset,
    end: request.offset + request.length - 1,
    highWaterMark: 256 * 1024,
  });
  try {
    await pipeline(body, res);
    return { ok: true, bytes: request.length, native: false };
  } catch (error) {
    body.destroy();
    res.destroy();
    const err = error instanceof Error ? error : new Error(String(error));
    return { ok: false, bytes: 0, native: false, error: err, clientGone: res.req?.destroyed === true };
  }
}

/** The socket's descriptor when it is plain TCP with one (not TLS, not a pipe-less stub). */
function socketFd(socket: Socket | null): number | null {
  if (!socket || socket.destroyed || (socket as Socket & { encrypted?: boolean }).encrypted) return null;
  const fd = (socket as Socket & { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : null;
}

function errnoCode(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `E${errno}`;
}

function codedError(code: string, message: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: ${message}`);
  error.code = code;
  return error;
}
