/**
 * A blob GET from a plain-HTTP object store whose bytes go to the client
 * through a few reused buffers instead of a fresh Buffer per socket read.
 *
 * Why: streamed through Node's HTTP client, every socket read of the S3
 * response allocates a new buffer; those count as external memory and drove
 * ~40 full garbage collections per 600 MiB pulled, the largest item in the
 * pull profile. Here one raw HTTP/1.1 GET on a presigned URL reads (socket
 * `onread`) into buffers from a small per-transfer ring; each buffer is read
 * into again only after the client's socket has taken its bytes, and the
 * store's socket is paused while every buffer is still being written.
 *
 * Anything the response does not say plainly (status, Content-Length equal to
 * what was asked) fails the open, before the client is answered; a store that
 * stops mid-body fails the transfer, never ends the blob short.
 */
import net from "node:net";
import type { Writable } from "node:stream";
import { ClientGoneError, type DirectBody } from "./blob-store.js";

/** Per transfer: RING buffers of BUFFER_BYTES, so at most 1 MiB per pull. */
const BUFFER_BYTES = 256 * 1024;
const RING = 4;
const HEADER_LIMIT = 16 * 1024;

/** Idle buffers kept for the next transfers (16 MiB at most). */
const idle: Buffer[] = [];
const KEEP_IDLE = 64;

function takeBuffer(): Buffer {
  return idle.pop() ?? Buffer.allocUnsafeSlow(BUFFER_BYTES);
}

function giveBuffer(buffer: Buffer): void {
  if (idle.length < KEEP_IDLE) idle.push(buffer);
}

export class DirectGetError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/**
 * Opens `url` (http: only) and resolves once the store's response headers say the
 * body is `length` bytes with status 200 (or 206 for `range`). Rejects with a
 * DirectGetError carrying the store's status otherwise.
 */
export function openDirectGet(url: string, range: { start: number; end: number } | undefined, length: number, timeoutMs: number): Promise<DirectBody> {
  const target = new URL(url);
  if (target.protocol !== "http:") return Promise.reject(new DirectGetError("direct reads need http:"));
  const ring = Array.from({ length: RING }, takeBuffer);
  const busy = new Set<Buffer>();
  let next = 0;
  let header: Buffer | null = Buffer.alloc(0);
  let early: Buffer | null = null; // body bytes that arrived with the headers
  let out: Writable | null = null;
  let sent = 0; // bytes handed to out
  let written = 0; // bytes out has taken
  let settled = false;
  let released = false;
  let paused = false;
  let onOpen: { resolve: (body: DirectBody) => void; reject: (error: Error) => void };
  let onSent: { resolve: () => void; reject: (error: Error) => void } | null = null;

  const freeBuffer = (): Buffer => {
    for (let i = 0; i < RING; i++) {
      const candidate = ring[(next + i) % RING]!;
      if (!busy.has(candidate)) {
        next = (next + i + 1) % RING;
        return candidate;
      }
    }
    // Unreachable: the socket is paused before the last free buffer is handed out.
    throw new Error("no free read buffer");
  };

  const release = () => {
    if (released || busy.size > 0) return;
    released = true;
    for (const buffer of ring) giveBuffer(buffer);
  };

  let failure: Error | null = null;
  const fail = (error: Error) => {
    failure ??= error;
    if (!socket.destroyed) socket.destroy();
    if (!settled) {
      settled = true;
      onOpen.reject(error);
    } else if (onSent) {
      const { reject } = onSent;
      onSent = null;
      reject(error);
    }
    release();
  };

  const finishIfDone = () => {
    if (onSent && written === length) {
      const { resolve } = onSent;
      onSent = null;
      socket.destroy();
      release();
      resolve();
    }
  };

  const write = (bytes: Buffer, owned: Buffer | null) => {
    if (owned) busy.add(owned);
    sent += bytes.length;
    out!.write(bytes, (error?: Error | null) => {
      if (owned) busy.delete(owned);
      if (error) return fail(new ClientGoneError(error.message));
      written += bytes.length;
      if (paused && busy.size < RING - 1 && !socket.destroyed) {
        paused = false;
        socket.resume();
      }
      finishIfDone();
      if (socket.destroyed) release();
    });
  };

  const onHeaders = (head: string, rest: Buffer) => {
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
    const contentLength = /\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1];
    const expected = range ? 206 : 200;
    if (status !== expected) return fail(new DirectGetError(`the object store answered HTTP ${status}`, status));
    if (/\r\ntransfer-encoding:/i.test(head) || contentLength === undefined || Number(contentLength) !== length) {
      return fail(new DirectGetError(`the object store announced ${contentLength ?? "no"} bytes, ${length} expected`));
    }
    if (rest.length > length) return fail(new DirectGetError("the object store sent more than it announced"));
    early = rest.length > 0 ? Buffer.from(rest) : null;
    settled = true;
    paused = true;
    socket.pause();
    onOpen.resolve({
      sendTo(destination) {
        out = destination;
        // The store failed between answering and this call: nothing to send.
        if (failure) return Promise.reject(failure);
        return new Promise<void>((resolve, reject) => {
          onSent = { resolve, reject };
          destination.once("close", () => {
            if (written < length) fail(new ClientGoneError("the client went away"));
          });
          if (early) write(early, null);
          early = null;
          if (sent === length) return finishIfDone();
          paused = false;
          socket.resume();
        });
      },
      abort() {
        socket.destroy();
        release();
      },
    });
  };

  const socket = net.connect({
    host: target.hostname.replace(/^\[|\]$/g, ""),
    port: Number(target.port || 80),
    onread: {
      buffer: () => freeBuffer(),
      callback: (n: number, buffer: Uint8Array): boolean => {
        const chunk = Buffer.from(buffer.buffer, buffer.byteOffset, n);
        if (header !== null) {
          // Headers are small and arrive once: copying them is cheap.
          header = Buffer.concat([header, chunk]);
          const end = header.indexOf("\r\n\r\n");
          if (end < 0) {
            if (header.length > HEADER_LIMIT) fail(new DirectGetError("the object store's response headers are too long"));
            return true;
          }
          const head = header.subarray(0, end).toString("latin1");
          const rest = header.subarray(end + 4);
          header = null;
          onHeaders(head, rest);
          return false;
        }
        if (sent + n > length) {
          fail(new DirectGetError("the object store sent more than it announced"));
          return false;
        }
        // The ring buffer that was read into: the one whose memory holds these bytes.
        const owned = ring.find((candidate) => candidate.buffer === buffer.buffer && candidate.byteOffset === buffer.byteOffset) ?? null;
        write(owned ? chunk : Buffer.from(chunk), owned);
        if (busy.size >= RING - 1) {
          paused = true;
          return false;
        }
        return true;
      },
    },
  });
  socket.setNoDelay(true);
  socket.setTimeout(timeoutMs, () => fail(new DirectGetError("the object store stopped answering")));
  socket.on("error", (error) => fail(error));
  socket.on("end", () => {
    if (!settled || sent < length) fail(new DirectGetError(`the object store sent ${sent} of ${length} bytes`));
  });
  socket.on("connect", () => {
    const lines = [
      `GET ${target.pathname}${target.search} HTTP/1.1`,
      `Host: ${target.host}`,
      ...(range ? [`Range: bytes=${range.start}-${range.end}`] : []),
      "Connection: close",
      "",
      "",
    ];
    socket.write(lines.join("\r\n"));
  });
  return new Promise<DirectBody>((resolve, reject) => {
    onOpen = { resolve, reject };
  });
}
