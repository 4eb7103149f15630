/** Reading requests: bounded bodies, query parameters, Content-Range and Range headers. */
import type { IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import { RegistryError } from "../oci/errors.js";
import type { ByteRange } from "../storage/blob-store.js";

/**
 * Reads a small body (manifests) whole, refusing more than `limit` bytes with 413.
 * `body` is the request's guarded body (RequestContext.body), which ends or errors.
 */
export async function readBody(req: IncomingMessage, body: Readable, limit: number, what: string): Promise<Buffer> {
  const declared = contentLength(req);
  if (declared !== null && declared > limit) throw tooLarge(what, limit);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += (chunk as Buffer).length;
    if (total > limit) throw tooLarge(what, limit);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

function tooLarge(what: string, limit: number): RegistryError {
  return new RegistryError("SIZE_INVALID", `${what} is larger than this registry's limit of ${limit} bytes`, {
    status: 413,
    detail: { limit },
  });
}

export function contentLength(req: IncomingMessage): number | null {
  const raw = req.headers["content-length"];
  if (raw === undefined) return null;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RegistryError("BLOB_UPLOAD_INVALID", "Content-Length is not a valid number", { status: 400 });
  }
  return value;
}

/** Whether the request carries a body at all (a length above zero, or chunked encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  if (length !== undefined) return Number(length) > 0;
  return req.headers["transfer-encoding"] !== undefined;
}

/**
 * PATCH/PUT Content-Range: the spec writes `<start>-<end>` (inclusive);
 * some clients prefix `bytes ` or `bytes=`. Null when absent.
 */
export function parseContentRange(value: string | undefined): { start: number; end: number } | null {
  if (value === undefined || value === "") return null;
  const match = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(value.trim());
  if (!match) {
    throw new RegistryError("BLOB_UPLOAD_INVALID", `Content-Range "${value.slice(0, 60)}" is not of the form <start>-<end>`, {
      status: 416,
    });
  }
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new RegistryError("BLOB_UPLOAD_INVALID", `Content-Range "${value.slice(0, 60)}" has its end before its start`, { status: 416 });
  }
  return { start, end };
}

export type RangeRequest = { kind: "none" } | { kind: "range"; range: ByteRange } | { kind: "unsatisfiable" };

/**
 * A single `Range: bytes=` request (RFC 9110 §14). Syntax we do not serve
 * (several ranges, other units) is ignored and the whole blob sent, as the
 * RFC allows; a range past the end is unsatisfiable (416).
 */
export function parseRange(value: string | undefined, size: number): RangeRequest {
  if (value === undefined) return { kind: "none" };
  const match = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!match || (match[1] === "" && match[2] === "")) return { kind: "none" };
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "range", range: { start: Math.max(size - suffix, 0), end: size - 1 } };
  }
  const start = Number(match[1]);
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return { kind: "unsatisfiable" };
  return { kind: "range", range: { start, end } };
}

/** Pagination `n`: a non-negative integer, clamped to `max`. */
export function parseLimit(value: string | null, fallback: number, max: number): number {
  if (value === null) return fallback;
  if (!/^\d+$/.test(value)) {
    // The spec's code list has nothing closer; the detail says which parameter.
    throw new RegistryError("UNSUPPORTED", `n must be a non-negative integer, got "${value.slice(0, 20)}"`, {
      status: 400,
      detail: { n: value.slice(0, 20) },
    });
  }
  return Math.min(Number(value), max);
}
