/**
 * Assembles a running registry from a Config: stores, use cases, HTTP server,
 * background jobs. `startRegistry` is what `ferry serve` and the tests call.
 */
import { createServer, type Server } from "node:http";
import { dirname, join, resolve } from "node:path";
import { hostname } from "node:os";
import type { AddressInfo } from "node:net";
import { pino, type Logger } from "pino";
import type { Config } from "./config/schema.js";
import type { BlobStore } from "./storage/blob-store.js";
import { FilesystemBlobStore } from "./storage/filesystem.js";
import { ensureWritableDirectory } from "./storage/writable-dir.js";
import { openMetaStore } from "./metadata/open.js";
import { createFederation } from "./federation/create.js";
import { createAccessController } from "./auth/create.js";
import { KeyedMutex } from "./registry/keyed-mutex.js";
import { LeaseLocks } from "./registry/leases.js";
import type { RegistryDeps } from "./registry/context.js";
import { OffThreadHashes } from "./hashing/off-thread-hashes.js";
import { keepFreedHeapMapped } from "./native/addon.js";
import type { AccessController } from "./auth/access.js";
import type { Federation } from "./federation/federation.js";
import { BlobService } from "./registry/blobs.js";
import { UploadService } from "./registry/uploads.js";
import { ManifestService } from "./registry/manifests.js";
import { ListingService } from "./registry/listing.js";
import { collectGarbage, type GcReport } from "./registry/gc.js";
import { createRequestHandler, type Extension } from "./http/app.js";
import type { Services } from "./http/context.js";
import { Metrics } from "./http/metrics.js";
import { coreExtensions } from "./http/handlers/operations.js";
import { ReadinessCheck } from "./health/readiness.js";
import { invalidationDetails, registerInvalidationMetrics } from "./metadata/invalidation/report.js";
import { storeProbes } from "./health/probes.js";
import { ClientAddressResolver } from "./http/client-address.js";
import { UploadSlots } from "./http/upload-slots.js";
import { handleClientError, refuseConnect, refuseExpectation } from "./http/client-error.js";
import { startForeignRecheck } from "./federation/recheck.js";
import { startNotifications } from "./notifications/create.js";
import type { Tracing } from "./tracing/tracing.js";
import { openAuditLog, type AuditLog } from "./audit/audit-log.js";
import { AuditObserver } from "./audit/events.js";
import { webUiExtensions } from "./browse/create.js";
import { GcLog } from "./browse/gc.js";
import { createMirrors } from "./mirrors/create.js";

export interface RunningRegistry {
  /** Base URL, e.g. http://127.0.0.1:5000 */
  url: string;
  port: number;
  deps: RegistryDeps;
  services: Services;
  gc(options?: { gracePeriodMs?: number; untagged?: boolean }): Promise<GcReport>;
  purgeUploads(): Promise<number>;
  /** This server's own metrics (one serving thread's, when there are several). */
  metrics: Metrics;
  /**
   * Stops accepting, lets requests in flight finish (up to graceMs; idle
   * keep-alive connections are closed at once), then closes like close().
   * `ferry serve` stops this way on SIGTERM.
   */
  drain(graceMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Extra endpoints (tests, plugins). */
  extensions?: Extension[];
  /**
   * Opens the listening socket to serve on (a serving thread's own, src/threads/listen.ts) instead of
   * binding config.listen; called once the server is ready to accept, not before: a socket joins its
   * port's SO_REUSEPORT group when it listens, and the kernel then hands it a share of new connections,
   * which would wait in its backlog for as long as the rest of start-up takes (docs/benchmarks-history.md, "Speed round 6").
   */
  listenSocket?: () => Promise<number>;
  /** Schedule garbage collection and upload purging here (default true): one serving thread of a process does. */
  scheduledJobs?: boolean;
  /**
   * Check the S3 bucket's permissions (the blob store's and the proxy cache's), finish commits a crash
   * interrupted and clean the proxy cache's stale uploads before serving (default true). A process's extra
   * serving threads skip all of it: the main thread has just done it, and a thread's start-up must not wait
   * on an object store that has gone silent since (it would then never serve).
   */
  startupChecks?: boolean;
  /** What /metrics answers (default: this server's own registry); serving threads answer for the whole process. */
  metricsText?: () => Promise<string>;
}

export function createLogger(config: Config): Logger {
  return pino(
    {
      level: config.log.level,
      base: { pid: process.pid },
      // Secrets must never reach logs, whatever a future log call passes in.
      redact: {
        paths: ["authorization", "*.authorization", "headers.authorization", "password", "*.password", "token", "*.token", "secret", "*.secret"],
        censor: "[redacted]",
      },
    },
    // Asynchronous writes (lines written while a write is in flight are
    // coalesced): a synchronous write per access-log line costs a third of
    // the manifest GET throughput. No minimum buffer, so a warning shows at once.
    // Each write(2) is whole lines of at most PIPE_BUF (4 KiB) bytes: the serving threads (and
    // `--workers` processes) share stdout, and a pipe (journald, docker) keeps such a write whole
    // instead of interleaving it with another thread's.
    pino.destination({ fd: 1, sync: false, maxWrite: 4096 }),
  );
}

export function splitListen(listen: string): { host: string; port: number } {
  const index = listen.lastIndexOf(":");
  const host = listen.slice(0, index).replace(/^\[|\]$/g, "");
  return { host, port: Number(listen.slice(index + 1)) };
}

export async function startRegistry(config: Config, options: StartOptions = {}): Promise<RunningRegistry> {
  const logger = options.logger ?? createLogger(config);
  const dataDir = resolve(config.data);
  // Checked before anything opens a file in it: the user gets one sentence, not an EACCES from SQLite.
  ensureWritableDirectory(dataDir, "data directory");
  if (config.storage.driver === "filesystem" && config.storage.filesystem.path) {
    ensureWritableDirectory(resolve(config.storage.filesystem.path), "blob directory (storage.filesystem.path)");
  }
  if (config.metadata.sqlite.path) ensureWritableDirectory(dirname(resolve(config.metadata.sqlite.path)), "metadata directory (metadata.sqlite.path)");
  // The S3 driver (and the AWS SDK behind it) is loaded only when configured; it checks the bucket itself.
  const blobs =
    config.storage.driver === "s3"
      ? await (await import("./storage/s3-open.js")).openS3BlobStore(config.storage, options.startupChecks !== false)
      : new FilesystemBlobStore({
          root: config.storage.filesystem.path ? resolve(config.storage.filesystem.path) : dataDir,
          fsync: config.storage.filesystem.fsync,
          directIo: config.storage.filesystem.directIo,
        });
  // What start-up has opened so far: closed in reverse order by close(), or at once when a later step fails.
  const opened = new OpenedResources();
  opened.add(() => blobs.close());
  if (blobs instanceof FilesystemBlobStore) await opened.step(() => blobs.init());
  const metadataPath = config.metadata.sqlite.path ? resolve(config.metadata.sqlite.path) : join(dataDir, "metadata.db");
  // Like the S3 driver, OpenTelemetry is loaded only when configured: off, tracing costs nothing.
  const tracing: Tracing | undefined = config.tracing.enabled
    ? await opened.step(async () => (await import("./tracing/tracing.js")).startTracing(config.tracing, logger))
    : undefined;
  if (tracing) opened.add(() => tracing.shutdown());
  const store = await opened.step(() => openMetaStore(config.metadata, dataDir));
  const meta = tracing ? tracing.wrapStore("metadata", store) : store;
  opened.add(() => meta.close());
  const storeForRequests = tracing ? tracing.wrapStore("blobstore", blobs) : blobs;
  // A bad htpasswd file, federation setting or audit path must not leave the database open.
  const audit: AuditLog | undefined = config.audit.enabled
    ? await opened.step(() => openAuditLog(config.audit.path ? resolve(config.audit.path) : join(dataDir, "audit.log"), config.audit.maxQueueBytes, logger))
    : undefined;
  if (audit) opened.add(() => audit.close());
  const access: AccessController = await opened.step(() =>
    createAccessController(config, { dataDir, logger, meta }),
  );
  opened.add(() => access.close?.());
  const federation: Federation = await opened.step(async () =>
    createFederation(config, { dataDir, logger, access, meta, cacheStore: await proxyCacheStore(config, options.startupChecks !== false), startupCleanup: options.startupChecks !== false }),
  );
  opened.add(() => federation.close());
  const deps: RegistryDeps = {
    blobs: storeForRequests,
    meta,
    federation,
    access,
    logger,
    limits: { manifestMaxBytes: config.manifests.maxBytes, sparseManifests: config.manifests.sparse },
    // Blob commits and garbage collection exclude each other per digest across processes and replicas.
    digestLocks: new LeaseLocks(meta).mutex("blob:", new KeyedMutex()),
  };
  const hashing = new OffThreadHashes(logger);
  opened.add(() => hashing.close());
  // Pushes free ~100 MiB of body chunks each; without this glibc returns that
  // heap to the kernel and the next push pays a page fault per 4 KiB again.
  if (!keepFreedHeapMapped()) logger.debug("allocator tuning unavailable (no native addon or not glibc)");
  const uploads = new UploadService(deps, hashing, undefined, config.uploads.maxOpenSessions);
  // Finish commits a crash interrupted before this process serves anything.
  if (options.startupChecks !== false) await opened.step(() => uploads.recoverCommits());
  const services: Services = {
    blobs: new BlobService(deps),
    uploads,
    manifests: new ManifestService(deps),
    listing: new ListingService(deps),
    federation,
    access,
    blobStore: storeForRequests,
    logger,
    manifestMaxBytes: config.manifests.maxBytes,
    blobTransfer: config.storage.blobTransfer,
  };
  const metrics = new Metrics();
  // Webhooks (docs/notifications.md): handlers emit into services.events.
  const notifications = await opened.step(() => startNotifications(config.notifications, { metadataPath, logger, metrics: metrics.registry, federation }));
  opened.add(() => notifications.close());
  services.events = notifications.sink;
  // Pull-through mirrors (docs/mirrors.md): the dispatcher hands them requests under their prefixes.
  const mirrors = await opened.step(() => createMirrors(config, { registry: deps, manifests: services.manifests, logger, metrics: metrics.registry, metadataPath, hashes: hashing }));
  if (mirrors) {
    opened.add(() => mirrors.close());
    services.mirrors = mirrors.service;
  }
  audit?.countDropsIn(metrics.registry);
  // Every collection (scheduled, `ferry`-requested or from the UI) is recorded for GET /ferry/v1/gc.
  const gcLog = new GcLog();
  const gc = async (o: { gracePeriodMs?: number; untagged?: boolean } = {}) => {
    const report = await gcLog.run(() => collectGarbage(deps, { gracePeriodMs: o.gracePeriodMs ?? config.gc.gracePeriod, untagged: o.untagged ?? config.gc.untagged }));
    notifications.gcFinished(report);
    return report;
  };
  // /healthz: this replica reaches its stores, each probe answering within 1.5 s (docs/deployment.md).
  const readiness = new ReadinessCheck(
    storeProbes({
      meta,
      blobs: storeForRequests,
      filesystemRoot: blobs instanceof FilesystemBlobStore ? (config.storage.filesystem.path ? resolve(config.storage.filesystem.path) : dataDir) : undefined,
      sqlitePath: config.metadata.driver === "sqlite" ? metadataPath : undefined,
    }),
    { timeoutMs: 1500, cacheMs: 500, details: () => {
        const cacheInvalidation = invalidationDetails(store);
        return cacheInvalidation ? { cacheInvalidation } : undefined;
      } },
  );
  registerInvalidationMetrics(metrics.registry, store);
  const extensions = [
    ...coreExtensions(metrics, readiness, options.metricsText),
    ...(access.extensions ?? []),
    ...(federation.extensions ?? []),
    ...notifications.extensions,
    ...(mirrors?.extensions ?? []),
    ...(config.ui.enabled ? await opened.step(() => webUiExtensions(deps, gcLog, () => gc())) : []),
    ...(options.extensions ?? []),
  ];
  const requestHandler = createRequestHandler({
    services,
    extensions,
    metrics,
    accessLog: config.log.accessLog,
    observers: [...(audit ? [new AuditObserver(audit, logger)] : []), ...(tracing ? [tracing] : [])],
    limits: {
      clientAddress: new ClientAddressResolver(config.trustedProxies),
      uploads: new UploadSlots(config.http.maxUploadsPerClient),
      requestIdleTimeout: config.http.requestIdleTimeout,
      maxHeaderCount: config.http.maxHeaderCount,
    },
  });
  const handler = tracing ? tracing.wrapHandler(requestHandler) : requestHandler;
  const server = createHttpServer(config.http, handler);

  const { host, port } = splitListen(config.listen);
  await opened.step(() => (options.listenSocket === undefined ? listen(server, host, port) : options.listenSocket().then((fd) => listenOnFd(server, fd))));
  const actualPort = (server.address() as AddressInfo).port;
  // Every interface (":5000"): the URL this machine itself reaches it by.
  const hostForUrl = host === "" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  notifications.listening(`${hostname()}:${actualPort}`);

  const purgeUploads = () => uploads.purgeStale(config.uploads.purgeAfter);

  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, job: () => Promise<unknown>, what: string) => {
    if (ms <= 0) return;
    const timer = setInterval(() => {
      job().catch((error: unknown) => logger.error({ err: error }, `${what} failed`));
    }, ms);
    timer.unref();
    timers.push(timer);
  };
  if (options.scheduledJobs !== false) {
    every(config.uploads.purgeInterval, purgeUploads, "purging stale uploads");
    every(config.gc.interval, async () => logger.info(await gc(), "garbage collection"), "garbage collection");
  }
  // Foreign source health on /metrics, and the re-check schedule (federation.recheck).
  const foreignSources = startForeignRecheck(federation, meta, config.federation, logger, metrics.registry);

  const running: RunningRegistry = {
    url: `http://${hostForUrl}:${actualPort}`,
    port: actualPort,
    deps,
    services,
    gc,
    purgeUploads,
    metrics,
    async drain(graceMs: number) {
      await drainConnections(server, graceMs);
      await running.close();
    },
    async close() {
      for (const timer of timers) clearInterval(timer);
      await foreignSources.stop();
      await new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        server.closeAllConnections();
      });
      await opened.closeAll();
    },
  };
  return running;
}

/**
 * The stores, workers and files start-up opens, each with how to close it.
 * One list, so that neither close() nor a failing start-up step can forget one.
 */
class OpenedResources {
  private readonly closers: Array<() => unknown> = [];

  add(close: () => unknown): void {
    this.closers.push(close);
  }

  /** Closes in reverse order of opening (notifications before the queue's database, the database before the blob store). */
  async closeAll(): Promise<void> {
    for (const close of this.closers.splice(0).reverse()) await close();
  }

  /** Runs one start-up step; when it fails, everything opened so far is closed before the error goes on. */
  async step<T>(run: () => T | Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      await this.closeAll();
      throw error;
    }
  }
}

/**
 * The HTTP server with the limits of config `http` (docs/security.md "Limits").
 * No total request timeout: a push may take hours as long as its body keeps
 * moving, which the dispatcher's idle-body timeout checks.
 */
function createHttpServer(limits: Config["http"], handler: ReturnType<typeof createRequestHandler>): Server {
  const server = createServer(
    {
      keepAliveTimeout: limits.keepAliveTimeout,
      headersTimeout: limits.headersTimeout,
      requestTimeout: 0,
      maxHeaderSize: limits.maxHeaderBytes,
      // A missing Host is answered by framingError in the spec's format, not by Node's bare 400.
      requireHostHeader: false,
      // How often Node looks for connections past headersTimeout: often enough that the timeout means what it says.
      connectionsCheckingInterval: Math.min(Math.max(Math.floor(limits.headersTimeout / 4), 100), 5000),
    },
    handler,
  );
  // Node would silently drop headers past its count limit, which the framing checks then could not see;
  // the dispatcher refuses requests with more than http.maxHeaderCount instead (the size limit bounds them).
  server.maxHeadersCount = 0;
  server.on("clientError", handleClientError);
  server.on("connect", refuseConnect);
  server.on("checkExpectation", refuseExpectation);
  return server;
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolveListen, reject) => {
    const fail = (error: NodeJS.ErrnoException) => reject(listenError(error, host, port));
    server.once("error", fail);
    // An empty host is every interface (IPv6 and IPv4 where the system has both).
    server.listen(port, host === "" ? undefined : host, () => {
      server.off("error", fail);
      resolveListen();
    });
  });
}

/**
 * Closes the listener and waits for the connections with a request in
 * flight to finish it, up to graceMs. Connections between requests are
 * closed as soon as they are idle (checked every 50 ms: a keep-alive client
 * may start another request until then, which is answered).
 */
async function drainConnections(server: Server, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolveClosed) => server.close(() => resolveClosed()));
  const deadline = Date.now() + graceMs;
  let timer: NodeJS.Timeout | undefined;
  const idleSweep = new Promise<void>((resolveSweep) => {
    const sweep = () => {
      server.closeIdleConnections();
      if (Date.now() >= deadline) return resolveSweep();
      timer = setTimeout(sweep, 50);
    };
    sweep();
  });
  await Promise.race([closed, idleSweep]);
  clearTimeout(timer);
}

/** Serves on a socket that is already bound and listening (its descriptor is this server's to close). */
function listenOnFd(server: Server, fd: number): Promise<void> {
  return new Promise((resolveListen, reject) => {
    server.once("error", reject);
    server.listen({ fd }, () => {
      server.off("error", reject);
      resolveListen();
    });
  });
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EACCES: "permission denied",
  EADDRNOTAVAIL: "address not available",
};

/**
 * One wording whether the process listens itself or, as a cluster worker,
 * through the primary (which reports "bind EADDRINUSE" instead).
 */
export function listenError(error: NodeJS.ErrnoException, host: string, port: number): Error {
  const reason = error.code ? LISTEN_ERRORS[error.code] : undefined;
  if (!reason) return error;
  return Object.assign(new Error(`listen ${error.code}: ${reason} ${host === "" ? "(every interface)" : host}:${port}`), { code: error.code });
}

/**
 * Where the federation proxy cache keeps its bytes: beside the blobs on S3
 * (under `<prefix>federation-cache/`, so every replica shares one cache and
 * one byte budget), or the federation's own default on the filesystem.
 */
async function proxyCacheStore(config: Config, check: boolean): Promise<BlobStore | undefined> {
  if (config.storage.driver !== "s3" || !config.storage.s3) return undefined;
  const { openS3BlobStore } = await import("./storage/s3-open.js");
  const s3 = config.storage.s3;
  const prefix = s3.prefix === "" || s3.prefix.endsWith("/") ? s3.prefix : `${s3.prefix}/`;
  return openS3BlobStore({ ...config.storage, s3: { ...s3, prefix: `${prefix}federation-cache/` } }, check);
}
