/**
 * A small HTTP/1.1 client over node:http(s) with keep-alive agents, used by the
 * registry transport and for foreign URLs. node:http is part of the Node
 * binary, so a `ferry` command does not pay for loading an HTTP library at
 * start-up (undici took ~200 ms of every run); node:https is loaded on the
 * first https request only.
 *
 * Bodies are a Buffer (sent with its Content-Length) or a stream piped into
 * the request as it is read, never collected in memory. When a streamed body
 * fails (e.g. a digest check), the request is aborted and the promise rejects
 * with the body's own error, so the caller sees why.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import type { Agent as HttpsAgent } from "node:https";
import type { Readable } from "node:stream";

export type HttpBody = Buffer | Readable | null;

export interface HttpRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body?: HttpBody;
  /** Abort when the socket is idle this long (connecting, waiting for headers, or mid-body). */
  idleTimeoutMs?: number;
  /** A body read whole (a token answer): senders that bound bodies (the registry's mirrors) cut it off past this. */
  maxBodyBytes?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body (an IncomingMessage from AgentPool; another stream from other senders). */
  body: Readable;
}

/**
 * What a Transport sends its requests through: an AgentPool by default, or
 * another sender (the registry's mirrors send through its SSRF-safe fetcher).
 */
export interface HttpSender {
  send(request: HttpRequest): Promise<HttpResponse>;
}

/** TLS settings for https connections (`--tls-verify=false`, `--ca-file`, client certificates). */
export interface TlsSettings {
  /** false skips certificate checks (the connection is still encrypted). */
  rejectUnauthorized?: boolean;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Every pool, so a CLI process can close all idle connections with one call. */
const pools = new Set<AgentPool>();

/** Closes every pool's connections (pools open new ones if used again). */
export function destroyAllPools(): void {
  for (const pool of pools) pool.destroy();
}

/** Keep-alive agents for http and https, created on first use. */
export class AgentPool implements HttpSender {
  private http?: HttpAgent;
  private https?: HttpsAgent;

  constructor(private readonly options: { maxSockets: number; connectTimeoutMs?: number; tls?: TlsSettings }) {
    pools.add(this);
  }

  private async agentFor(url: URL): Promise<{ agent: HttpAgent; send: typeof httpRequest }> {
    if (url.protocol === "http:") {
      this.http ??= new HttpAgent({ keepAlive: true, maxSockets: this.options.maxSockets });
      return { agent: this.http, send: httpRequest };
    }
    if (url.protocol !== "https:") throw new Error(`unsupported protocol ${url.protocol}`);
    const https = await import("node:https");
    this.https ??= new https.Agent({ keepAlive: true, maxSockets: this.options.maxSockets, ...this.options.tls });
    return { agent: this.https, send: https.request };
  }

  /** Closes every connection; the pool opens new ones if used again. */
  destroy(): void {
    this.http?.destroy();
    this.https?.destroy();
  }

  async send(request: HttpRequest): Promise<HttpResponse> {
    const { agent, send } = await this.agentFor(request.url);
    const headers: Record<string, string> = { ...request.headers };
    const body = request.body ?? null;
    if (Buffer.isBuffer(body)) headers["content-length"] = String(body.length);
    else if (body === null && request.method !== "GET" && request.method !== "HEAD") headers["content-length"] = "0";
    // A body that already failed (e.g. a digest check ran ahead of us) is not sent at all.
    if (body && !Buffer.isBuffer(body) && (body.errored || body.destroyed)) {
      throw body.errored ?? new Error("the request body stream was closed before it was sent");
    }
    const idle = request.idleTimeoutMs ?? 120_000;
    const connectTimeout = this.options.connectTimeoutMs;

    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      let bodyError: unknown;
      const req = send(request.url, { method: request.method, headers, agent });
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        reject(bodyError ?? error);
      };
      req.on("error", fail);
      req.setTimeout(idle, () => req.destroy(codeError(`no data for ${idle / 1000} s`, "ETIMEDOUT")));
      if (connectTimeout) {
        req.once("socket", (socket) => {
          if (!socket.connecting) return;
          const timer = setTimeout(() => req.destroy(codeError(`connect timed out after ${connectTimeout / 1000} s`, "ETIMEDOUT")), connectTimeout);
          socket.once("connect", () => clearTimeout(timer));
          socket.once("close", () => clearTimeout(timer));
        });
      }
      req.on("response", (response) => {
        if (settled) {
          response.resume();
          return;
        }
        settled = true;
        // An answer before the whole body went out (e.g. a refusal): stop sending.
        if (body && !Buffer.isBuffer(body) && !body.readableEnded) body.unpipe(req);
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: response });
      });
      if (body === null) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.once("error", (error) => {
          bodyError = error;
          req.destroy(error);
        });
        body.pipe(req);
      }
    });
  }
}

function codeError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** True when a response body can no longer be read (already read, dumped or destroyed). */
export function bodyUsed(body: Readable): boolean {
  return body.readableDidRead || body.readableEnded || body.destroyed;
}

/** Reads a (small) response body whole. */
export async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Discards a response body so the connection can be reused; a large one is
 * cut off instead (reading megabytes to save a connection is not worth it).
 */
export function discard(body: Readable): Promise<void> {
  if (body.readableEnded || body.destroyed) return Promise.resolve();
  const length = Number((body as Partial<IncomingMessage>).headers?.["content-length"] ?? 0);
  if (length > 256 * 1024) {
    body.destroy();
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    body.once("end", resolve);
    body.once("close", resolve);
    body.once("error", () => resolve());
    body.resume();
  });
}
