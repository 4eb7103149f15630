/**
 * Turns a failure into what a person needs: what happened, in their terms,
 * and what to do next ("authentication required: run `ferry login HOST`"),
 * plus the exit code scripts can branch on (docs/client.md "Exit codes").
 * The registry's own words stay available on a second line, never as the
 * headline.
 */
import { ClientError, NotFoundError, UsageError, type RequestInfo } from "./errors.js";

export const EXIT = { ok: 0, failure: 1, usage: 2, notFound: 3, auth: 4 } as const;

export interface Explained {
  message: string;
  exitCode: number;
  /** The distribution-spec error code or network error code, when there was one. */
  code?: string;
}

/** What a request tried to do to a repository, from its method and path. */
function actionOf(request: RequestInfo): { action: string; repository?: string } {
  let path = "";
  try {
    path = new URL(request.url).pathname;
  } catch {
    path = request.url;
  }
  const match = /^\/v2\/(.+?)\/(manifests|blobs|tags|referrers)\//.exec(path);
  const repository = match?.[1];
  if (path === "/v2/_catalog") return { action: "list the repositories of" };
  if (path === "/v2/" || path === "/v2") return { action: "access" };
  // The scopes say what the request was for: a HEAD before an upload is part of a push.
  const actions = (request.scopes ?? []).flatMap((scope) => (scope.split(":")[2] ?? "").split(","));
  if (request.method === "DELETE" || (actions.includes("delete") && !actions.includes("push"))) return { action: "delete from", ...(repository ? { repository } : {}) };
  if (["PUT", "POST", "PATCH"].includes(request.method) || actions.includes("push")) return { action: "push to", ...(repository ? { repository } : {}) };
  return { action: "pull from", ...(repository ? { repository } : {}) };
}

function networkCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

const CERTIFICATE_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_UNTRUSTED",
]);

function registryDetail(error: ClientError): string {
  const first = error.errors[0];
  if (first) return `\n  the registry said: HTTP ${error.status} ${first.code}${first.message ? `: ${first.message}` : ""}`;
  return error.status ? `\n  the registry said: HTTP ${error.status}` : "";
}

function explainNetwork(error: ClientError, request: RequestInfo): Explained | undefined {
  const code = networkCode(error.cause);
  const message = (error.cause as Error | undefined)?.message ?? "";
  const host = request.registry;
  const https = request.url.startsWith("https:");
  if (https && (code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "ERR_SSL_PACKET_LENGTH_TOO_LONG" || /wrong version number|packet length too long|http request/i.test(message))) {
    return { message: `${host} answered plain HTTP to an HTTPS request: use --insecure if you trust this network`, exitCode: EXIT.failure, code };
  }
  if (https && code && CERTIFICATE_CODES.has(code)) {
    return {
      message: `the TLS certificate of ${host} is not trusted (${message}): pass its CA with --ca-file FILE, or use --tls-verify=false if you trust this network`,
      exitCode: EXIT.failure,
      code,
    };
  }
  if (code === "ECONNREFUSED") return { message: `cannot connect to ${host}: connection refused (is a registry listening on that host and port?)`, exitCode: EXIT.failure, code };
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return { message: `cannot resolve the host name of ${host}`, exitCode: EXIT.failure, code };
  if (!https && (code === "ECONNRESET" || /socket hang up/.test(message))) {
    return { message: `${host} closed the connection on a plain-HTTP request (if it speaks HTTPS, drop --insecure): ${message}`, exitCode: EXIT.failure, code };
  }
  if (code) return { message: `${request.method} ${request.url}: ${message}`, exitCode: EXIT.failure, code };
  return undefined;
}

function explainClientError(error: ClientError): Explained {
  const request = error.request;
  if (!request) return { message: error.message, exitCode: error.status === 404 ? EXIT.notFound : EXIT.failure, ...(error.code ? { code: error.code } : {}) };
  if (error.status === undefined) return explainNetwork(error, request) ?? { message: error.message, exitCode: EXIT.failure };
  const host = request.registry;
  const code = error.code;
  const codeField = code ? { code } : {};
  const { action, repository } = actionOf(request);
  const what = repository ? `${action} ${repository} on ${host}` : `${action} ${host}`;
  if (error.status === 401) {
    if (!request.user) {
      return { message: `authentication required to ${what}: run \`ferry login ${host}\` (or pass --creds USER:PASS)${registryDetail(error)}`, exitCode: EXIT.auth, ...codeField };
    }
    return {
      message: `${host} refused the password of user ${request.user} (changed or expired?): run \`ferry login ${host}\` again${registryDetail(error)}`,
      exitCode: EXIT.auth,
      ...codeField,
    };
  }
  if (error.status === 403) {
    const who = request.user ? `user ${request.user} may not` : `anonymous users may not`;
    const hint = request.user ? "" : `: run \`ferry login ${host}\``;
    return { message: `${who} ${what}${hint}${registryDetail(error)}`, exitCode: EXIT.auth, ...codeField };
  }
  if (error.status === 404) {
    if (code === "NAME_UNKNOWN") return { message: `repository ${repository ?? ""} not found on ${host}`.replace("  ", " "), exitCode: EXIT.notFound, code };
    if (code === "MANIFEST_UNKNOWN") return { message: `image not found: ${host}/${repository ?? ""} has no such tag or digest${registryDetail(error)}`, exitCode: EXIT.notFound, code };
    if (code === "BLOB_UNKNOWN") return { message: `blob not found in ${host}/${repository ?? ""}${registryDetail(error)}`, exitCode: EXIT.notFound, code };
    return { message: `not found: ${error.message}`, exitCode: EXIT.notFound, ...codeField };
  }
  return { message: error.message, exitCode: EXIT.failure, ...codeField };
}

/** The message and exit code for any error a client command can end with. */
export function explain(error: unknown): Explained {
  if (error instanceof UsageError) return { message: error.message, exitCode: EXIT.usage };
  if (error instanceof NotFoundError) return { message: error.message, exitCode: EXIT.notFound };
  if (error instanceof ClientError) return explainClientError(error);
  // Errors wrapping a ClientError (e.g. a blob source that failed on a 401) keep its meaning.
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  if (cause instanceof ClientError && cause.status !== undefined && [401, 403].includes(cause.status)) return explainClientError(cause);
  const code = networkCode(error);
  if (code === "ENOENT") return { message: (error as Error).message, exitCode: EXIT.notFound, code };
  return { message: error instanceof Error ? error.message : String(error), exitCode: EXIT.failure, ...(code ? { code } : {}) };
}
