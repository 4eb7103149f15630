/**
 * Verification of foreign layers (docs/federation.md): `head` = some URL
 * answers 2xx with the descriptor's Content-Length; `fetch` = some URL
 * delivers bytes whose digest and size match. URLs are tried in order until
 * one succeeds; every attempt and its answer is kept for the error message,
 * the mark and the source-health record.
 */
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { SafeFetcher } from "./fetcher.js";
import { FetchError } from "./fetcher.js";
import type { SourceHealth } from "./health.js";
import type { ProxyCache } from "./cache.js";
import { VerifyingStream } from "./verify-stream.js";

export type VerifyMode = "head" | "fetch";

export interface Attempt {
  url: string;
  ok: boolean;
  /** What the URL answered: "HTTP 200, 1234 bytes", "HTTP 404", "connection refused", "digest mismatch: ...". */
  answer: string;
}

export interface Verification {
  ok: boolean;
  mode: VerifyMode;
  attempts: Attempt[];
  /** `fetch` only: the URL whose bytes matched the digest (a proof for the repository). */
  provenUrl?: string;
  /** The verified bytes were committed into the proxy cache. */
  cached?: boolean;
}

/** Which URLs' verified bytes go into the proxy cache (their rule caches), and whether pinned. */
export type KeepPolicy = (url: string) => { pin: boolean } | null;

export interface LayerToVerify {
  digest: string;
  size: number;
  urls: string[];
}

export class Verifier {
  constructor(
    private readonly fetcher: SafeFetcher,
    private readonly health: SourceHealth,
    private readonly cache?: ProxyCache,
  ) {}

  /**
   * With `keep`, a `fetch` verification writes the bytes into a proxy cache
   * session and commits them once verified: one download serves both.
   */
  async verify(layer: LayerToVerify, mode: VerifyMode, timeoutMs: number, keep?: KeepPolicy): Promise<Verification> {
    const attempts: Attempt[] = [];
    for (const url of layer.urls) {
      const outcome = { cached: false };
      const attempt = await this.attempt(layer, url, mode, timeoutMs, keep, outcome);
      attempts.push(attempt);
      if (attempt.ok) return { ok: true, mode, attempts, ...(mode === "fetch" ? { provenUrl: url, cached: outcome.cached } : {}) };
    }
    return { ok: false, mode, attempts };
  }

  private async attempt(
    layer: LayerToVerify,
    url: string,
    mode: VerifyMode,
    timeoutMs: number,
    keep: KeepPolicy | undefined,
    outcome: { cached: boolean },
  ): Promise<Attempt> {
    let latencyMs: number | null = null;
    try {
      const response = await this.fetcher.fetch({ url, method: mode === "head" ? "HEAD" : "GET", timeoutMs, maxBytes: layer.size });
      latencyMs = response.latencyMs;
      if (response.status < 200 || response.status > 299) {
        response.body.destroy();
        return this.done(url, false, `HTTP ${response.status}`, latencyMs);
      }
      if (mode === "head") {
        response.body.destroy();
        if (response.contentLength === null) return this.done(url, false, `HTTP ${response.status} without Content-Length`, latencyMs);
        if (response.contentLength !== layer.size) {
          return this.done(url, false, `HTTP ${response.status} with Content-Length ${response.contentLength}, but the descriptor says ${layer.size}`, latencyMs);
        }
        return this.done(url, true, `HTTP ${response.status}, Content-Length ${layer.size}`, latencyMs);
      }
      const kept = keep?.(url) ?? null;
      if (kept && this.cache && this.cache.fits(layer.size, kept.pin)) {
        // A session that cannot begin leaves the body unread: it is closed here, or its socket (and stream count) stays.
        const session = await this.cache.begin(layer.digest, layer.size).catch((error: unknown) => {
          response.body.destroy();
          throw error;
        });
        try {
          const verifier = new VerifyingStream(layer.digest, layer.size);
          const verified = pipeline(response.body, verifier);
          await Promise.all([verified, session.fill(verifier)]);
        } catch (error) {
          await session.abort();
          throw error;
        }
        outcome.cached = await session.commit(kept.pin).catch(() => false);
        if (!outcome.cached) await session.abort();
      } else {
        await pipeline(response.body, new VerifyingStream(layer.digest, layer.size), discard());
      }
      return this.done(url, true, `HTTP ${response.status}, ${layer.size} bytes, digest verified`, latencyMs);
    } catch (error) {
      return this.done(url, false, describeFailure(error), latencyMs);
    }
  }

  private done(url: string, ok: boolean, answer: string, latencyMs: number | null): Attempt {
    this.health.record(url, { ok, latencyMs, error: ok ? null : answer });
    return { url, ok, answer };
  }
}

export function describeFailure(error: unknown): string {
  if (error instanceof FetchError) return error.message;
  return (error as Error).message ?? "failed";
}

function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

export function summarize(attempts: Attempt[]): string {
  if (attempts.length === 0) return "no URL may be fetched under the current policy";
  return attempts.map((a) => `${a.url}: ${a.answer}`).join("; ");
}
