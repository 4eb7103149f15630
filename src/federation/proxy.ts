/**
 * Proxy mode: the registry fetches a foreign layer through the SSRF-safe
 * fetcher, from the requesting repository's own URLs only, and answers with
 * bytes whose digest and size it verified. Four paths:
 *
 * - **cache hit**: the cached blob, only if this repository holds a proof
 *   (one of its own URLs delivered the exact bytes for it before);
 * - **store and forward** (`verifyBeforeServe`, default for blobs up to a
 *   threshold): the whole blob is fetched into a cache-store session and
 *   verified before the client gets its headers; a failing source means the
 *   next URL, and when none works the client gets a proper 502;
 * - **stream through** (large blobs): bytes reach the client while they are
 *   verified, the last chunk held back until the digest matched; a source
 *   that fails midway is replaced by the next URL from the same offset
 *   (Range), and only when none is left is the connection cut;
 * - **forwarded range** (a Range on a large uncached blob): the range is asked
 *   of the source and its Content-Range and length are checked; a source that
 *   ignores Range answers the whole blob, which is then verified and sliced.
 *
 * Every full fetch that verified records a proof for the repository and the
 * URL(s) that delivered; with caching on, the verified bytes are committed
 * into the cache. Concurrent requests in one process for the same uncached
 * layer wait for the first one's fetch instead of starting their own.
 */
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { RegistryError } from "../oci/errors.js";
import type { ForeignLayerMark, MetaStore } from "../metadata/meta-store.js";
import type { ByteRange } from "../storage/blob-store.js";
import type { ForeignBlobResponse } from "./federation.js";
import type { SafeFetcher, FetchRequest, FetchResponse } from "./fetcher.js";
import type { SourceHealth } from "./health.js";
import type { CacheSession, ProxyCache } from "./cache.js";
import { ContentMismatchError, ExactLength, RangeSlice, SkipBytes, VerifyingStream, parseContentRange } from "./verify-stream.js";
import { describeFailure, summarize, type Attempt } from "./verifier.js";

export interface ProxyRequest {
  repository: string;
  mark: ForeignLayerMark;
  /** The repository's URLs to fetch from, in order (policy-allowed, same serve mode). */
  candidates: string[];
  /** Every URL of the repository the policy allows now: a proof through one of them authorises cached bytes. */
  allowed: string[];
  range?: ByteRange;
  /** Keep verified bytes in the cache (and serve from it). */
  cache: boolean;
  /** Keep them permanently. */
  pin: boolean;
  /** Fetch and verify the whole blob before answering. */
  verifyBeforeServe: boolean;
}

interface OpenSource {
  url: string;
  response: FetchResponse;
  /** The body from the offset that was asked for. */
  body: Readable;
}

interface Flight {
  done: Promise<void>;
  settle(error?: unknown): void;
}

export class Proxy {
  private readonly flights = new Map<string, Flight>();

  constructor(
    private readonly fetcher: SafeFetcher,
    private readonly health: SourceHealth,
    private readonly cache: ProxyCache,
    private readonly meta: MetaStore,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {}

  async serve(request: ProxyRequest): Promise<ForeignBlobResponse> {
    const { mark } = request;
    const caching = request.cache && this.cache.fits(mark.size, request.pin);
    if (request.cache) {
      const hit = await this.fromCache(request, request.mark);
      if (hit) return hit;
      const flight = this.flights.get(mark.digest);
      if (flight) {
        await flight.done.catch(() => undefined);
        // The fetch we waited for may have been for another repository: only our own proof counts.
        const fresh = await this.meta.getForeignLayer(request.repository, mark.digest);
        const after = fresh ? await this.fromCache(request, fresh) : null;
        if (after) return after;
      }
    }
    if (request.verifyBeforeServe) return this.storeAndForward(request, caching);
    if (request.range) return this.forwardRange(request, request.range, caching);
    return this.streamThrough(request, caching);
  }

  /** Cached bytes, only for a repository with a proof through one of its URLs the policy allows now. */
  private async fromCache(request: ProxyRequest, mark: ForeignLayerMark): Promise<ForeignBlobResponse | null> {
    const proven = (mark.provenUrls ?? []).some((url) => request.allowed.includes(url));
    if (!proven) return null;
    const body = await this.cache.open(mark.digest, request.range);
    return body ? { kind: "stream", size: mark.size, body, range: request.range } : null;
  }

  /** The whole verified blob before the headers: the client gets all of it or a 502. */
  private async storeAndForward(request: ProxyRequest, caching: boolean): Promise<ForeignBlobResponse> {
    const { mark, range } = request;
    const flight = caching ? this.startFlight(mark.digest) : null;
    let fetched: { session: CacheSession; url: string };
    try {
      fetched = await this.fetchWhole(request);
    } catch (error) {
      flight?.settle(error);
      throw error;
    }
    const { session, url } = fetched;
    await this.prove(request, [url]);
    if (caching) {
      const committed = await session.commit(request.pin).catch((error: unknown) => {
        this.logger.warn({ err: error, digest: mark.digest }, "could not keep a verified foreign layer in the proxy cache");
        return false;
      });
      flight?.settle();
      if (committed) {
        const body = await this.cache.open(mark.digest, range);
        if (body) return { kind: "stream", size: mark.size, body, range };
        throw unavailable(mark, [{ url, ok: false, answer: "the verified blob left the cache before it could be served" }]);
      }
    }
    // Not cached: serve the session once, then drop it.
    let body: Readable;
    try {
      body = await session.read();
    } catch (error) {
      await session.abort();
      throw error;
    }
    const out = range ? body.pipe(new RangeSlice(range)) : body;
    if (range) body.on("error", (error) => out.destroy(error));
    out.once("close", () => {
      body.destroy();
      void session.abort();
    });
    return { kind: "stream", size: mark.size, body: out, range };
  }

  /** Fetches the whole blob into a cache-store session from the first URL that delivers the exact bytes. */
  private async fetchWhole(request: ProxyRequest): Promise<{ session: CacheSession; url: string }> {
    const { mark } = request;
    const attempts: Attempt[] = [];
    for (const url of this.ordered(request.candidates)) {
      const session = await this.cache.begin(mark.digest, mark.size);
      let latencyMs: number | null = null;
      try {
        const response = await this.fetcher.fetch({ url, method: "GET", timeoutMs: this.timeoutMs, maxBytes: mark.size });
        latencyMs = response.latencyMs;
        if (response.status !== 200) {
          response.body.destroy();
          throw new Error(`HTTP ${response.status}`);
        }
        await session.fill(verifying(response.body, mark));
        this.health.record(url, { ok: true, latencyMs, error: null });
        return { session, url };
      } catch (error) {
        await session.abort();
        const answer = describeFailure(error);
        attempts.push({ url, ok: false, answer });
        this.health.record(url, { ok: false, latencyMs, error: answer });
      }
    }
    throw unavailable(mark, attempts);
  }

  /**
   * Large blobs: headers go out once a source answered, bytes follow as they
   * are verified. With caching on, the bytes also go into a session that is
   * committed before the client's last chunk is released.
   */
  private async streamThrough(request: ProxyRequest, caching: boolean): Promise<ForeignBlobResponse> {
    const { mark } = request;
    const flight = caching ? this.startFlight(mark.digest) : null;
    const ordered = this.ordered(request.candidates);
    const attempts: Attempt[] = [];
    let first: OpenSource | null = null;
    while (!first && ordered.length > 0) first = await this.openAt(mark, ordered.shift()!, 0, attempts);
    if (!first) {
      const error = unavailable(mark, attempts);
      flight?.settle(error);
      throw error;
    }
    const used: string[] = [];
    const last = () => used[used.length - 1] ?? first.url;
    const verified = verifying(Readable.from(this.resilient(mark, first, ordered, attempts, used), { objectMode: false }), mark);
    const session = caching ? await this.cache.begin(mark.digest, mark.size).catch(() => null) : null;
    const writer = session?.open() ?? null;
    const client = new PassThrough();
    let clientGone = false;
    client.on("close", () => (clientGone = true));
    client.on("error", () => (clientGone = true));

    // The headers wait for the first byte the client may have: a failure before it still gets a proper 502.
    let firstByte!: { resolve: () => void; reject: (error: unknown) => void };
    const started = new Promise<void>((resolve, reject) => (firstByte = { resolve, reject }));
    started.catch(() => undefined);
    const toClient = async (buffer: Buffer) => {
      firstByte.resolve();
      if (clientGone || client.write(buffer)) return;
      // A slow client slows the fetch; a client that leaves does not stop a fill (the cache still wants the bytes).
      await waitFor(client, "drain");
    };
    const run = async () => {
      let held: Buffer | null = null;
      for await (const chunk of verified) {
        if (clientGone && !writer) {
          verified.destroy();
          return;
        }
        if (writer && !writer.sink.write(chunk as Buffer)) await waitFor(writer.sink, "drain");
        if (held) await toClient(held);
        held = chunk as Buffer;
      }
      // Once a client has the whole blob, so does the cache: its last chunk waits for the commit.
      this.health.record(last(), { ok: true, latencyMs: null, error: null });
      if (writer && session) {
        writer.sink.end();
        await writer.done;
        await this.prove(request, used);
        if (!(await session.commit(request.pin).catch(() => false))) await session.abort();
      } else {
        await this.prove(request, used);
      }
      if (held) await toClient(held);
    };
    run().then(
      () => {
        firstByte.resolve();
        flight?.settle();
        client.end();
      },
      async (error: unknown) => {
        // Transport failures were recorded per source; wrong bytes are the last source's.
        if (error instanceof ContentMismatchError) this.health.record(last(), { ok: false, latencyMs: null, error: error.message });
        writer?.sink.destroy();
        await session?.abort();
        flight?.settle(error);
        firstByte.reject(unavailable(mark, attempts.length > 0 ? attempts : [{ url: last(), ok: false, answer: describeFailure(error) }]));
        this.logger.warn({ digest: mark.digest, reason: describeFailure(error) }, "foreign layer stream failed");
        client.destroy(error as Error);
      },
    );
    await started;
    return { kind: "stream", size: mark.size, body: client };
  }

  /**
   * The bytes of `first`, then, if it fails midway, of the next URLs resumed
   * at the same offset (Range; a source that ignores Range is skipped ahead).
   * The caller verifies the whole sequence against the digest.
   */
  private async *resilient(mark: ForeignLayerMark, first: OpenSource, rest: string[], attempts: Attempt[], used: string[]): AsyncGenerator<Buffer> {
    let offset = 0;
    let current: OpenSource | null = first;
    for (;;) {
      if (current) {
        used.push(current.url);
        try {
          for await (const chunk of current.body) {
            offset += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
          // Success or failure of the last source is known only once the digest is checked (streamThrough).
          if (offset >= mark.size) return;
          throw new Error(`the source ended after ${offset} of ${mark.size} bytes`);
        } catch (error) {
          const answer = describeFailure(error);
          attempts.push({ url: current.url, ok: false, answer });
          this.health.record(current.url, { ok: false, latencyMs: current.response.latencyMs, error: answer });
          this.logger.warn({ digest: mark.digest, url: current.url, offset, reason: answer }, "foreign layer source failed while proxying");
        }
      }
      const next = rest.shift();
      if (next === undefined) throw new Error(`every source failed after ${offset} of ${mark.size} bytes: ${summarize(attempts)}`);
      current = await this.openAt(mark, next, offset, attempts);
    }
  }

  /** One source, from `offset`; null (with the attempt recorded) when it does not answer as needed. */
  private async openAt(mark: ForeignLayerMark, url: string, offset: number, attempts: Attempt[]): Promise<OpenSource | null> {
    let latencyMs: number | null = null;
    try {
      const request: FetchRequest = { url, method: "GET", timeoutMs: this.timeoutMs, maxBytes: mark.size };
      if (offset > 0) request.range = { start: offset };
      const response = await this.fetcher.fetch(request);
      latencyMs = response.latencyMs;
      if (response.status === 200) {
        return { url, response, body: offset > 0 ? through(response.body, new SkipBytes(offset)) : response.body };
      }
      if (offset > 0 && response.status === 206) {
        const range = parseContentRange(response.headers["content-range"]);
        if (range && range.start === offset && range.end === mark.size - 1 && range.total === mark.size) return { url, response, body: response.body };
        response.body.destroy();
        throw new Error(`answered a resume at byte ${offset} with Content-Range ${String(response.headers["content-range"])}`);
      }
      response.body.destroy();
      throw new Error(`HTTP ${response.status}`);
    } catch (error) {
      const answer = describeFailure(error);
      attempts.push({ url, ok: false, answer });
      this.health.record(url, { ok: false, latencyMs, error: answer });
      return null;
    }
  }

  /**
   * A range of a large blob that is not cached: asked of the source as a
   * range. A 206 must carry exactly the Content-Range asked for and that many
   * bytes (its digest cannot be checked without the whole blob); a 200 is the
   * whole blob, verified and sliced. A source that fails midway is replaced
   * by the next URL, asked for the rest of the range; the client's headers
   * wait for the first byte, so a range no source can start gets a 502.
   */
  private async forwardRange(request: ProxyRequest, range: ByteRange, caching: boolean): Promise<ForeignBlobResponse> {
    const { mark } = request;
    const attempts: Attempt[] = [];
    const bytes = this.rangeBytes(mark, range, this.ordered(request.candidates), attempts);
    let first: IteratorResult<Buffer>;
    try {
      first = await bytes.next();
    } catch {
      throw unavailable(mark, attempts);
    }
    if (caching) this.fillInBackground(request);
    const body = Readable.from(
      (async function* () {
        if (!first.done) yield first.value;
        yield* bytes;
      })(),
      { objectMode: false },
    );
    return { kind: "stream", size: mark.size, body, range };
  }

  /** The bytes of `range`, from the first URL that delivers them, resuming on the next at the offset reached. */
  private async *rangeBytes(mark: ForeignLayerMark, range: ByteRange, urls: string[], attempts: Attempt[]): AsyncGenerator<Buffer> {
    let next = range.start;
    for (const url of urls) {
      let latencyMs: number | null = null;
      let whole = false;
      try {
        const wanted = { start: next, end: range.end };
        const response = await this.fetcher.fetch({ url, method: "GET", timeoutMs: this.timeoutMs, maxBytes: mark.size, range: wanted });
        latencyMs = response.latencyMs;
        let body: Readable;
        if (response.status === 206) {
          const answered = parseContentRange(response.headers["content-range"]);
          if (!answered || answered.start !== wanted.start || answered.end !== wanted.end || answered.total !== mark.size) {
            response.body.destroy();
            throw new Error(`answered Range bytes=${wanted.start}-${wanted.end} with Content-Range ${String(response.headers["content-range"])}`);
          }
          body = through(response.body, new ExactLength(wanted.end - wanted.start + 1));
        } else if (response.status === 200) {
          // The source ignored Range: the whole blob, verified, of which the wanted part is passed on.
          whole = true;
          body = through(verifying(response.body, mark), new RangeSlice(wanted));
        } else {
          response.body.destroy();
          throw new Error(`HTTP ${response.status}`);
        }
        for await (const chunk of body) {
          next += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        this.health.record(url, { ok: true, latencyMs, error: null });
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE") throw error; // the client left
        const answer = describeFailure(error);
        attempts.push({ url, ok: false, answer });
        this.health.record(url, { ok: false, latencyMs, error: answer });
        this.logger.warn({ digest: mark.digest, url, offset: next, reason: answer }, "foreign layer source failed while proxying a range");
        // Bytes of a whole blob that failed its digest may already be out: they cannot be taken back.
        if (whole && next > range.start) throw error;
      }
    }
    throw new Error(`every source failed after ${next - range.start} of ${range.end - range.start + 1} bytes: ${summarize(attempts)}`);
  }

  /** After a forwarded range: the whole blob into the cache, once, without a client waiting. */
  private fillInBackground(request: ProxyRequest): void {
    const { mark } = request;
    if (this.flights.has(mark.digest)) return;
    const flight = this.startFlight(mark.digest);
    this.fetchWhole(request)
      .then(async ({ session, url }) => {
        await this.prove(request, [url]);
        if (!(await session.commit(request.pin))) await session.abort();
        flight.settle();
      })
      .catch((error: unknown) => {
        flight.settle(error);
        this.logger.debug({ digest: mark.digest, reason: describeFailure(error) }, "background fill of the proxy cache failed");
      });
  }

  /** Records that these URLs of the repository delivered the layer's exact bytes. */
  private async prove(request: ProxyRequest, urls: string[]): Promise<void> {
    for (const url of new Set(urls)) {
      await this.meta.recordForeignProof(request.repository, request.mark.digest, url, Date.now()).catch((error: unknown) => {
        this.logger.warn({ err: error, digest: request.mark.digest }, "could not record a foreign layer proof");
      });
    }
  }

  /** Healthy hosts first, in the repository's order. */
  private ordered(urls: string[]): string[] {
    return [...urls.filter((u) => this.health.isHealthy(u)), ...urls.filter((u) => !this.health.isHealthy(u))];
  }

  private startFlight(digest: string): Flight {
    let settle!: (error?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error === undefined ? resolve() : reject(error));
    });
    done.catch(() => undefined); // followers may not exist; the leader reports its own failure
    const flight: Flight = {
      done,
      settle: (error?: unknown) => {
        if (this.flights.get(digest) === flight) this.flights.delete(digest);
        settle(error);
      },
    };
    this.flights.set(digest, flight);
    return flight;
  }
}

/** `source` through a VerifyingStream for the mark, with the source's errors carried over. */
function verifying(source: Readable, mark: ForeignLayerMark): Readable {
  return through(source, new VerifyingStream(mark.digest, mark.size));
}

function through<T extends NodeJS.ReadWriteStream & Readable>(source: Readable, transform: T): T {
  pipeline(source, transform).catch(() => undefined); // errors surface on `transform`, which pipeline destroys with them
  return transform;
}

function waitFor(stream: NodeJS.EventEmitter, event: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const go = () => {
      stream.off(event, go);
      stream.off("close", go);
      resolve();
    };
    stream.once(event, go);
    stream.once("close", go);
  });
}

/** 502 naming every URL tried and what it answered. */
export function unavailable(mark: ForeignLayerMark, attempts: Attempt[]): RegistryError {
  return new RegistryError(
    "UNAVAILABLE",
    `foreign layer ${mark.digest} could not be fetched from any of this repository's sources: ${summarize(attempts)}`,
    {
      status: 502,
      detail: { digest: mark.digest, foreign: true, urls: mark.urls, attempts: attempts.map(({ url, answer }) => ({ url, error: answer })) },
    },
  );
}
