/**
 * Pull-through mirroring (docs/mirrors.md): requests for repositories under a
 * mirror's prefix are answered from the local store when it can, else from
 * the upstream, storing what was fetched:
 *
 * - a manifest by tag is served from the cache while fresh (tagTtl), then
 *   revalidated with a HEAD and fetched again only when its digest changed;
 *   by digest it is fetched once and kept. Manifests are stored sparse (their
 *   blobs and children come on demand), through the same push path as a
 *   client's, so federation's policy judges their foreign layers;
 * - a blob is fetched once however many clients ask at the same time
 *   (BlobFlight), each client streamed while it is being stored and verified;
 * - foreign layers keep their `urls` and are answered by federation, never
 *   fetched from the upstream registry;
 * - writes are refused (405): a mirror is read-only to clients.
 *
 * The request was authenticated and authorized for the local name before it
 * gets here; upstream credentials never reach the client.
 */
import { randomUUID } from "node:crypto";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { RegistryError } from "../oci/errors.js";
import { parseDigest } from "../oci/digest.js";
import { parseManifestReference, parseReferenceForLookup, type ManifestReference } from "../oci/reference.js";
import type { RequestContext } from "../http/context.js";
import type { Route } from "../http/routes.js";
import { API_VERSION_HEADER, isClientAbort, send, sendJson } from "../http/respond.js";
import { getManifest, formatWarning } from "../http/handlers/manifests.js";
import { getBlob } from "../http/handlers/blobs.js";
import { listTags } from "../http/handlers/listing.js";
import { parseLimit, parseRange } from "../http/request.js";
import type { RegistryDeps } from "../registry/context.js";
import type { ManifestService } from "../registry/manifests.js";
import { manifestUnknown } from "../registry/manifests.js";
import { blobUnknown } from "../registry/blobs.js";
import { ClientError, SourceError } from "../client/errors.js";
import type { ManifestData } from "../client/registry.js";
import { BlobFlight, type FlightCursor } from "./blob-flight.js";
import { MirrorSet, type Mirror } from "./mirror.js";
import { classifyUpstreamError, upstreamError, upstreamNameUnknown, type UpstreamFailure } from "./upstream.js";
import type { MirrorConfig } from "./config.js";
import type { PullLog } from "./retention.js";
import type { HashFactory } from "../hashing/incremental-hash.js";
import { LeaseLocks } from "../registry/leases.js";

export interface MirrorDeps {
  registry: RegistryDeps;
  manifests: ManifestService;
  logger: Logger;
  manifestMaxBytes: number;
  /** When each cached tag was last pulled (retention); absent when no mirror has a retention. */
  pulls?: PullLog;
  /** The registry's hash thread, shared with uploads (blob fetches hash inline: cheaper at a stream's pace). */
  hashes?: HashFactory;
}

/** What ensureManifest did, for the caller's answer and for sync's record. */
export type ManifestOutcome = { kind: "hit" | "revalidated" | "fetched"; digest: string } | { kind: "stale"; digest: string; warning: string };

export class MirrorService {
  readonly set: MirrorSet;
  /** One fetch per blob and repository across every process sharing the metadata store. */
  private readonly fetchLeases: LeaseLocks;
  /** Everything a fetch still does in the background (storing, dropping its session, releasing its lease). */
  private readonly background = new Set<Promise<void>>();
  private closing = false;

  constructor(
    configs: readonly MirrorConfig[],
    private readonly deps: MirrorDeps,
  ) {
    this.set = new MirrorSet(configs, deps.manifestMaxBytes);
    this.fetchLeases = new LeaseLocks(deps.registry.meta, { ttlMs: 30_000, waitMs: 0 });
  }

  /**
   * Opens the way to every upstream ahead of the first pull, in the
   * background: a GET /v2/ sets up the keep-alive connection (and TLS), learns
   * the upstream's auth challenge (so the first pull sends Basic credentials
   * at once instead of after a 401), and runs the client's request path once,
   * so its code is compiled before a client waits on it. On loopback that was
   * 15-25 ms of a fresh mirror's first blob (docs/mirrors.md "Speed"). A
   * failure here means nothing: the first pull reports the upstream's state.
   */
  warmUp(): void {
    for (const mirror of this.set.mirrors) {
      mirror.upstream.client.ping().catch((error: unknown) => {
        this.deps.logger.debug({ upstream: mirror.upstream.url, reason: error instanceof Error ? error.message : String(error) }, "mirror: upstream warm-up ping failed");
      });
    }
  }

  /**
   * containerd sends `?ns=<upstream host>` to a mirror with the upstream's
   * repository name: the name under the matching mirror's prefix, or the
   * name unchanged when no mirror serves that namespace.
   */
  nameForNamespace(name: string, ns: string | null): string {
    if (!ns) return name;
    const mirror = this.set.forNamespace(ns);
    if (!mirror || mirror.owns(name)) return name;
    return `${mirror.prefix}${name}`;
  }

  /** Answers a /v2 request for a mirrored repository; false when the repository is not under any mirror (or the route is local). */
  async handle(ctx: RequestContext, route: Route): Promise<boolean> {
    if (!("name" in route)) return false;
    const mirror = this.set.match(route.name);
    if (!mirror || route.kind === "referrers") return false;
    if (ctx.method !== "GET" && ctx.method !== "HEAD") throw readOnly(route.name, mirror);
    switch (route.kind) {
      case "manifest":
        await this.serveManifest(ctx, mirror, route.name, route.reference);
        return true;
      case "blob":
        await this.serveBlob(ctx, mirror, route.name, route.digest);
        return true;
      case "tags":
        await this.serveTags(ctx, mirror, route.name);
        return true;
      default:
        throw readOnly(route.name, mirror);
    }
  }

  private async serveManifest(ctx: RequestContext, mirror: Mirror, name: string, rawReference: string): Promise<void> {
    const reference = parseReferenceForLookup(rawReference);
    // Clients asking for one manifest at once share one upstream check (a build farm after the TTL ran out).
    const key = `${name}:${rawReference}`;
    let pending = mirror.manifestChecks.get(key);
    if (!pending) {
      pending = this.ensureManifest(mirror, name, reference).finally(() => mirror.manifestChecks.delete(key));
      mirror.manifestChecks.set(key, pending);
    }
    const outcome = await pending;
    if (outcome.kind === "stale") ctx.res.setHeader("Warning", formatWarning(outcome.warning));
    const retention = mirror.config.retention;
    if (retention !== undefined && reference.kind === "tag") this.deps.pulls?.record(name, reference.tag, Date.now(), retention / 10);
    await getManifest(ctx, name, rawReference);
  }

  /** Makes sure the manifest is stored and as fresh as the mirror's rules ask. */
  async ensureManifest(mirror: Mirror, name: string, reference: ManifestReference, options: { revalidate?: boolean } = {}): Promise<ManifestOutcome> {
    const { meta } = this.deps.registry;
    const upstreamName = mirror.upstreamName(name);
    if (reference.kind === "digest") {
      const digest = reference.digest.digest;
      if (await meta.getManifest(name, digest)) {
        mirror.counters.manifestHits++;
        return { kind: "hit", digest };
      }
      const data = await this.fromUpstream(mirror, () => mirror.upstream.client.getManifest(upstreamName, digest), () => manifestUnknown(reference));
      await this.storeManifest(name, reference, data);
      mirror.counters.manifestMisses++;
      return { kind: "fetched", digest };
    }
    const tag = reference.tag;
    const cached = await meta.getTaggedManifest(name, tag);
    if (cached && !options.revalidate && mirror.isFresh(name, tag)) {
      mirror.counters.manifestHits++;
      return { kind: "hit", digest: cached.digest };
    }
    let data: ManifestData | null = null;
    let digest: string;
    try {
      const head = await this.fromUpstream(mirror, () => mirror.upstream.client.headManifest(upstreamName, tag), () => manifestUnknown(reference), true);
      if (head?.digest && cached?.digest === head.digest) {
        mirror.markFresh(name, tag);
        mirror.counters.manifestRevalidated++;
        return { kind: "revalidated", digest: cached.digest };
      }
      // HEAD without a digest (some registries): the manifest itself says.
      data = await this.fromUpstream(mirror, () => mirror.upstream.client.getManifest(upstreamName, head?.digest ?? tag), () => manifestUnknown(reference), true);
      digest = data.digest;
    } catch (error) {
      if (!(error instanceof StaleAllowed)) throw error;
      if (cached && mirror.config.onUpstreamDown === "serve-stale") {
        mirror.counters.staleServed++;
        const warning = `served from the mirror's cache: upstream ${mirror.upstream.url} is unavailable (${failureText(error.failure)}); the tag may be out of date`;
        return { kind: "stale", digest: cached.digest, warning };
      }
      throw upstreamError(mirror.upstream.url, error.failure);
    }
    if (cached?.digest !== digest || !(await meta.getManifest(name, digest))) await this.storeManifest(name, { kind: "tag", tag }, data);
    mirror.markFresh(name, tag);
    mirror.counters.manifestMisses++;
    return { kind: "fetched", digest };
  }

  /** What sync needs to write into the store: the metadata and the push path. */
  get store(): { meta: RegistryDeps["meta"]; manifests: ManifestService } {
    return { meta: this.deps.registry.meta, manifests: this.deps.manifests };
  }

  private async storeManifest(name: string, reference: ManifestReference, data: ManifestData): Promise<void> {
    if (data.bytes.length > this.deps.manifestMaxBytes) {
      throw new RegistryError("UNAVAILABLE", `the upstream's manifest is ${data.bytes.length} bytes, more than this registry's limit of ${this.deps.manifestMaxBytes}`, {
        status: 502,
        detail: { size: data.bytes.length, limit: this.deps.manifestMaxBytes },
      });
    }
    const pushReference = reference.kind === "digest" ? parseManifestReference(reference.digest.digest) : reference;
    try {
      await this.deps.manifests.push({ repository: name, reference: pushReference, body: data.bytes, contentType: data.mediaType, sparse: true });
    } catch (error) {
      // A push would get 400 for this (an invalid manifest, a foreign URL federation's policy refuses);
      // the client asked for a pull: the upstream's content is what this registry cannot take.
      if (error instanceof RegistryError && error.status < 500) {
        throw new RegistryError("UNAVAILABLE", `this registry does not accept the upstream's manifest: ${error.message}`, {
          status: 502,
          detail: { code: error.code, ...(error.detail !== undefined ? { detail: error.detail } : {}) },
        });
      }
      throw error;
    }
  }

  /**
   * Runs one upstream call, keeping the upstream's health: not found becomes
   * `notFound()`, a rate limit or failure the client's 502/503 (or, with
   * `staleAllowed`, a StaleAllowed for the caller to decide).
   */
  private async fromUpstream<T>(mirror: Mirror, call: () => Promise<T>, notFound: () => RegistryError, staleAllowed = false): Promise<T> {
    const { health } = mirror.upstream;
    let failure: UpstreamFailure;
    const wait = health.backoffLeft();
    if (wait > 0) {
      failure = { kind: "rate-limited", retryAfterMs: wait };
    } else {
      try {
        const result = await call();
        health.success();
        return result;
      } catch (error) {
        failure = classifyUpstreamError(unwrap(error), health);
        if (failure.kind === "not-found") {
          health.success();
          throw notFound();
        }
        if (failure.kind === "name-unknown") {
          health.success();
          throw upstreamNameUnknown(mirror.upstream.url, failure.answer);
        }
        if (failure.kind === "down") health.failure(failure.message);
      }
    }
    mirror.counters.upstreamErrors++;
    if (staleAllowed) throw new StaleAllowed(failure);
    throw upstreamError(mirror.upstream.url, failure);
  }

  private async serveBlob(ctx: RequestContext, mirror: Mirror, name: string, rawDigest: string): Promise<void> {
    const { digest } = parseDigest(rawDigest);
    const { meta, blobs } = this.deps.registry;
    const head = ctx.method === "HEAD";
    const linked = await meta.linkedBlob(name, digest);
    if (linked || (await meta.getForeignLayer(name, digest))) {
      // Held here, or a foreign layer (federation answers it, by its policy): the ordinary path.
      if (linked) {
        mirror.counters.blobHits++;
        if (!head) mirror.counters.bytesFromCache += linked.size;
      }
      await getBlob(ctx, name, rawDigest);
      return;
    }
    const upstreamName = mirror.upstreamName(name);
    // Bytes this registry holds for another repository are never linked on the upstream's word (a HEAD with the
    // right size): a hostile upstream that knows a digest would get any client of the mirror a private blob. The
    // upstream proves it has the blob by sending it; storeBlob then keeps the copy already held.
    if (head) {
      const size = await this.fromUpstream(mirror, () => mirror.upstream.client.blobSize(upstreamName, digest), () => blobUnknown(digest));
      if (size === undefined) throw blobUnknown(digest);
      send(ctx.res, 200, { "Docker-Content-Digest": digest, ETag: `"${digest}"`, "Content-Type": "application/octet-stream", "Content-Length": size });
      return;
    }
    const flight = await this.flightFor(mirror, name, digest);
    if (flight) {
      if (parseRange(ctx.req.headers.range, flight.size).kind !== "none") await this.rangeAfterFetch(ctx, mirror, flight, name, rawDigest);
      else await this.follow(ctx, flight);
      return;
    }
    // Another worker process is fetching this blob: answered from the store once it is committed there.
    if (await this.waitForOtherWorker(ctx, name, digest)) {
      mirror.counters.blobFetchesJoined++;
      await getBlob(ctx, name, rawDigest);
      return;
    }
    if (ctx.res.destroyed) return;
    throw new RegistryError("UNAVAILABLE", `another worker's fetch of ${digest} from ${mirror.upstream.url} did not finish; retry`, {
      status: 503,
      headers: { "Retry-After": "1" },
      detail: { digest, upstream: mirror.upstream.url },
    });
  }

  /**
   * Waits while another process holds the fetch's lease; true once the blob
   * is linked here, false when that fetch ended without it (or took longer
   * than WAIT_ELSEWHERE_MS, or the client left).
   */
  private async waitForOtherWorker(ctx: RequestContext, name: string, digest: string): Promise<boolean> {
    const { meta } = this.deps.registry;
    const deadline = Date.now() + WAIT_ELSEWHERE_MS;
    while (Date.now() < deadline && !ctx.res.destroyed) {
      if (await meta.linkedBlob(name, digest)) return true;
      const holder = await meta.leaseHolder(fetchLeaseKey(name, digest));
      if (!holder || holder.expiresAt < Date.now()) return (await meta.linkedBlob(name, digest)) !== null;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return false;
  }

  /** The fetch of this blob for this repository: the one in progress, or a new one; null when another worker process runs it. */
  private async flightFor(mirror: Mirror, name: string, digest: string): Promise<BlobFlight | null> {
    const key = `${name}@${digest}`;
    const running = mirror.flights.get(key);
    if (running) {
      mirror.counters.blobFetchesJoined++;
      return running;
    }
    if (this.closing) {
      throw new RegistryError("UNAVAILABLE", "the registry is shutting down; retry on another replica or once it is back", { status: 503, headers: { "Retry-After": "5" } });
    }
    if (mirror.flights.size >= mirror.config.maxConcurrentFetches) {
      throw new RegistryError("TOOMANYREQUESTS", `the mirror of ${mirror.upstream.url} is fetching ${mirror.flights.size} blobs already; retry shortly`, {
        status: 429,
        headers: { "Retry-After": "5" },
        detail: { limit: mirror.config.maxConcurrentFetches },
      });
    }
    const started = this.startFlight(mirror, name, digest);
    mirror.flights.set(key, started);
    started.then(
      (flight) => {
        if (!flight) mirror.flights.delete(key);
      },
      () => mirror.flights.delete(key),
    );
    mirror.counters.blobMisses++;
    return started;
  }

  /**
   * Starts the fetch holding its lease in the metadata store, so that worker
   * processes (and replicas) sharing the store fetch a blob once: null when
   * another holds it. The lease is held (and renewed) until the flight ends.
   */
  private startFlight(mirror: Mirror, name: string, digest: string): Promise<BlobFlight | null> {
    return new Promise((resolve, reject) => {
      let handedOut = false;
      const leased = this.fetchLeases
        .tryRun(fetchLeaseKey(name, digest), async () => {
          const flight = await this.openFlight(mirror, name, digest);
          handedOut = true;
          resolve(flight);
          await flight.done.catch(() => undefined);
          return true;
        })
        .then(
          (ran) => {
            if (ran === undefined) resolve(null);
          },
          (error: unknown) => {
            if (!handedOut) reject(error);
          },
        );
      this.inBackground(leased);
    });
  }

  /** Tracks a promise close() must wait for; it never rejects unhandled. */
  private inBackground(work: Promise<unknown>): void {
    const tracked: Promise<void> = work.then(
      () => undefined,
      () => undefined,
    );
    this.background.add(tracked);
    void tracked.then(() => this.background.delete(tracked));
  }

  private async openFlight(mirror: Mirror, name: string, digest: string): Promise<BlobFlight> {
    const key = `${name}@${digest}`;
    const opened = await this.fromUpstream(mirror, () => mirror.upstream.client.openBlobWithLength(mirror.upstreamName(name), digest), () => blobUnknown(digest));
    if (opened.length === null) {
      opened.body.destroy();
      throw upstreamError(mirror.upstream.url, { kind: "down", message: "it sent the blob without a Content-Length" });
    }
    // Hashed inline, not on the hash thread: at a stream's pace the thread's postMessage and slab copies cost
    // more CPU (and full GCs) than SHA-256 itself (~1.1 GB/s here); see docs/mirrors.md "Speed".
    const flight = new BlobFlight(digest, opened.length);
    const running = flight
      .run(opened.body, (verified) => this.storeBlob(name, digest, opened.length!, verified))
      .then(
        () => {
          mirror.counters.bytesFetched += flight.size;
          mirror.upstream.health.success();
        },
        (error: unknown) => {
          mirror.counters.upstreamErrors++;
          const message = error instanceof Error ? error.message : String(error);
          mirror.upstream.health.failure(`blob ${digest}: ${message}`);
          this.deps.logger.warn({ repository: name, digest, upstream: mirror.upstream.url, reason: message }, "mirror: blob fetch failed; nothing was stored");
        },
      )
      .finally(() => mirror.flights.delete(key));
    this.inBackground(running);
    return flight;
  }

  /**
   * Stores the verified stream as the blob and links it into `name`. The
   * stream only ends once the digest matched; any failure drops the session,
   * so nothing partial or wrong is left behind.
   */
  async storeBlob(name: string, digest: string, size: number, verified: Readable): Promise<void> {
    const { blobs, meta, digestLocks } = this.deps.registry;
    const id = randomUUID();
    await blobs.startUpload(id);
    try {
      await blobs.appendUpload(id, verified, { offset: 0, exactBytes: size });
      await digestLocks.run(digest, async () => {
        if ((await meta.blobSize(digest)) !== null && (await blobs.stat(digest)) !== null) await blobs.abortUpload(id);
        else await blobs.commitUpload(id, digest);
        await meta.linkBlob(name, digest, size);
      });
    } catch (error) {
      verified.destroy();
      await blobs.abortUpload(id).catch(() => undefined);
      throw error;
    }
  }

  /**
   * A `Range` request for a blob being fetched: answered (206, or 416) from
   * the store once the fetch is committed. A full-body stream can hold its
   * last chunk back until the digest matched; a range has nothing to hold
   * back, so its bytes wait for the check. The client's leaving does not stop
   * the fetch.
   */
  private async rangeAfterFetch(ctx: RequestContext, mirror: Mirror, flight: BlobFlight, name: string, rawDigest: string): Promise<void> {
    const failure = await flight.done.then(
      () => null,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
    if (ctx.res.destroyed) return;
    if (failure) throw upstreamError(mirror.upstream.url, { kind: "down", message: `blob ${flight.digest}: ${failure.message}` });
    await getBlob(ctx, name, rawDigest);
  }

  /** Streams a flight's bytes to one client at the client's own pace; its leaving does not touch the flight. */
  private async follow(ctx: RequestContext, flight: BlobFlight): Promise<void> {
    const { res } = ctx;
    const digest = flight.digest;
    res.writeHead(200, {
      ...API_VERSION_HEADER,
      "Docker-Content-Digest": digest,
      ETag: `"${digest}"`,
      "Content-Type": "application/octet-stream",
      "Content-Length": flight.size,
    });
    const cursor = flight.join();
    try {
      await this.followFrom(ctx, flight, cursor);
    } finally {
      flight.leave(cursor);
    }
  }

  private async followFrom(ctx: RequestContext, flight: BlobFlight, cursor: FlightCursor): Promise<void> {
    const { res } = ctx;
    const digest = flight.digest;
    let offset = 0;
    for (;;) {
      if (res.destroyed) return;
      if (flight.failed) {
        res.destroy();
        return;
      }
      const piece = flight.pieceAt(offset, cursor);
      if (piece.kind === "bytes") {
        offset += piece.bytes.length;
        if (!res.write(piece.bytes)) await drained(res);
      } else if (piece.kind === "wait") {
        await flight.changed();
      } else if (piece.kind === "end") {
        // An empty blob has no last chunk to hold back: wait for its check.
        if (flight.size === 0 && !(await flight.done.then(() => true, () => false))) {
          res.destroy();
          return;
        }
        res.end();
        return;
      } else {
        // Further behind than the window: the rest comes from the store once the blob is committed.
        if (!(await flight.done.then(() => true, () => false))) {
          res.destroy();
          return;
        }
        const rest = await this.deps.registry.blobs.read(digest, { start: offset, end: flight.size - 1 });
        try {
          await pipeline(rest, res);
        } catch (error) {
          rest.destroy();
          res.destroy();
          if (!isClientAbort(error)) this.deps.logger.warn({ err: error, requestId: ctx.requestId }, "mirror: blob stream failed");
        }
        return;
      }
    }
  }

  private async serveTags(ctx: RequestContext, mirror: Mirror, name: string): Promise<void> {
    let tags: string[];
    try {
      tags = await this.fromUpstream(
        mirror,
        () => mirror.upstream.client.listTags(mirror.upstreamName(name)),
        () => new RegistryError("NAME_UNKNOWN", `repository ${name} is not known to the upstream ${mirror.upstream.url}`, { detail: { name } }),
        true,
      );
    } catch (error) {
      if (!(error instanceof StaleAllowed)) throw error;
      if (mirror.config.onUpstreamDown !== "serve-stale") throw upstreamError(mirror.upstream.url, error.failure);
      mirror.counters.staleServed++;
      ctx.res.setHeader("Warning", formatWarning(`tags of the mirror's cache: upstream ${mirror.upstream.url} is unavailable (${failureText(error.failure)})`));
      await listTags(ctx, name);
      return;
    }
    const requested = ctx.query.get("n");
    const limit = parseLimit(requested, 1_000_000_000, requested === null ? 1_000_000_000 : 10_000);
    const last = ctx.query.get("last");
    const sorted = [...new Set(tags)].sort();
    const after = last === null ? sorted : sorted.filter((tag) => tag > last);
    const page = after.slice(0, limit);
    const headers: Record<string, string> = {};
    if (after.length > page.length && page.length > 0) {
      headers.Link = `</v2/${name}/tags/list?n=${limit}&last=${encodeURIComponent(page[page.length - 1]!)}>; rel="next"`;
    }
    sendJson(ctx.res, 200, { name, tags: page }, headers, ctx.method === "HEAD");
  }

  /**
   * Stops every fetch still under way and waits until each has dropped its
   * store session and released its lease, so that nothing writes into a store
   * being closed after this returns. A fetch is not waited for to finish: a
   * large blob could hold shutdown for minutes, and an aborted fetch leaves
   * nothing behind (the next pull fetches it again).
   */
  async close(): Promise<void> {
    this.closing = true;
    const stopping = new Error("the registry is shutting down");
    // A fetch outlives the request that started it. One still opening its upstream is aborted once it has its flight.
    for (const mirror of this.set.mirrors) {
      for (const flight of mirror.flights.values()) flight.then((opened) => opened?.abort(stopping), () => undefined);
    }
    // Closing the upstream clients also ends fetches still opening their upstream.
    this.set.close();
    const deadline = Date.now() + CLOSE_WAIT_MS;
    while (this.background.size > 0 && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([...this.background, new Promise((resolve) => (timer = setTimeout(resolve, deadline - Date.now())))]);
      clearTimeout(timer);
    }
    if (this.background.size > 0) this.deps.logger.warn({ fetches: this.background.size }, "mirror: fetches still cleaning up at shutdown");
  }
}

/** How long close() waits for aborted fetches to drop their sessions and leases. */
const CLOSE_WAIT_MS = 10_000;

/** How long a request waits for another worker's fetch of the blob it wants. */
const WAIT_ELSEWHERE_MS = 10 * 60_000;

function fetchLeaseKey(name: string, digest: string): string {
  return `mirror-fetch:${name}@${digest}`;
}

/** The upstream failed where a cached answer may stand in (the caller decides). */
class StaleAllowed extends Error {
  constructor(readonly failure: Exclude<UpstreamFailure, { kind: "not-found" | "name-unknown" }>) {
    super("upstream unavailable");
  }
}

function failureText(failure: Exclude<UpstreamFailure, { kind: "not-found" | "name-unknown" }>): string {
  return failure.kind === "rate-limited" ? `rate-limited for another ${Math.ceil(failure.retryAfterMs / 1000)} s` : failure.message;
}

/** The client library wraps blob failures in SourceError; the HTTP answer is underneath. */
function unwrap(error: unknown): unknown {
  if (error instanceof SourceError && error.cause instanceof ClientError) return error.cause;
  return error;
}

function readOnly(name: string, mirror: Mirror): RegistryError {
  return new RegistryError(
    "UNSUPPORTED",
    `${name} is under ${mirror.prefix === "" ? "this registry's mirror" : `the mirror prefix ${mirror.prefix}`} of ${mirror.upstream.url}, which is read-only: push to a repository outside it`,
    { status: 405, headers: { Allow: "GET, HEAD" }, detail: { repository: name, prefix: mirror.prefix, upstream: mirror.upstream.url } },
  );
}

function drained(res: NodeJS.WritableStream & { once: (event: string, listener: () => void) => unknown; off: (event: string, listener: () => void) => unknown }): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
  });
}

