// Keep-alive HTTP client for one registry: a thin layer over an undici Pool
// that resolves Location/Link URLs and turns unexpected statuses into errors.
import { Readable } from 'node:stream';
import { Pool, request as globalRequest, type Dispatcher } from 'undici';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type Headers = Record<string, string>;

/** A request body given as parts so "unique prefix + shared payload" never needs a copy. */
export type BodyParts = readonly Uint8Array[];

export interface Response {
  status: number;
  headers: Record<string, string | undefined>;
  body: Dispatcher.ResponseData['body'];
}

export class HttpError extends Error {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly status: number,
    detail: string,
  ) {
    super(`${method} ${url} -> ${status}${detail ? `: ${detail}` : ''}`);
  }
}

function flattenHeaders(raw: Dispatcher.ResponseData['headers']): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(raw)) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

function toBody(parts: BodyParts | undefined): Uint8Array | Readable | undefined {
  if (!parts || parts.length === 0) return undefined;
  if (parts.length === 1) return parts[0];
  // objectMode off so undici sees a byte stream; each part is written as-is.
  return Readable.from(parts, { objectMode: false });
}

export class RegistryHttp {
  readonly origin: string;
  private readonly pool: Pool;

  constructor(baseUrl: string, connections = 64) {
    this.origin = new URL(baseUrl).origin;
    this.pool = new Pool(this.origin, {
      connections,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      // 100 MiB bodies on a loaded 2-core box can be slow; a stall is still an error.
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
  }

  /** Absolute URL for a path or for a (possibly relative) Location/Link value. */
  resolve(pathOrUrl: string): URL {
    return new URL(pathOrUrl, this.origin);
  }

  async send(method: Method, pathOrUrl: string, headers: Headers = {}, body?: BodyParts): Promise<Response> {
    const url = this.resolve(pathOrUrl);
    const opts = { method, headers, body: toBody(body) };
    // Registries may hand out upload or blob URLs on another origin (redirects);
    // only same-origin requests go through the keep-alive pool.
    const res =
      url.origin === this.origin
        ? await this.pool.request({ ...opts, path: url.pathname + url.search })
        : await globalRequest(url, opts);
    return { status: res.statusCode, headers: flattenHeaders(res.headers), body: res.body };
  }

  /**
   * Sends and insists on one of the expected statuses (the error carries the
   * start of the body). On success the caller owns, and must consume, the body.
   */
  async expect(
    method: Method,
    pathOrUrl: string,
    statuses: readonly number[],
    headers: Headers = {},
    body?: BodyParts,
  ): Promise<Response> {
    const res = await this.send(method, pathOrUrl, headers, body);
    if (!statuses.includes(res.status)) {
      const text = (await res.body.text().catch(() => '')).slice(0, 300);
      throw new HttpError(method, pathOrUrl, res.status, text);
    }
    return res;
  }

  /** expect() for responses whose body is irrelevant; returns the headers. */
  async expectDrained(
    method: Method,
    pathOrUrl: string,
    statuses: readonly number[],
    headers: Headers = {},
    body?: BodyParts,
  ): Promise<Response['headers']> {
    const res = await this.expect(method, pathOrUrl, statuses, headers, body);
    await res.body.dump();
    return res.headers;
  }

  /** Abrupt on purpose: at teardown (possibly Ctrl-C) nothing in flight matters any more. */
  close(): Promise<void> {
    return this.pool.destroy();
  }
}
