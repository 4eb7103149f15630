/**
 * A connection whose reading this process took from Node's HTTP parser for
 * the rest of one request body (src/http/body.ts, GuardedBody.takeOver), so
 * the native addon can receive the body straight into storage's memory.
 *
 * The connection is never given back to the parser once a byte was read
 * natively: the parser still counts the body's bytes, so what followed would
 * be misread (as body, or as a request). Instead the response closes the
 * connection and a native discard reads whatever the client still sends
 * until it closes (a lingering close: a client still sending reads our
 * answer rather than a reset), for at most LINGER_MS after Node closed its
 * side.
 *
 * Each receive or discard holds threads of the addon's (one; three for a
 * body received into a file) and a duplicate of the descriptor; at most
 * MAX_TAKEN connections per serving thread are taken at once (the rest
 * stream as before), which bounds those threads.
 */
import type { Socket } from "node:net";
import { startDiscard, type NativeJob, type NativeReceive } from "../native/addon.js";

/** Connections taken at once per serving thread; past that, bodies stream through the parser. */
export const MAX_TAKEN = 16;
/** How long the discard may outlive Node's side of the connection (as the dispatcher's linger). */
const LINGER_MS = 2000;
/** What a lingering close reads past the body at most: a pipelined request, stray line ends. */
const LINGER_EXTRA_BYTES = 1024 * 1024;

let taken = 0;

/** Node's HTTP server's flag on a connection whose reading it paused, and the libuv handle. */
export type ParsedSocket = Socket & {
  _paused?: boolean;
  parser?: { resume?: () => void } | null;
  encrypted?: boolean;
  _handle?: { fd?: number; reading?: boolean; readStart?: () => number } | null;
};

/** The descriptor of a plain TCP connection Node's HTTP parser reads, undefined for anything else (TLS, a test's stream). */
export function plainSocketFd(socket: Socket): number | undefined {
  const parsed = socket as ParsedSocket;
  const fd = parsed._handle?.fd;
  return parsed.encrypted || !parsed.parser || typeof fd !== "number" || fd < 0 ? undefined : fd;
}

export class TakenConnection {
  private current: NativeJob<unknown> | null = null;
  private lingering: NativeReceive | null = null;
  private closed = false;
  private counted = true;
  private readonly restoreReadStart: () => void;

  /**
   * Stops Node reading `socket`, or returns null (nothing changed) when it
   * cannot: too many taken, Node paused it itself (responses backed up), no handle.
   */
  static take(socket: Socket): TakenConnection | null {
    const parsed = socket as ParsedSocket;
    const handle = parsed._handle;
    const fd = plainSocketFd(socket);
    if (taken >= MAX_TAKEN || parsed._paused || !handle || fd === undefined || socket.destroyed) return null;
    return new TakenConnection(parsed, handle, fd);
  }

  private constructor(
    private readonly socket: ParsedSocket,
    private readonly handle: NonNullable<ParsedSocket["_handle"]>,
    private readonly fd: number,
  ) {
    taken++;
    // Node's own way to stop reading a connection its HTTP parser consumes (as for pipelined
    // requests): its readStart is a no-op while `_paused`, whoever resumes the request.
    socket._paused = true;
    socket.pause();
    // And below that, at the handle: Node un-pauses `_paused` sockets itself when earlier responses
    // drain, and a read by Node now would take body bytes from under the native receive.
    const readStart = handle.readStart;
    handle.readStart = () => 0;
    this.restoreReadStart = () => {
      delete handle.readStart;
      if (handle.readStart !== readStart) handle.readStart = readStart;
    };
    socket.once("close", this.onClose);
  }

  /** Gives the connection back to Node as it was: only before anything was read natively. */
  giveBack(): void {
    this.restoreReadStart();
    this.socket._paused = false;
    if (!this.socket.destroyed) {
      // As Node's socketOnDrain does: a parse that ran while `_paused` was set paused the parser too.
      this.socket.parser?.resume?.();
      // As Node's onSocketResume would: resume() alone does nothing if the stream already flows.
      this.handle.reading = true;
      this.handle.readStart?.();
      this.socket.resume();
    }
    this.socket.off("close", this.onClose);
    this.uncount();
  }

  /**
   * Runs one native receive on the connection (`start` is given the
   * descriptor: startReceive, startReceiveFile) and resolves with its
   * result, or with `gone` when the connection is no longer Node's to lend.
   * Throws only when no receive could be started.
   */
  async receive<T>(start: (fd: number) => NativeJob<T>, gone: T): Promise<T> {
    if (this.current) throw new Error("one receive at a time");
    // The descriptor number is only ours while Node's socket is open: past that it may be reused.
    if (!this.usable()) return gone;
    const job = start(this.fd);
    this.current = job;
    try {
      return await job.done;
    } finally {
      this.current = null;
      // Node may have closed the connection meanwhile (its close waited for this receive to count it back).
      this.settle();
    }
  }

  /** Ends a receive in flight (it resolves with ECANCELED). */
  cancel(): void {
    this.current?.cancel();
  }

  /**
   * Once no receive runs, reads and throws away what the client still sends
   * (up to `bodyLeft` more body bytes and a little past them) until it
   * closes, goes quiet for `idleMs`, or LINGER_MS after Node closed its side.
   */
  linger(bodyLeft: number, idleMs: number): void {
    this.cancel();
    void (async () => {
      await this.current?.done;
      if (this.lingering || !this.usable()) return this.settle();
      try {
        this.lingering = startDiscard(this.fd, bodyLeft + LINGER_EXTRA_BYTES, idleMs);
      } catch {
        return this.settle(); // no thread or descriptor to spare: Node's close may then reset the connection
      }
      if (this.closed) this.startDeadline();
      await this.lingering.done;
      this.lingering = null;
      this.settle();
    })();
  }

  private usable(): boolean {
    return !this.closed && !this.socket.destroyed && this.socket._handle === this.handle;
  }

  private readonly onClose = (): void => {
    this.closed = true;
    this.cancel();
    if (this.lingering) this.startDeadline();
    this.settle();
  };

  private startDeadline(): void {
    const lingering = this.lingering;
    const deadline = setTimeout(() => lingering?.cancel(), LINGER_MS);
    deadline.unref();
    void lingering?.done.then(() => clearTimeout(deadline));
  }

  /** Stops counting this connection once nothing native runs on it and Node is done with it. */
  private settle(): void {
    if (this.closed && !this.current && !this.lingering) this.uncount();
  }

  private uncount(): void {
    if (!this.counted) return;
    this.counted = false;
    taken--;
  }
}
