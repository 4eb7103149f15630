/**
 * Proxy mode (FEDERATION.md §4.5): the registry fetches a foreign layer
 * through the SSRF-safe fetcher and streams it to the client while verifying
 * digest and size. With caching on, the verified blob is kept (ProxyCache)
 * and concurrent requests for the same uncached layer share one fetch: the
 * first request streams as the bytes arrive, the others wait for the cache.
 */
import { PassThrough, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { RegistryError } from "../oci/errors.js";
import type { ForeignLayerMark } from "../metadata/meta-store.js";
import type { ByteRange } from "../storage/blob-store.js";
import type { ForeignBlobResponse } from "./federation.js";
import type { SafeFetcher, FetchResponse } from "./fetcher.js";
import type { SourceHealth } from "./health.js";
import type { ProxyCache } from "./cache.js";
import { RangeSlice, VerifyingStream } from "./verify-stream.js";
import { describeFailure, summarize, type Attempt } from "./verifier.js";

interface Flight {
  /** Settles when the blob is in the cache (or rejects with the 502 to give). */
  done: Promise<void>;
}

interface OpenSource {
  url: string;
  response: FetchResponse;
}

export class Proxy {
  private readonly flights = new Map<string, Flight>();

  constructor(
    private readonly fetcher: SafeFetcher,
    private readonly health: SourceHealth,
    private readonly cache: ProxyCache,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {}

  async serve(mark: ForeignLayerMark, urls: string[], range: ByteRange | undefined, useCache: boolean): Promise<ForeignBlobResponse> {
    if (useCache) {
      const cached = await this.fromCache(mark, range);
      if (cached) return cached;
      const flight = this.flights.get(mark.digest);
      if (flight) {
        await flight.done;
        const after = await this.fromCache(mark, range);
        if (after) return after;
      } else if (mark.size <= this.cache.maxBytes) {
        return this.lead(mark, urls, range);
      }
    }
    const source = await this.open(mark, urls);
    const verified = this.verifiedBody(mark, source);
    const body = range ? verified.pipe(new RangeSlice(range)) : verified;
    if (range) verified.on("error", (error) => body.destroy(error));
    return { kind: "stream", size: mark.size, body, range };
  }

  private async fromCache(mark: ForeignLayerMark, range: ByteRange | undefined): Promise<ForeignBlobResponse | null> {
    const body = await this.cache.open(mark.digest, range);
    return body ? { kind: "stream", size: mark.size, body, range } : null;
  }

  /** The first request for an uncached layer: fetch once, fill the cache, stream to this client meanwhile. */
  private async lead(mark: ForeignLayerMark, urls: string[], range: ByteRange | undefined): Promise<ForeignBlobResponse> {
    let settle!: (error?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error === undefined ? resolve() : reject(error));
    });
    done.catch(() => undefined); // followers may not exist; the leader reports its own failure
    this.flights.set(mark.digest, { done });
    const finish = (error?: unknown) => {
      this.flights.delete(mark.digest);
      settle(error);
    };

    let source: OpenSource;
    try {
      source = await this.open(mark, urls);
    } catch (error) {
      finish(error);
      throw error;
    }
    const writer = await this.cache.beginWrite(mark.digest, mark.size);
    const verified = this.verifiedBody(mark, source);
    const client = new PassThrough();
    let clientGone = false;
    client.on("close", () => (clientGone = true));
    client.on("error", () => (clientGone = true));

    const toClient = async (buffer: Buffer) => {
      if (clientGone || client.write(buffer)) return;
      // A slow client slows the fetch; a client that leaves does not stop it (the cache still wants the bytes).
      await new Promise<void>((r) => {
        const go = () => {
          client.off("drain", go);
          client.off("close", go);
          r();
        };
        client.once("drain", go);
        client.once("close", go);
      });
    };
    const fill = async () => {
      // The client's last chunk waits for the commit: once a client has the whole blob, so does the cache.
      let held: Buffer | null = null;
      for await (const chunk of verified) {
        if (writer && !writer.file.write(chunk as Buffer)) await new Promise<void>((r) => writer.file.once("drain", () => r()));
        if (held) await toClient(held);
        held = chunk as Buffer;
      }
      if (writer) {
        await new Promise<void>((resolve, reject) => writer.file.end((error?: Error | null) => (error ? reject(error) : resolve())));
        await writer.commit();
      }
      if (held) await toClient(held);
    };
    fill().then(
      () => {
        finish();
        client.end();
      },
      async (error: unknown) => {
        await writer?.abort();
        const failure = unavailable(mark, [{ url: source.url, ok: false, answer: describeFailure(error) }]);
        finish(failure);
        client.destroy(error as Error);
      },
    );
    if (!range) return { kind: "stream", size: mark.size, body: client };
    // A range waits for the whole verified blob, then comes from the cache.
    client.resume();
    await done;
    const cached = await this.fromCache(mark, range);
    if (!cached) throw unavailable(mark, [{ url: source.url, ok: false, answer: "the blob left the cache before it could be served" }]);
    return cached;
  }

  /** Tries healthy URLs first, then the others, until one answers 200. */
  private async open(mark: ForeignLayerMark, urls: string[]): Promise<OpenSource> {
    const ordered = [...urls.filter((u) => this.health.isHealthy(u)), ...urls.filter((u) => !this.health.isHealthy(u))];
    const attempts: Attempt[] = [];
    for (const url of ordered) {
      try {
        const response = await this.fetcher.fetch({ url, method: "GET", timeoutMs: this.timeoutMs, maxBytes: mark.size });
        if (response.status === 200) return { url, response };
        response.body.destroy();
        const answer = `HTTP ${response.status}`;
        attempts.push({ url, ok: false, answer });
        this.health.record(url, { ok: false, latencyMs: response.latencyMs, error: answer });
      } catch (error) {
        const answer = describeFailure(error);
        attempts.push({ url, ok: false, answer });
        this.health.record(url, { ok: false, latencyMs: null, error: answer });
      }
    }
    throw unavailable(mark, attempts);
  }

  /** The source's body through the verifier; the outcome lands in source health. */
  private verifiedBody(mark: ForeignLayerMark, source: OpenSource): Readable {
    const verifier = new VerifyingStream(mark.digest, mark.size);
    pipeline(source.response.body, verifier).then(
      () => this.health.record(source.url, { ok: true, latencyMs: source.response.latencyMs, error: null }),
      (error: unknown) => {
        const answer = describeFailure(error);
        if ((error as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE") return; // the client left
        this.health.record(source.url, { ok: false, latencyMs: source.response.latencyMs, error: answer });
        this.logger.warn({ digest: mark.digest, url: source.url, reason: answer }, "foreign layer source failed while proxying");
      },
    );
    return verifier;
  }
}

/** 502 naming every URL tried and what it answered (FEDERATION.md §4.7). */
export function unavailable(mark: ForeignLayerMark, attempts: Attempt[]): RegistryError {
  return new RegistryError(
    "UNAVAILABLE",
    `foreign layer ${mark.digest} could not be fetched from any of its sources: ${summarize(attempts)}`,
    {
      status: 502,
      detail: { digest: mark.digest, foreign: true, urls: mark.urls, attempts: attempts.map(({ url, answer }) => ({ url, error: answer })) },
    },
  );
}
