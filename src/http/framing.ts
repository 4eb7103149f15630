/**
 * Request framing checked before dispatch. Node's parser hands a request to
 * the server as soon as its headers are read, and only fails on the body
 * later: a request whose body it cannot frame would otherwise reach a handler
 * that starts storing it (RFC 9112 §6.1: a request whose Transfer-Encoding
 * does not end in `chunked` MUST get 400 and the connection closed). Ferry
 * supports no transfer coding but `chunked`, so exactly that is accepted.
 */
import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.js";

/** The reason a request cannot be served, or null. Answers carry `Connection: close`. */
export function framingError(req: IncomingMessage, maxHeaderCount: number): RegistryError | null {
  const count = req.rawHeaders.length / 2;
  if (count > maxHeaderCount) {
    return new RegistryError("UNSUPPORTED", `the request has ${count} header fields; this registry accepts at most ${maxHeaderCount}`, {
      status: 431,
      detail: { limit: maxHeaderCount },
      headers: { Connection: "close" },
    });
  }
  // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
  if (req.httpVersion === "1.1" && req.headers.host === undefined) return badFraming("an HTTP/1.1 request must carry a Host header");
  const te = req.headers["transfer-encoding"];
  if (te === undefined) return null;
  if (te.trim().toLowerCase() !== "chunked") {
    return badFraming(`Transfer-Encoding "${printable(te)}" is not supported; send the body with Content-Length or Transfer-Encoding: chunked`);
  }
  // Node's parser refuses both together too, but only after dispatch: refuse it here first.
  if (req.headers["content-length"] !== undefined) {
    return badFraming("a request must not carry both Transfer-Encoding and Content-Length");
  }
  return null;
}

function badFraming(message: string): RegistryError {
  return new RegistryError("UNSUPPORTED", message, { status: 400, headers: { Connection: "close" } });
}

function printable(text: string): string {
  return text.slice(0, 60).replace(/[^\x20-\x7e]/g, "?").replace(/"/g, "'");
}
