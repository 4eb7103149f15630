/** Writing responses: JSON bodies, spec-format errors, and headers every response carries. */
import type { ServerResponse } from "node:http";
import { RegistryError, isRegistryError } from "../oci/errors.js";

export const API_VERSION_HEADER = { "Docker-Distribution-API-Version": "registry/2.0" } as const;

export type Headers = Record<string, string | number | string[]>;

const CLIENT_ABORT_CODES = new Set(["ERR_STREAM_PREMATURE_CLOSE", "ECONNRESET", "EPIPE", "ECONNABORTED"]);

/** The error a stream raises when the other end of the connection went away. */
export function isClientAbort(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException)?.code;
  return code !== undefined && CLIENT_ABORT_CODES.has(code);
}

export function send(res: ServerResponse, status: number, headers: Headers, body?: Buffer | string): void {
  if (res.headersSent || res.destroyed) return;
  const length = body === undefined ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.length;
  res.writeHead(status, safeHeaders({ ...API_VERSION_HEADER, "Content-Length": length, ...headers }));
  res.end(body);
}

/**
 * Sends headers that are already complete (API version, Content-Length) and
 * header-safe, e.g. built once and reused; the body must match Content-Length
 * (HEAD: no body).
 */
export function sendPrepared(res: ServerResponse, status: number, headers: Headers, body?: Buffer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, headers);
  res.end(body);
}

/** Characters Node refuses in a header value (it would throw, turning a committed success into a 500). */
const UNSAFE_HEADER_CHARS = /[^\t\x20-\x7e\x80-\xff]/u;

/**
 * Header values that came from data (URLs in manifests, names) made safe to
 * send: characters Node would refuse are percent-encoded as UTF-8. Values
 * that are already valid pass unchanged.
 */
export function safeHeaders(headers: Headers): Headers {
  let out: Headers | null = null;
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value === "number") continue;
    const values = Array.isArray(value) ? value : [value];
    if (!values.some((v) => UNSAFE_HEADER_CHARS.test(v))) continue;
    out ??= { ...headers };
    out[name] = Array.isArray(value) ? value.map(encodeUnsafe) : encodeUnsafe(value);
  }
  return out ?? headers;
}

function encodeUnsafe(value: string): string {
  return value.replace(/[^\t\x20-\x7e\x80-\xff]/gu, (char) => percentEncode(char));
}

/** Visible ASCII only: anything else (controls, non-ASCII) percent-encoded as UTF-8. */
export function asciiHeaderText(text: string): string {
  return text.replace(/[^\x20-\x7e]/gu, (char) => percentEncode(char));
}

function percentEncode(char: string): string {
  return [...Buffer.from(char, "utf8")].map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, "0")}`).join("");
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Headers = {}, headOnly = false): void {
  const body = JSON.stringify(value);
  if (headOnly) {
    send(res, status, { "Content-Type": "application/json", ...headers, "Content-Length": Buffer.byteLength(body) });
    return;
  }
  send(res, status, { "Content-Type": "application/json", ...headers }, body);
}

/**
 * Renders any error in the distribution-spec format. Errors that are not
 * RegistryErrors are our faults: the client gets a generic 500 with a request
 * id, never a message, path or stack.
 */
export function sendError(res: ServerResponse, error: unknown, headOnly: boolean, requestId: string): RegistryError {
  const registryError = isRegistryError(error)
    ? error
    : new RegistryError("UNKNOWN", `internal error; the registry log has the details under request id ${requestId}`, {
        detail: { requestId },
      });
  if (res.headersSent) {
    // Mid-stream failure: the only honest signal left is to cut the connection.
    res.destroy();
    return registryError;
  }
  sendJson(res, registryError.status, registryError.toBody(), registryError.headers, headOnly);
  return registryError;
}
