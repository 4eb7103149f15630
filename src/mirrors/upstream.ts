/**
 * The connection to one upstream registry: the client library's
 * RegistryClient (auth challenges, Basic and bearer tokens with scope,
 * redirects without credentials across origins) sending every request through
 * the registry's SSRF-safe fetcher, and what the upstream's answers say about
 * its health and rate limit.
 *
 * Upstreams are chosen by the operator, not by clients. A loopback or private
 * upstream (tests, an internal registry) is allowed through one narrow
 * exception: the addresses the configured upstream host itself has. Every
 * other address a redirect or a token realm leads to is judged by the
 * ordinary address rules.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import { Transform, type Readable } from "node:stream";
import { forbiddenAddressReason, ipLiteralOf } from "../federation/address.js";
import { SafeFetcher, FetchError, type ResolvedAddress } from "../federation/fetcher.js";
import type { HttpRequest, HttpResponse, HttpSender } from "../client/http.js";
import { RegistryClient } from "../client/registry.js";
import { ClientError } from "../client/errors.js";
import { RegistryError } from "../oci/errors.js";
import type { MirrorConfig } from "./config.js";

/** Longest a 429's Retry-After keeps us away from an upstream (a hostile value must not disable the mirror for days). */
const MAX_BACKOFF_MS = 15 * 60_000;
/** Backoff after a 429 without Retry-After. */
const DEFAULT_BACKOFF_MS = 60_000;
/**
 * Bodies the client library reads whole besides manifests: tag lists and the
 * /v2/ ping (by path), token answers (their request says), and every error
 * answer. Only a successful blob body is unbounded (its digest bounds it):
 * a hostile upstream's endless body must not fill the registry's memory.
 */
const LISTING_MAX_BYTES = 16 * 1024 * 1024;
const ERROR_BODY_MAX_BYTES = 1024 * 1024;

export interface UpstreamHealthView {
  ok: boolean;
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastError: string | null;
  consecutiveFailures: number;
  /** Until when the upstream asked us to stay away (429), if it did. */
  rateLimitedUntil: number | null;
}

/** What the upstream's answers (and failures to answer) said lately. */
export class UpstreamHealth {
  private lastSuccessAt: number | null = null;
  private lastFailureAt: number | null = null;
  private lastError: string | null = null;
  private consecutiveFailures = 0;
  private rateLimitedUntil = 0;

  success(): void {
    this.lastSuccessAt = Date.now();
    this.consecutiveFailures = 0;
  }

  failure(error: string): void {
    this.lastFailureAt = Date.now();
    this.lastError = error.slice(0, 500);
    this.consecutiveFailures++;
  }

  rateLimited(retryAfter: string | undefined): void {
    this.rateLimitedUntil = Date.now() + parseRetryAfter(retryAfter);
    this.failure("HTTP 429: rate limited by the upstream");
  }

  /** Milliseconds until the upstream's rate limit allows another request (0: go ahead). */
  backoffLeft(): number {
    return Math.max(0, this.rateLimitedUntil - Date.now());
  }

  view(): UpstreamHealthView {
    return {
      ok: this.consecutiveFailures === 0 && this.backoffLeft() === 0,
      lastSuccessAt: this.lastSuccessAt,
      lastFailureAt: this.lastFailureAt,
      lastError: this.lastError,
      consecutiveFailures: this.consecutiveFailures,
      rateLimitedUntil: this.backoffLeft() > 0 ? this.rateLimitedUntil : null,
    };
  }
}

function parseRetryAfter(value: string | undefined): number {
  if (value === undefined) return DEFAULT_BACKOFF_MS;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, MAX_BACKOFF_MS);
  const date = Date.parse(value);
  if (Number.isFinite(date)) return Math.min(Math.max(0, date - Date.now()), MAX_BACKOFF_MS);
  return DEFAULT_BACKOFF_MS;
}

/** The client library's requests, sent through a SafeFetcher (which follows no redirect itself: the Transport does, hop by hop). */
class FetcherSender implements HttpSender {
  constructor(
    private readonly fetcher: SafeFetcher,
    private readonly health: UpstreamHealth,
    private readonly upstreamOrigin: string,
    private readonly manifestMaxBytes: number,
    private readonly deadlineMs: number,
  ) {}

  private maxBytesFor(request: HttpRequest): number {
    if (request.maxBodyBytes !== undefined) return request.maxBodyBytes;
    const path = request.url.pathname;
    if (/\/manifests\/[^/]+$/.test(path)) return this.manifestMaxBytes;
    if (/\/tags\/list$/.test(path) || /^\/v2\/?$/.test(path)) return LISTING_MAX_BYTES;
    return Number.MAX_SAFE_INTEGER;
  }

  async send(request: HttpRequest): Promise<HttpResponse> {
    if (request.body && !Buffer.isBuffer(request.body)) throw new Error("mirrors never stream a request body upstream");
    if (request.method !== "GET" && request.method !== "HEAD" && request.method !== "POST") throw new Error(`mirrors never send ${request.method} upstream`);
    const headers: Record<string, string> = {};
    // The fetcher's own User-Agent and Accept are written in this case: ours must replace them, not go out twice.
    for (const [name, value] of Object.entries(request.headers)) headers[canonicalHeaderName(name)] = value;
    // Manifests are read whole: bounded by the registry's manifest limit. Blob sizes are checked against their digest as they stream.
    const maxBytes = this.maxBytesFor(request);
    try {
      const response = await this.fetcher.fetch({
        url: request.url.href,
        method: request.method,
        headers,
        ...(request.body ? { body: request.body } : {}),
        // No wait for an upstream byte is longer than the operator's upstreamTimeout (the client library asks for 120 s).
        timeoutMs: Math.min(request.idleTimeoutMs ?? 60_000, this.deadlineMs),
        // What is read whole also has a deadline: a byte every few seconds never trips the idle timeout. (Blobs stream to clients at their pace.)
        ...(maxBytes < Number.MAX_SAFE_INTEGER || request.method === "HEAD" ? { signal: AbortSignal.timeout(this.deadlineMs) } : {}),
        maxBytes,
        // A blob body (bounded by its digest, not by maxBytes) is read chunk by chunk at full speed: no stream stage in between.
        ...(maxBytes === Number.MAX_SAFE_INTEGER && request.method === "GET" ? { plainBody: true } : {}),
        followRedirects: false,
      });
      if (response.status === 429 && new URL(response.url).origin === this.upstreamOrigin) {
        const retryAfter = response.headers["retry-after"];
        this.health.rateLimited(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
      }
      const ok = response.status >= 200 && response.status < 300;
      return { status: response.status, headers: response.headers, body: ok ? response.body : capped(response.body, ERROR_BODY_MAX_BYTES) };
    } catch (error) {
      // The client library reads `code` for retries; a FetchError says what happened in words.
      if (error instanceof FetchError) throw Object.assign(new Error(error.message), { code: error.kind === "timeout" ? "ETIMEDOUT" : undefined });
      throw error;
    }
  }
}

/** Ends a body read whole with an error once it passes `limit` bytes (the source is dropped). */
function capped(body: Readable, limit: number): Readable {
  let seen = 0;
  const bounded = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > limit) callback(new Error(`the upstream's answer passed ${limit} bytes`));
      else callback(null, chunk);
    },
  });
  body.on("error", (error) => bounded.destroy(error));
  bounded.on("close", () => body.destroy());
  return body.pipe(bounded);
}

function canonicalHeaderName(name: string): string {
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, letter: string) => dash + letter.toUpperCase());
}

export interface Upstream {
  /** scheme://host[:port] as configured. */
  url: string;
  client: RegistryClient;
  health: UpstreamHealth;
  close(): void;
}

export function connectUpstream(config: MirrorConfig, manifestMaxBytes = 4 * 1024 * 1024): Upstream {
  const url = new URL(config.upstream);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  // The one exception to the address rules: where the operator's upstream host itself lives.
  const upstreamAddresses = new Set<string>();
  const literal = ipLiteralOf(url.hostname);
  if (literal) upstreamAddresses.add(literal);
  const health = new UpstreamHealth();
  const fetcher = new SafeFetcher({
    schemes: ["http", "https"],
    allowPrivateNetworks: false,
    resolve: async (hostname: string): Promise<ResolvedAddress[]> => {
      const entries = await dnsLookup(hostname, { all: true, verbatim: true });
      const addresses = entries.map((entry) => ({ address: entry.address, family: entry.family === 6 ? (6 as const) : (4 as const) }));
      if (hostname.toLowerCase() === host.toLowerCase()) for (const entry of addresses) upstreamAddresses.add(entry.address);
      return addresses;
    },
    addressPolicy: (address) => (upstreamAddresses.has(address) ? null : forbiddenAddressReason(address)),
  });
  const registry = url.host;
  const client = new RegistryClient({
    registry,
    insecure: url.protocol === "http:",
    ...(url.protocol === "https:" ? { tls: {} } : {}),
    ...(config.credentials ? { credentials: config.credentials } : {}),
    // One attempt: a mirror answers its own client now (stale or an error) rather than retrying for seconds.
    attempts: 1,
    pool: new FetcherSender(fetcher, health, url.origin, manifestMaxBytes, config.upstreamTimeout),
    userAgent: "ferry-mirror",
  });
  return { url: config.upstream, client, health, close: () => fetcher.close() };
}

export type UpstreamFailure =
  | { kind: "not-found" }
  /** Refused with a token obtained for exactly the repository's scope: Docker Hub's answer for a repository that does not exist. */
  | { kind: "name-unknown"; answer: string }
  | { kind: "rate-limited"; retryAfterMs: number }
  | { kind: "down"; message: string };

/** What an error from the upstream client means for the mirror. */
export function classifyUpstreamError(error: unknown, health: UpstreamHealth): UpstreamFailure {
  if (error instanceof ClientError && (error.status === 404 || error.code === "MANIFEST_UNKNOWN" || error.code === "BLOB_UNKNOWN" || error.code === "NAME_UNKNOWN")) {
    return { kind: "not-found" };
  }
  if (error instanceof ClientError && error.status === 401 && error.request?.tokenScopes) return { kind: "name-unknown", answer: error.message };
  if (error instanceof ClientError && error.status === 429) return { kind: "rate-limited", retryAfterMs: Math.max(health.backoffLeft(), 1000) };
  if (error instanceof RateLimitedError) return { kind: "rate-limited", retryAfterMs: error.retryAfterMs };
  const message = error instanceof Error ? error.message : String(error);
  return { kind: "down", message };
}

/** Thrown before contacting an upstream that asked us to wait (429 with Retry-After). */
export class RateLimitedError extends Error {
  constructor(readonly retryAfterMs: number) {
    super(`rate limited by the upstream for another ${Math.ceil(retryAfterMs / 1000)} s`);
  }
}

/** The client's answer when the upstream failed and nothing cached can stand in. */
/** The client's answer when the upstream refused the repository even with a token for it. */
export function upstreamNameUnknown(upstreamUrl: string, answer: string): RegistryError {
  return new RegistryError(
    "NAME_UNKNOWN",
    `the upstream ${upstreamUrl} refused the repository even with a token for it (no such repository there, or not visible to this mirror): ${answer}`,
    { status: 404, detail: { upstream: upstreamUrl, answer } },
  );
}

export function upstreamError(upstreamUrl: string, failure: Exclude<UpstreamFailure, { kind: "not-found" | "name-unknown" }>): RegistryError {
  if (failure.kind === "rate-limited") {
    const seconds = Math.max(1, Math.ceil(failure.retryAfterMs / 1000));
    return new RegistryError("UNAVAILABLE", `upstream ${upstreamUrl} is rate-limiting this mirror; retry in ${seconds} s`, {
      status: 503,
      headers: { "Retry-After": String(seconds) },
      detail: { upstream: upstreamUrl, retryAfterSeconds: seconds },
    });
  }
  return new RegistryError("UNAVAILABLE", `upstream ${upstreamUrl} failed: ${failure.message}`, {
    status: 502,
    detail: { upstream: upstreamUrl, error: failure.message },
  });
}
