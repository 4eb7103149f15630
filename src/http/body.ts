/**
 * Request bodies that always finish. Storage reads an upload inside the
 * session's lock, so a body that neither ends nor errors holds the lock, a
 * file and the socket forever. Two things here make sure every body ends:
 *
 * - `GuardedBody` is what handlers read instead of the request. It listens to
 *   the request from dispatch on, and remembers an early failure (the client
 *   hung up while authentication ran, the idle timeout fired before anyone
 *   read) and raises it when the consumer first reads. A plain request that
 *   closed before `pipe()` was called would never emit anything again.
 * - `watchBody` cuts off a body that sends no byte for `idleMs` while the
 *   registry is waiting for one (nginx's client_body_timeout). Time spent with
 *   the socket paused by our own backpressure does not count.
 */
import { Readable } from "node:stream";
import type { IncomingMessage } from "node:http";
import { constants as osConstants } from "node:os";
import { RegistryError, type ErrorCode } from "../oci/errors.js";
import { bodyBytesReceived } from "../memory/body-collections.js";
import { nativeFileReceiveAvailable, nativeReceiveAvailable, startReceive, startReceiveFile, type FileSink, type FileSinkResult, type NativeJob } from "../native/addon.js";
import { contentLength } from "./request.js";
import { TakenConnection, plainSocketFd } from "./taken-connection.js";
import { offerHandoff, type BodyHandoff } from "../storage/body-handoff.js";

/** Raised on a body that went quiet; the dispatcher answers it with 408. */
export function bodyIdleError(idleMs: number, code: ErrorCode): RegistryError {
  return new RegistryError(code, `the request body stopped arriving: no data for ${idleMs / 1000} s; send it again`, {
    status: 408,
    detail: { idleTimeoutMs: idleMs },
    headers: { Connection: "close" },
  });
}

/** The error a body ends with when its connection is gone (the dispatcher treats it as the client leaving). */
export function clientClosed(): Error {
  return Object.assign(new Error("the client closed the connection before the request body ended"), { code: "ECONNRESET" });
}

/** See GuardedBody.deliver. */
const FAILURE_DELIVERY_DELAY_MS = 250;

/** What a body needs to offer its bytes to storage directly (src/storage/body-handoff.ts). */
export interface HandoffOptions {
  /** The idle timeout, which the native receive enforces while Node does not read the socket. */
  idleMs: number;
  /** What a body that went quiet fails with. */
  idleError: () => Error;
  /** Called when the body is handed over: the response must close the connection, as Node's parser never saw the rest. */
  onTaken: () => void;
}

/**
 * Bodies smaller than this always stream: handing over costs threads of the
 * addon's (three for a body received into a file) and a new connection for
 * the client's next request.
 */
export const HANDOFF_MIN_BYTES = 4 * 1024 * 1024;

export class GuardedBody extends Readable {
  private failure: Error | null = null;
  private delivering = false;
  /** Body bytes this stream took from the request. */
  private received = 0;
  /** Set once the body was handed over (see HandoffState). */
  private handoff: HandoffState | null = null;

  constructor(
    private readonly req: IncomingMessage,
    private readonly handoffOptions?: HandoffOptions,
  ) {
    super({ highWaterMark: 64 * 1024 });
    // Consumers get the error through their own listeners or pipeline; one that already
    // stopped listening must not turn a client's hang-up into an uncaught exception.
    this.on("error", () => undefined);
    // A consumer arriving after the failure (pipe() adds "data", async iteration "readable") gets it then.
    this.on("newListener", (event: string | symbol) => {
      if (this.failure && (event === "data" || event === "readable")) this.deliver();
    });
    if (req.complete && req.readableEnded) {
      this.push(null);
      return;
    }
    req.on("data", this.onData);
    req.once("end", this.onEnd);
    req.once("error", this.onClose);
    req.once("close", this.onClose);
    // Closed before we got here (nothing emits again): remember it now.
    if (req.destroyed && !req.complete) this.fail(clientClosed());
    if (handoffOptions && declaredLength(req) >= HANDOFF_MIN_BYTES && plainSocketFd(req.socket) !== undefined && nativeReceiveAvailable()) {
      offerHandoff(this, { takeOver: (expectedBytes) => this.takeOver(expectedBytes, handoffOptions) });
    }
  }

  /** Whether every byte of the body arrived: through Node's parser, or handed over. */
  get whole(): boolean {
    return this.req.complete || this.handoff?.whole === true;
  }

  /** The failure this body ended (or will end) with, if any. */
  get failed(): Error | null {
    return this.failure;
  }

  /** Ends the body with `error` for its consumer: now if one is reading, else when one starts. */
  fail(error: Error): void {
    if (this.failure || this.readableEnded || this.destroyed || this.handoff?.whole) return;
    this.failure = error;
    this.handoff?.stop(error);
    this.detach();
    if (this.hasConsumer()) this.deliver();
  }

  /** A handed-over receive could not start (no descriptor or thread to spare): our limit, not the client's fault. */
  private busy(): RegistryError {
    const busy = new RegistryError("UNAVAILABLE", "the registry could not take this upload's body right now; retry later", { status: 503 });
    this.fail(busy);
    return busy;
  }

  /**
   * Reads and discards whatever of the body still arrives (the answer went
   * out before it ended): the client then reads the answer rather than a reset.
   */
  discardRest(): void {
    if (this.handoff) this.handoff.release();
    else this.req.resume();
  }

  /** Stops reading the request. */
  detach(): void {
    this.req.off("data", this.onData);
    this.req.off("end", this.onEnd);
    this.req.off("error", this.onClose);
    this.req.off("close", this.onClose);
  }

  override _read(): void {
    if (this.failure) {
      if (this.hasConsumer()) this.deliver();
      return;
    }
    this.req.resume();
  }

  private hasConsumer(): boolean {
    return this.listenerCount("data") > 0 || this.listenerCount("readable") > 0;
  }

  /**
   * Raises the failure a moment later, not at once: a consumer that pipes us
   * into a stream of its own may attach its error listener to that stream only
   * after an await (opening the session file), and an error emitted before
   * then would be uncaught and take the process down.
   */
  private deliver(): void {
    if (this.delivering) return;
    this.delivering = true;
    setTimeout(() => {
      if (!this.destroyed) this.destroy(this.failure ?? clientClosed());
    }, FAILURE_DELIVERY_DELAY_MS);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.received += chunk.length;
    bodyBytesReceived(chunk.length);
    if (!this.push(chunk)) this.req.pause();
  };

  private readonly onEnd = (): void => {
    this.detach();
    this.push(null);
  };

  private readonly onClose = (error?: Error): void => {
    if (this.req.complete) return;
    this.fail(error instanceof Error ? error : clientClosed());
  };

  /**
   * Stops Node reading the connection and hands the rest of the body to the
   * caller (BodyHandoffOffer.takeOver). The bytes Node already parsed still
   * come through this stream; the rest are received natively, exactly as
   * many as the body has. What the client sends after them is never parsed:
   * it is read and dropped (TakenConnection.linger) until the connection,
   * which the response closes, is gone.
   */
  private async takeOver(expectedBytes: number, options: HandoffOptions): Promise<BodyHandoff | null> {
    const req = this.req;
    const total = declaredLength(req);
    if (this.handoff || this.failure || total !== expectedBytes || req.complete || req.destroyed) return null;
    const connection = TakenConnection.take(req.socket);
    if (!connection) return null;
    // A parse running now (we may be called from inside one) still delivers the rest of its read buffer.
    await new Promise<void>((resolveTurn) => setImmediate(resolveTurn));
    const parsed = this.received + req.readableLength;
    if (this.failure || req.complete || req.destroyed || parsed >= total) {
      connection.giveBack();
      return null;
    }
    options.onTaken();
    let left = total - parsed;
    let stopped: Error | null = null;
    const stop = (reason: Error): void => {
      stopped ??= reason;
      connection.cancel();
    };
    const state: HandoffState = (this.handoff = {
      whole: false,
      stop,
      release: () => {
        stop(clientClosed());
        connection.linger(left, options.idleMs);
      },
    });
    /**
     * Runs one native receive of `length` of the bytes left. The body fails as a
     * stream's would when the connection or the idle timeout ends it; a write
     * the file refused fails only the receive (the caller reports it).
     */
    const run = async <T>(length: number, start: (fd: number) => NativeJob<T>, errnoOf: (result: T) => number, diskError: (result: T) => Error | null, gone: T): Promise<T> => {
      if (length <= 0 || length > left) throw new RangeError(`receive ${length} of ${left} bytes left`);
      if (stopped) throw stopped;
      let result: T;
      try {
        result = await connection.receive(start, gone);
      } catch (error) {
        // A refused argument is our bug: not something to retry.
        if (error instanceof TypeError) throw error;
        // No descriptor or thread to spare right now: our limit, not the client's fault.
        throw this.busy();
      }
      const errno = errnoOf(result);
      if (errno === 0 && !stopped) {
        left -= length;
        if (left === 0) {
          state.whole = true;
          this.detach();
          this.push(null);
          // Whatever the client sends after the body is read and dropped until it closes.
          connection.linger(0, options.idleMs);
        }
        return result;
      }
      const disk = diskError(result);
      if (disk && !stopped) throw disk;
      if (errno === osConstants.errno.EAGAIN && !stopped) throw this.busy();
      const error = stopped ?? (errno === osConstants.errno.ETIMEDOUT ? options.idleError() : clientClosed());
      this.fail(error);
      throw error;
    };
    const ECANCELED = osConstants.errno.ECANCELED;
    return {
      streamed: parsed,
      remaining: left,
      receive: async (target, offset, length) => {
        await run(length, (fd) => startReceive(fd, target, offset, length, options.idleMs), (errno) => errno, () => null, ECANCELED);
      },
      ...(nativeFileReceiveAvailable() && {
        receiveToFile: (sink: FileSink) => {
          const gone: FileSinkResult = { errno: ECANCELED, diskFailed: false, received: 0, direct: 0, buffered: 0 };
          return run(left, (fd) => startReceiveFile(fd, sink, left, options.idleMs), (result) => result.errno, fileError, gone);
        },
      }),
      abort: stop,
    };
  }
}

/** The error a receive into a file ended with when a write failed (ENOSPC, EIO...), as fs reports one; null otherwise. */
function fileError(result: FileSinkResult): Error | null {
  if (!result.diskFailed) return null;
  const code = Object.entries(osConstants.errno).find(([, value]) => value === result.errno)?.[0] ?? "EIO";
  return Object.assign(new Error(`${code}: writing the upload failed`), { code, errno: -result.errno, syscall: "write" });
}

/**
 * The Content-Length of a request, -1 when it has none (chunked: framingError refused
 * both together before dispatch) or one contentLength refuses (the handler reports that).
 */
function declaredLength(req: IncomingMessage): number {
  try {
    return contentLength(req) ?? -1;
  } catch {
    return -1;
  }
}

interface HandoffState {
  /** Every byte of the body is in. */
  whole: boolean;
  /** Ends a receive in flight with `reason`, and refuses further ones. */
  stop: (reason: Error) => void;
  /** Stops receiving; the rest of what the client sends is read and dropped until it closes. */
  release: () => void;
}

export interface BodyWatch {
  stop(): void;
}

/**
 * Calls `onIdle` once when the request's socket has received no byte for
 * `idleMs` while the body is incomplete and the socket is not paused by us.
 * Polls the socket's byte counter, so body chunks cost nothing.
 */
export function watchBody(req: IncomingMessage, idleMs: number, onIdle: () => void): BodyWatch {
  const socket = req.socket;
  let lastBytes = socket.bytesRead;
  let lastActivity = Date.now();
  const step = Math.max(Math.floor(idleMs / 4), 10);
  const timer = setInterval(() => {
    if (req.complete || socket.destroyed) return stop();
    const now = Date.now();
    if (socket.bytesRead !== lastBytes || socket.isPaused() || req.isPaused()) {
      // Bytes arrived, or we stopped reading ourselves: the client is not the one holding things up.
      lastBytes = socket.bytesRead;
      lastActivity = now;
      return;
    }
    if (now - lastActivity >= idleMs) {
      stop();
      onIdle();
    }
  }, step);
  timer.unref();
  const stop = () => clearInterval(timer);
  return { stop };
}
