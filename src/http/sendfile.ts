/**
 * Zero-copy blob bodies: a byte range of a local file goes to the client's
 * socket with sendfile(2), through the optional addon in native/sendfile
 * (built by scripts/build-native.mjs at `npm install`). Streaming through user
 * space pulls a 100 MiB blob at 0.25-0.9 GB/s on a 2-core box; sendfile
 * reaches 1-1.9 GB/s, like the reference registry (Go's io.Copy uses it).
 *
 * When the addon is missing (not Linux, no compiler) `reserveSendFile`
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
import { createRequire } from "node:module";
import { createReadStream } from "node:fs";
import { constants as osConstants } from "node:os";
import { fileURLToPath } from "node:url";
import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { pipeline } from "node:stream/promises";

export interface SendFileLimits {
  /** Below this a stream costs about the same and needs no thread. */
  minBytes: number;
  /** Transfers running at once (one thread each); more are streamed. */
  maxInFlight: number;
  /** A transfer that makes no progress for this long fails (client stopped reading). */
  idleTimeoutMs: number;
}

const DEFAULT_LIMITS: SendFileLimits = { minBytes: 256 * 1024, maxInFlight: 64, idleTimeoutMs: 60_000 };
const limits: SendFileLimits = { ...DEFAULT_LIMITS };

/** The limits in force. */
export function sendFileLimits(): SendFileLimits {
  return { ...limits };
}

/** Changes limits process-wide (tests); returns a function that restores the defaults. */
export function setSendFileLimits(changes: Partial<SendFileLimits>): () => void {
  Object.assign(limits, changes);
  return () => void Object.assign(limits, DEFAULT_LIMITS);
}

type Done = (errno: number, bytesSent: number) => void;
interface Addon {
  start(socketFd: number, fileFd: number, offset: number, length: number, idleTimeoutMs: number, done: Done): unknown;
  cancel(handle: unknown): boolean;
}

const ADDON_PATH = fileURLToPath(new URL("../../../native/sendfile/build/Release/ferry_sendfile.node", import.meta.url));

let loaded: { addon: Addon } | { reason: string } | undefined;

function load(): { addon: Addon } | { reason: string } {
  if (loaded) return loaded;
  if (process.platform !== "linux") return (loaded = { reason: `sendfile(2) is used on Linux only (this is ${process.platform})` });
  try {
    const addon = createRequire(import.meta.url)(ADDON_PATH) as Partial<Addon>;
    if (typeof addon.start !== "function" || typeof addon.cancel !== "function") throw new Error("unexpected exports");
    loaded = { addon: addon as Addon };
  } catch (error) {
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    loaded = { reason: `native addon not loaded (${message}); build it with: node scripts/build-native.mjs` };
  }
  return loaded;
}

/** Whether the addon is built and loads. */
export function available(): boolean {
  return "addon" in load();
}

/** Why `available()` is false, or null when it is true. */
export function unavailableReason(): string | null {
  const state = load();
  return "reason" in state ? state.reason : null;
}

export interface SendFileStats {
  /** Transfers handed to the native thread. */
  started: number;
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
}

const stats: SendFileStats = { started: 0, completed: 0, failed: 0, bytes: 0, inFlight: 0, overCap: 0 };

/** A copy of the process-wide counters (tests, metrics). */
export function sendFileStats(): SendFileStats {
  return { ...stats };
}

/** A place among the `maxInFlight` transfers; release it if you end up not sending. */
export interface SendFileSlot {
  release(): void;
}

/**
 * Reserves a native transfer for a GET body of `length` bytes on `res`, or
 * null when the body must be streamed: addon missing, HEAD, small body, TLS
 * or descriptor-less socket, or too many transfers already running.
 */
export function reserveSendFile(res: ServerResponse, length: number): SendFileSlot | null {
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

export interface SendFileRequest {
  status: number;
  /** Every response header, Content-Length included. */
  headers: Record<string, string | number | string[]>;
  /** An open descriptor of the file; the caller closes it once the returned promise settles. */
  fd: number;
  offset: number;
  length: number;
  idleTimeoutMs?: number;
}

export type SendFileOutcome =
  | { ok: true; bytes: number; native: boolean }
  /** The connection was destroyed; `clientGone` when the client (or a shutdown) closed it rather than a fault. */
  | { ok: false; bytes: number; native: boolean; error: Error; clientGone: boolean };

/**
 * Writes the response: headers, then `length` bytes of `fd` from `offset`.
 * Never throws; on failure the connection is destroyed and the outcome says
 * why. Releases `slot` when done.
 */
export async function sendFileResponse(slot: SendFileSlot, res: ServerResponse, request: SendFileRequest): Promise<SendFileOutcome> {
  try {
    return await send(res, request);
  } finally {
    slot.release();
  }
}

const EMPTY = Buffer.alloc(0);

async function send(res: ServerResponse, request: SendFileRequest): Promise<SendFileOutcome> {
  const { addon } = load() as { addon: Addon };
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
  const result = new Promise<{ errno: number; bytes: number }>((resolve) => {
    try {
      handle = addon.start(fd, request.fd, request.offset, request.length, request.idleTimeoutMs ?? limits.idleTimeoutMs, (errno, bytes) =>
        resolve({ errno, bytes }),
      );
    } catch {
      // dup() or thread creation failed (e.g. EMFILE): nothing was sent yet.
      resolve({ errno: -1, bytes: 0 });
    }
  });
  if (handle === undefined) {
    await result;
    return streamInstead(res, request);
  }
  stats.started++;
  // Node closed its descriptor (client gone, destroy, closeAllConnections):
  // the addon's duplicate would keep the connection open, so stop it now.
  const cancel = () => addon.cancel(handle);
  socket.once("close", cancel);
  const { errno, bytes } = await result;
  socket.off("close", cancel);
  stats.bytes += bytes;
  if (errno === 0) {
    stats.completed++;
    if (!socket.destroyed) res.end();
    return { ok: true, bytes, native: true };
  }
  stats.failed++;
  res.destroy();
  const code = errnoCode(errno);
  const clientGone = code === "EPIPE" || code === "ECONNRESET" || code === "ECANCELED";
  const error = codedError(code, code === "EIO" ? "the file is shorter than the range sent" : `sendfile failed after ${bytes} bytes`);
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
async function streamInstead(res: ServerResponse, request: SendFileRequest): Promise<SendFileOutcome> {
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
