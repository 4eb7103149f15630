/** Errors the client reports: what was asked, of whom, and what came back. */

export interface RemoteErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

export class ClientError extends Error {
  /** HTTP status when the failure was an HTTP answer. */
  readonly status?: number;
  /** The first distribution-spec error code in the body, when there was one. */
  readonly code?: string;
  readonly errors: RemoteErrorEntry[];
  /** True for failures worth retrying (network errors, 429, 502-504). */
  readonly transient: boolean;

  constructor(message: string, options: { status?: number; errors?: RemoteErrorEntry[]; transient?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ClientError";
    this.status = options.status;
    this.errors = options.errors ?? [];
    this.code = this.errors[0]?.code;
    this.transient = options.transient ?? false;
  }
}

/** A blob source that could not deliver the right bytes (unreachable, wrong size, wrong digest). */
export class SourceError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SourceError";
  }
}

const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
]);

export function isTransient(error: unknown): boolean {
  if (error instanceof ClientError) return error.transient;
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && TRANSIENT_CODES.has(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

export function isTransientStatus(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504 || status === 408;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const cause = (error as { cause?: unknown }).cause;
    if (error.message === "fetch failed" && cause instanceof Error) return errorMessage(cause);
    return typeof code === "string" && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}
