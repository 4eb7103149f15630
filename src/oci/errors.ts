/**
 * The distribution-spec error model: every failure that reaches a client is a
 * RegistryError with one of the spec's codes, an HTTP status, a message a
 * person can act on, and an optional machine-readable `detail`.
 *
 * Registry-specific facts go into `detail`, never into a new code
 * (distribution-spec 1.1, "Error Codes").
 */

export type ErrorCode =
  | "BLOB_UNKNOWN"
  | "BLOB_UPLOAD_INVALID"
  | "BLOB_UPLOAD_UNKNOWN"
  | "DIGEST_INVALID"
  | "MANIFEST_BLOB_UNKNOWN"
  | "MANIFEST_INVALID"
  | "MANIFEST_UNKNOWN"
  | "NAME_INVALID"
  | "NAME_UNKNOWN"
  | "SIZE_INVALID"
  | "UNAUTHORIZED"
  | "DENIED"
  | "UNSUPPORTED"
  | "TOOMANYREQUESTS"
  // Server-side failures only, never a client mistake: the spec lists no 5xx code.
  // UNKNOWN: our own fault (500). UNAVAILABLE: something we depend on failed: an upstream
  // (502/503) or our own storage being full (507).
  | "UNKNOWN"
  | "UNAVAILABLE";

const DEFAULT_STATUS: Record<ErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 415,
  TOOMANYREQUESTS: 429,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
};

export interface ErrorBodyEntry {
  code: ErrorCode;
  message: string;
  detail?: unknown;
}

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers (e.g. WWW-Authenticate, Range on 416). */
  readonly headers: Record<string, string>;
  /** Further entries for responses that report several problems at once. */
  readonly more: ErrorBodyEntry[];

  constructor(
    code: ErrorCode,
    message: string,
    options: { status?: number; detail?: unknown; headers?: Record<string, string>; more?: ErrorBodyEntry[] } = {},
  ) {
    super(message);
    this.name = "RegistryError";
    this.code = code;
    this.status = options.status ?? DEFAULT_STATUS[code];
    this.detail = options.detail;
    this.headers = options.headers ?? {};
    this.more = options.more ?? [];
  }

  entries(): ErrorBodyEntry[] {
    const first: ErrorBodyEntry = { code: this.code, message: this.message };
    if (this.detail !== undefined) first.detail = this.detail;
    return [first, ...this.more];
  }

  toBody(): { errors: ErrorBodyEntry[] } {
    return { errors: this.entries() };
  }
}

export function isRegistryError(value: unknown): value is RegistryError {
  return value instanceof RegistryError;
}
