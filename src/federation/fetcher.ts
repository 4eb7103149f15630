/**
 * The one SSRF-safe HTTP client that federation uses, for push-time
 * verification and for the proxy alike (FEDERATION.md §3):
 *
 * - the URL is parsed by the WHATWG parser, so every written form of an IP
 *   literal (decimal, octal, hex, short, IPv4-mapped IPv6) is normalised
 *   before it is judged; literal hosts are checked before any socket exists;
 * - names are resolved by our own `lookup`, every returned address is checked,
 *   and the socket connects to exactly those checked addresses (no second DNS
 *   answer can slip in between check and connect);
 * - redirects are followed by hand, at most 5, and every hop is checked again;
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
import { checkUrlSyntax } from "./url-syntax.js";

export type FetchFailureKind = "refused" | "timeout" | "network" | "redirect" | "too-large" | "invalid";

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
}

export interface FetchRequest {
  url: string;
  method: "GET" | "HEAD";
  /** Longest wait for the connection, the headers, or the next body byte. */
  timeoutMs: number;
  /** The body may not exceed this many bytes (the descriptor's size). */
  maxBytes: number;
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
    let url = request.url;
    for (let hop = 0; ; hop++) {
      const target = this.checkUrl(url);
      const response = await this.once(target, request);
      const location = response.headers.location;
      if (!REDIRECTS.has(response.statusCode ?? 0) || location === undefined) {
        return this.wrap(url, response, request, Date.now() - started);
      }
      response.resume();
      if (hop >= maxRedirects) throw new FetchError("redirect", `more than ${maxRedirects} redirects`, request.url);
      try {
        url = new URL(location, url).href;
      } catch {
        throw new FetchError("redirect", `redirected to an invalid URL`, url);
      }
    }
  }

  /** Refuses a URL before any socket exists: syntax, scheme, literal address. */
  checkUrl(url: string): URL {
    const problem = checkUrlSyntax(url, this.options.schemes);
    if (problem) throw new FetchError("invalid", `URL ${problem.reason}`, url);
    const parsed = new URL(url);
    const literal = ipLiteralOf(parsed.hostname);
    if (literal !== null) this.checkAddress(literal, url);
    return parsed;
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
            for (const entry of addresses) this.checkAddress(entry.address, url);
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
          // Only these: no credentials, cookies or client headers ever leave the registry.
          headers: { "User-Agent": "ferry-registry (foreign layer fetch)", Accept: "*/*", "Accept-Encoding": "identity" },
        },
        (response) => {
          // From here on the body's idle timer (ByteLimit) bounds time; the socket timer must not fire twice.
          req.setTimeout(0);
          resolvePromise(response);
        },
      );
      req.setTimeout(request.timeoutMs, () => {
        req.destroy(new FetchError("timeout", `timed out after ${formatMs(request.timeoutMs)} without an answer`, url));
      });
      req.on("error", (error) => reject(toFetchError(error, url)));
      req.end();
    });
  }

  private wrap(url: string, response: IncomingMessage, request: FetchRequest, latencyMs: number): FetchResponse {
    const declared = response.headers["content-length"];
    const contentLength = declared !== undefined && /^\d+$/.test(declared) ? Number(declared) : null;
    const status = response.statusCode ?? 0;
    if (request.method === "GET" && status >= 200 && status < 300 && contentLength !== null && contentLength > request.maxBytes) {
      response.destroy();
      throw new FetchError("too-large", `announced ${contentLength} bytes, more than the ${request.maxBytes} expected`, url);
    }
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
