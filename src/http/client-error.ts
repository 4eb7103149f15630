/**
 * Requests Node's parser rejects before any handler sees them (malformed
 * framing, headers too large, headers too slow): answered in the spec's error
 * format instead of Node's bare `400 Bad Request`, then the connection closed.
 */
import type { Socket } from "node:net";
import type { IncomingMessage, ServerResponse } from "node:http";
import { API_VERSION_HEADER, sendError } from "./respond.js";
import { RegistryError } from "../oci/errors.js";

/** How long a rejected connection stays half-open so the client can read the answer before we close it. */
const LINGER_MS = 2000;

interface ParserFailure {
  status: number;
  reason: string;
  message: string;
}

function describe(error: NodeJS.ErrnoException): ParserFailure | null {
  switch (error.code) {
    case "ECONNRESET":
    case "EPIPE":
      return null; // the client is gone; nobody to answer
    case "HPE_HEADER_OVERFLOW":
      return { status: 431, reason: "Request Header Fields Too Large", message: "the request's headers are larger than this registry accepts" };
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return { status: 408, reason: "Request Timeout", message: "the request's headers did not arrive in time" };
    default:
      return { status: 400, reason: "Bad Request", message: "the request is not valid HTTP/1.1 (malformed framing or headers)" };
  }
}

/** A complete error response written straight to the socket (no request object exists), then the connection closed. */
function endWithError(socket: Socket, failure: ParserFailure): void {
  // The spec's error body; UNSUPPORTED is its closest code for a request we cannot serve.
  const body = JSON.stringify({ errors: [{ code: "UNSUPPORTED", message: failure.message }] });
  const head = [
    `HTTP/1.1 ${failure.status} ${failure.reason}`,
    `Docker-Distribution-API-Version: ${API_VERSION_HEADER["Docker-Distribution-API-Version"]}`,
    "Content-Type: application/json",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "Connection: close",
  ];
  socket.end(`${head.join("\r\n")}\r\n\r\n${body}`);
  const linger = setTimeout(() => socket.destroy(), LINGER_MS);
  linger.unref();
  socket.once("close", () => clearTimeout(linger));
}

/** An Expect other than 100-continue (RFC 9110 §10.1.1): 417 in the spec's format instead of Node's empty one. */
export function refuseExpectation(req: IncomingMessage, res: ServerResponse): void {
  sendError(res, new RegistryError("UNSUPPORTED", "only `Expect: 100-continue` is supported", { status: 417 }), req.method === "HEAD", "");
}

/** CONNECT (Node hands it to a 'connect' listener, or drops the socket without one): a registry is no proxy. */
export function refuseConnect(_req: unknown, socket: Socket): void {
  endWithError(socket, { status: 405, reason: "Method Not Allowed", message: "CONNECT is not supported: this is a registry, not a proxy" });
}

export function handleClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  const failure = describe(error);
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent: boolean } | null })._httpMessage;
  if (failure && socket.writable && (!inFlight || !inFlight.headersSent)) {
    endWithError(socket, failure);
    return;
  } else if (socket.writable && inFlight?.headersSent) {
    // Our answer is on its way (e.g. the 400 for a bad Transfer-Encoding): let it leave before closing.
    socket.end();
  } else {
    socket.destroy();
    return;
  }
  const linger = setTimeout(() => socket.destroy(), LINGER_MS);
  linger.unref();
  socket.once("close", () => clearTimeout(linger));
}
