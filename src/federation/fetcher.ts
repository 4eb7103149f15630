/**
 * The one SSRF-safe HTTP client that federation uses, for push-time
 * verification, the admin verify endpoint and the proxy alike
 * (docs/federation.md, "URL policy and SSRF"):
 *
 * - every URL it contacts, the first and every redirect hop, passes one gate
 *   (`admit`): strict RFC 3986 syntax as written, the canonical form
 *   (canonical-url.ts), the URL rules (UrlPolicy), and the address rules for
 *   an IP literal, all before any socket exists; what is requested is the
 *   canonical URL that was judged;
 * - names are resolved by our own `lookup`, every returned address is checked
 *   against the address rules and the deny rules, and the socket connects to
 *   exactly those checked addresses (no second DNS answer can slip in);
 * - redirects are followed by hand, at most 5;
 * - time is bounded (no byte for `timeoutMs` ends the request) and so are
 *   bytes (never more than `maxBytes`, the descriptor's size);
 * - nothing identifying is sent: no Authorization, no Cookie, no client headers.
 */
import http, { type IncomingMessage, type IncomingHttpHeaders } from "node:http";
import https from "node:https";
import { lookup as dnsLookup } from "node:dns/promises";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import type { LookupFunction } from "node:net";
import { forbiddenAddressReason, ipLiteralOf } from "./address.js";
import { canonicalizeUrl } from "./canonical-url.js";
import { hasOnlyUriCharacters } from "./rfc3986.js";
import type { RefusedUrl, UrlDecision } from "./policy.js";
import { tracingHooks } from "../tracing/hooks.js";
import { STREAMING_MIN_BYTES, streamingHeap } from "../memory/streaming-heap.js";

/** `refused`: the address rules; `denied`: the URL rules (UrlPolicy). */
export type FetchFailureKind = "refused" | "denied" | "timeout" | "network" | "redirect" | "too-large" | "invalid";

export class FetchError extends Error {
  constructor(
    readonly kind: FetchFailureKind,
    message: string,
    readonly url: string,
  ) {
    super(message);
    this.name = "FetchError";
  }
}

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export interface FetcherOptions {
  schemes: readonly string[];
  /** Lifts the address check (tests against 127.0.0.1, registries inside a private network). */
  allowPrivateNetworks: boolean;
  maxRedirects?: number;
  /** DNS resolution; tests replace it to map names to chosen addresses. */
  resolve?: (hostname: string) => Promise<ResolvedAddress[]>;
  /** Judges one address (null = allowed); tests replace it to treat one loopback address as public. */
  addressPolicy?: (address: string) => string | null;
  /** The URL rules every URL and every redirect hop must pass (the registry passes its UrlPolicy). */
  policy?: UrlGate;
}

/** What the fetcher needs of the URL policy. */
export interface UrlGate {
  decide(url: string): UrlDecision;
  /** A refusal when a deny rule matches the URL with this resolved address as its host. */
  refusalForAddress?(url: string, address: string): RefusedUrl | null;
}

export interface FetchRequest {
  url: string;
  /** POST only for notification endpoints (src/notifications/), with a body and the headers the operator configured. */
  method: "GET" | "HEAD" | "POST";
  body?: Buffer;
  /** Extra headers the operator configured for this URL (notification endpoints); federation never sends any. */
  headers?: Record<string, string | string[]>;
  /** Ends the request (as a timeout) when aborted: a hard deadline on top of the idle timeout. */
  signal?: AbortSignal;
  /** Longest wait for the connection, the headers, or the next body byte. */
  timeoutMs: number;
  /** The body may not exceed this many bytes (the descriptor's size). */
  maxBytes: number;
  /**
   * Bytes to ask for (GET only): sent as `Range: bytes=start-end`. The caller
   * checks the answer (206 with a matching Content-Range, or 200 when the
   * source ignored it); the fetcher only asks.
   */
  range?: { start: number; end?: number };
  /**
   * False: a redirect is returned as it is (the caller follows it, and each
   * hop it follows passes this fetcher's gate again). Mirrors' registry
   * client follows redirects itself so it can drop credentials across origins.
   */
  followRedirects?: boolean;
  /**
   * The body is the response stream itself, bounded by listeners instead of
   * a Transform stage, and handed over paused (the consumer resumes it). For
   * large bodies read at a high rate (mirror blobs): a stream stage costs per
   * chunk, ~1,600 chunks per 100 MiB. Same limits, same idle timeout.
   */
  plainBody?: boolean;
}

export interface FetchResponse {
  /** The URL that finally answered, after redirects. */
  url: string;
  status: number;
  headers: IncomingHttpHeaders;
  contentLength: number | null;
  /** Bounded in bytes and in idle time; empty for HEAD. Destroy it if unused. */
  body: Readable;
  /** Milliseconds until the final response's headers arrived. */
  latencyMs: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export class SafeFetcher {
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 64 });
  private readonly resolve: (hostname: string) => Promise<ResolvedAddress[]>;
  private readonly addressPolicy: (address: string) => string | null;

  constructor(private readonly options: FetcherOptions) {
    this.resolve = options.resolve ?? defaultResolve;
    this.addressPolicy = options.addressPolicy ?? forbiddenAddressReason;
  }

  async fetch(request: FetchRequest): Promise<FetchResponse> {
    const started = Date.now();
    const maxRedirects = this.options.maxRedirects ?? 5;
    let url = this.admit(request.url, null);
    for (let hop = 0; ; hop++) {
      const response = await this.once(new URL(url), request);
      const location = response.headers.location;
      if (!REDIRECTS.has(response.statusCode ?? 0) || location === undefined || request.followRedirects === false) {
        return this.wrap(url, response, request, Date.now() - started);
      }
      response.resume();
      if (hop >= maxRedirects) throw new FetchError("redirect", `more than ${maxRedirects} redirects`, request.url);
      const next = resolveLocation(location, url);
      if (next === null) throw new FetchError("redirect", `redirected to an invalid URL (${JSON.stringify(location.slice(0, 200))})`, url);
      url = this.admit(next, url);
    }
  }

  /** Refuses a URL before any socket exists: syntax, scheme, URL rules, literal address. */
  checkUrl(url: string): URL {
    return new URL(this.admit(url, null));
  }

  /**
   * The one gate for every URL this fetcher contacts (`from` is the URL that
   * redirected here). Returns the canonical URL, which is what gets requested.
   */
  private admit(url: string, from: string | null): string {
    const canonical = canonicalizeUrl(url, this.options.schemes);
    if (!canonical.ok) {
      if (from === null) throw new FetchError("invalid", `URL ${canonical.reason}`, url);
      throw new FetchError("redirect", `redirected to ${url.slice(0, 200)}, which ${canonical.reason}`, from);
    }
    const { href, host, ip } = canonical.url;
    const decision = this.options.policy?.decide(from === null ? url : href);
    if (decision && !decision.allowed) {
      if (from === null) throw new FetchError("denied", `URL ${url} ${decision.reason}`, url);
      throw new FetchError("denied", `redirected to ${href}, which ${decision.reason}`, from);
    }
    if (ip) this.checkAddress(ipLiteralOf(host)!, href);
    return href;
  }

  private checkAddress(address: string, url: string): void {
    if (this.options.allowPrivateNetworks) return;
    const reason = this.addressPolicy(address);
    if (reason !== null) throw new FetchError("refused", `refused to connect to ${address}: it ${reason}`, url);
  }

  private once(target: URL, request: FetchRequest): Promise<IncomingMessage> {
    const secure = target.protocol === "https:";
    const url = target.href;
    const lookup: LookupFunction = (hostname, options, callback) => {
      this.resolve(hostname).then(
        (addresses) => {
          try {
            if (addresses.length === 0) throw new FetchError("network", `${hostname} has no addresses`, url);
            for (const entry of addresses) {
              this.checkAddress(entry.address, url);
              // The URL rules see addresses too: a deny rule for 127.0.0.1 also refuses a name that resolves there.
              const refusal = this.options.policy?.refusalForAddress?.(url, entry.address);
              if (refusal) throw new FetchError("denied", `URL ${url} ${refusal.reason}`, url);
            }
          } catch (error) {
            callback(error as NodeJS.ErrnoException, "", 0);
            return;
          }
          if (options.all) (callback as (e: null, a: ResolvedAddress[]) => void)(null, addresses);
          else callback(null, addresses[0]!.address, addresses[0]!.family);
        },
        (error: unknown) => callback(new FetchError("network", `cannot resolve ${hostname}: ${(error as Error).message}`, url), "", 0),
      );
    };
    // With tracing on: a client span per hop, and its `traceparent` (a random id, nothing about the client) sent along.
    const span = tracingHooks.outgoing?.(request.method, target, "federation");
    return new Promise((resolvePromise, reject) => {
      const req = (secure ? https : http).request(
        {
          protocol: target.protocol,
          hostname: ipLiteralOf(target.hostname) ?? target.hostname,
          port: target.port === "" ? undefined : Number(target.port),
          path: `${target.pathname}${target.search}`,
          method: request.method,
          agent: secure ? this.httpsAgent : this.httpAgent,
          lookup,
          // Only these (and what the operator configured for a notification endpoint): no client credentials, cookies or headers ever leave the registry.
          headers: {
            "User-Agent": "ferry-registry (foreign layer fetch)",
            Accept: "*/*",
            "Accept-Encoding": "identity",
            ...(request.method === "GET" && request.range ? { Range: rangeHeader(request.range) } : {}),
            ...request.headers,
            ...(request.body ? { "Content-Length": String(request.body.length) } : {}),
            ...span?.headers,
          },
        },
        (response) => {
          // From here on the body's idle timer (ByteLimit) bounds time; the socket timer must not fire twice.
          req.setTimeout(0);
          span?.end(response.statusCode ?? null);
          resolvePromise(response);
        },
      );
      req.setTimeout(request.timeoutMs, () => {
        req.destroy(new FetchError("timeout", `timed out after ${formatMs(request.timeoutMs)} without an answer`, url));
      });
      req.on("error", (error) => {
        span?.end(null, error);
        reject(toFetchError(error, url));
      });
      request.signal?.addEventListener("abort", () => req.destroy(new FetchError("timeout", "no complete answer in time", url)), { once: true });
      req.end(request.body);
    });
  }

  private wrap(url: string, response: IncomingMessage, request: FetchRequest, latencyMs: number): FetchResponse {
    const declared = response.headers["content-length"];
    const contentLength = declared !== undefined && /^\d+$/.test(declared) ? Number(declared) : null;
    const status = response.statusCode ?? 0;
    /** What a successful GET announced it sends; null otherwise. */
    const announced = request.method === "GET" && status >= 200 && status < 300 ? contentLength : null;
    if (announced !== null && announced > request.maxBytes) {
      response.destroy();
      throw new FetchError("too-large", `announced ${announced} bytes, more than the ${request.maxBytes} expected`, url);
    }
    // A large body streams through JavaScript from here on: its short-lived buffers get room in the heap until it
    // closes. Only an announced length counts: a tag list or manifest sent chunked is no stream worth the room.
    if (announced !== null && announced >= STREAMING_MIN_BYTES) response.once("close", streamingHeap.enter());
    if (request.plainBody) return { url, status, headers: response.headers, contentLength, body: boundInPlace(response, request.maxBytes, request.timeoutMs, url), latencyMs };
    const bounded = new ByteLimit(request.maxBytes, request.timeoutMs, url);
    response.pipe(bounded);
    response.on("error", (error) => bounded.destroy(toFetchError(error, url)));
    response.on("aborted", () => bounded.destroy(new FetchError("network", "the source closed the connection early", url)));
    bounded.on("close", () => {
      if (!response.complete) response.destroy();
    });
    return { url, status, headers: response.headers, contentLength, body: bounded, latencyMs };
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

/** Fails the stream as soon as more than `limit` bytes arrive, or when no byte arrives for `idleMs`. */
class ByteLimit extends Transform {
  private seen = 0;
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly limit: number,
    private readonly idleMs: number,
    private readonly url: string,
  ) {
    super();
    this.arm();
  }
  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.destroy(new FetchError("timeout", `stalled: no data for ${formatMs(this.idleMs)}`, this.url));
    }, this.idleMs);
    this.timer.unref();
  }
  override _flush(callback: TransformCallback): void {
    clearTimeout(this.timer);
    callback();
  }
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.timer);
    callback(error);
  }
  /** The consumer wants more: from now on, waiting is the source's fault. */
  override _read(size: number): void {
    this.arm();
    super._read(size);
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      callback(new FetchError("too-large", `sent more than the ${this.limit} bytes the descriptor declares`, this.url));
      return;
    }
    clearTimeout(this.timer);
    // While a slow consumer holds us back the source is not stalled: re-armed in _read.
    if (this.push(chunk)) this.arm();
    callback();
  }
}

/**
 * ByteLimit's bounds on the response itself: more than `limit` bytes, or no
 * byte for `idleMs` while the consumer is reading, destroys it with a
 * FetchError. One timer per idle period instead of one per chunk. Returned
 * paused: a 'data' listener alone does not start it, `resume()` (or a pipe) does.
 */
function boundInPlace(response: IncomingMessage, limit: number, idleMs: number, url: string): Readable {
  let seen = 0;
  let lastByteAt = Date.now();
  const check = () => {
    const now = Date.now();
    // While the consumer holds the body back the source is not stalled.
    if (response.isPaused()) lastByteAt = now;
    const quiet = now - lastByteAt;
    if (quiet >= idleMs) response.destroy(new FetchError("timeout", `stalled: no data for ${formatMs(idleMs)}`, url));
    else timer = setTimeout(check, idleMs - quiet).unref();
  };
  let timer = setTimeout(check, idleMs).unref();
  response.on("data", (chunk: Buffer) => {
    seen += chunk.length;
    lastByteAt = Date.now();
    if (seen > limit) response.destroy(new FetchError("too-large", `sent more than the ${limit} bytes the descriptor declares`, url));
  });
  response.pause();
  response.on("aborted", () => response.destroy(new FetchError("network", "the source closed the connection early", url)));
  response.on("close", () => clearTimeout(timer));
  return response;
}

/**
 * The absolute URL a Location header points to, or null when it is not a
 * valid RFC 3986 reference. The fragment is dropped (it never reaches a
 * server); network-path references ("//host/x") take the current scheme and
 * are then judged as written, so "////host" stays hostless instead of being
 * repaired.
 */
function resolveLocation(location: string, base: string): string | null {
  if (!hasOnlyUriCharacters(location)) return null;
  const reference = location.split("#")[0]!;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(reference)) return reference;
  if (reference.startsWith("//")) return `${new URL(base).protocol}${reference}`;
  try {
    return new URL(reference, base).href;
  } catch {
    return null;
  }
}

async function defaultResolve(hostname: string): Promise<ResolvedAddress[]> {
  const entries = await dnsLookup(hostname, { all: true, verbatim: true });
  return entries.map((entry) => ({ address: entry.address, family: entry.family === 6 ? 6 : 4 }));
}

function toFetchError(error: unknown, url: string): FetchError {
  if (error instanceof FetchError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  const text: Record<string, string> = {
    ECONNREFUSED: "connection refused",
    ECONNRESET: "connection reset",
    ENOTFOUND: "host not found",
    EAI_AGAIN: "DNS lookup failed",
    ETIMEDOUT: "connection timed out",
    EHOSTUNREACH: "host unreachable",
    ENETUNREACH: "network unreachable",
  };
  const message = (code && text[code]) ?? (error as Error).message ?? "request failed";
  return new FetchError("network", message, url);
}

export function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** `bytes=start-end` (or `bytes=start-` for the rest); the numbers are the caller's, checked to be sane. */
function rangeHeader(range: { start: number; end?: number }): string {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) {
    throw new Error(`invalid byte range ${start}-${end ?? ""}`);
  }
  return `bytes=${start}-${end ?? ""}`;
}
