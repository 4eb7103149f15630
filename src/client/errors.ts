/** Errors the client reports: what was asked, of whom, and what came back. */

export interface RemoteErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

/** The request a failure belongs to, so the CLI can say who refused what (see explain.ts). */
export interface RequestInfo {
  /** host[:port] of the registry (or the token realm's host). */
  registry: string;
  method: string;
  url: string;
  /** The user whose credentials went with the request; undefined when anonymous. */
  user?: string;
  /** True for the token endpoint (a refused password shows up there first). */
  token?: boolean;
  /** Token scopes the request asked for (`repository:a/b:pull,push`): what it meant to do. */
  scopes?: string[];
  /** Set when the registry refused (401/403) a request carrying a Bearer token obtained for exactly these scopes. */
  tokenScopes?: string[];
}

export class ClientError extends Error {
  /** HTTP status when the failure was an HTTP answer. */
  readonly status?: number;
  readonly request?: RequestInfo;
  /** The first distribution-spec error code in the body, when there was one. */
  readonly code?: string;
  readonly errors: RemoteErrorEntry[];
  /** True for failures worth retrying (network errors, 429, 502-504). */
  readonly transient: boolean;

  constructor(message: string, options: { status?: number; errors?: RemoteErrorEntry[]; transient?: boolean; cause?: unknown; request?: RequestInfo } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ClientError";
    this.status = options.status;
    this.request = options.request;
    this.errors = options.errors ?? [];
    this.code = this.errors[0]?.code;
    this.transient = options.transient ?? false;
  }
}

/** The command line was wrong (a bad reference, transport, flag value): exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What was asked for does not exist (an image, a tag, a platform of an index): exit code 3. */
export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotFoundError";
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
