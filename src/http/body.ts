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
import { RegistryError, type ErrorCode } from "../oci/errors.js";
import { bodyBytesReceived } from "../memory/body-collections.js";

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

export class GuardedBody extends Readable {
  private failure: Error | null = null;
  private delivering = false;

  constructor(private readonly req: IncomingMessage) {
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
  }

  /** The failure this body ended (or will end) with, if any. */
  get failed(): Error | null {
    return this.failure;
  }

  /** Ends the body with `error` for its consumer: now if one is reading, else when one starts. */
  fail(error: Error): void {
    if (this.failure || this.readableEnded || this.destroyed) return;
    this.failure = error;
    this.detach();
    if (this.hasConsumer()) this.deliver();
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
