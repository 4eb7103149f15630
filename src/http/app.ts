/**
 * The request dispatcher: matches the route, checks the repository name,
 * authenticates and authorizes, calls the handler, renders errors, and
 * writes one access-log line. Nothing here knows how anything is stored.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { RegistryError } from "../oci/errors.js";
import { assertRepositoryName } from "../oci/reference.js";
import { OpenAccess, type AccessRequest, type Principal } from "../auth/access.js";
import { performance } from "node:perf_hooks";
import type { AuditFacts, RequestContext, Services } from "./context.js";
import { ALLOWED_METHODS, matchRoute, type Route } from "./routes.js";
import { API_VERSION_HEADER, isClientAbort, sendError, sendPrepared, type Headers } from "./respond.js";
import { getBlob, deleteBlob } from "./handlers/blobs.js";
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from "./handlers/uploads.js";
import { deleteManifest, getManifest, putManifest } from "./handlers/manifests.js";
import { listCatalog, listReferrers, listTags } from "./handlers/listing.js";
import type { Metrics } from "./metrics.js";
import { framingError } from "./framing.js";
import { accessLog, type AccessLog } from "./access-log.js";
import { GuardedBody, bodyIdleError, clientClosed, watchBody, type HandoffOptions } from "./body.js";
import type { ClientAddressResolver } from "./client-address.js";
import type { UploadSlots } from "./upload-slots.js";
import { hasBody } from "./request.js";
import type { Readable } from "node:stream";
import type { ErrorCode } from "../oci/errors.js";
import { threadId } from "node:worker_threads";

/** Endpoints outside /v2 (token service, /ferry/v1 admin API), contributed by their modules. */
export interface Extension {
  method: string | string[];
  path: RegExp;
  /** What the caller needs; null for endpoints that do their own authentication (e.g. /token). */
  access: AccessRequest[] | null;
  handle(ctx: RequestContext, match: RegExpExecArray): Promise<void>;
}

export interface AppOptions {
  services: Services;
  extensions: Extension[];
  metrics: Metrics;
  accessLog: boolean;
  limits: RequestLimits;
  /** Told about every request once it is over (audit log, tracing); none by default. */
  observers?: RequestObserver[];
}

/** What a request did, for observers (src/audit, src/tracing). */
export interface RequestSummary {
  req: IncomingMessage;
  res: ServerResponse;
  requestId: string;
  method: string;
  path: string;
  /** The route kind ("manifest", "blob", …), "extension" for /token and /ferry/v1, "other" when nothing matched. */
  routeKind: string;
  /** The repository named in the path, once the route matched. */
  repository?: string;
  status: number;
  /** Absent when the request never got as far (framing errors). */
  ctx?: RequestContext;
  /** What the handler threw, when it failed. */
  error?: unknown;
  /** False when the connection closed before the answer was complete. */
  completed: boolean;
  seconds: number;
}

export interface RequestObserver {
  /** Called once per request; must not throw and must not block (it runs on the response's event). */
  requestDone(summary: RequestSummary): void;
}

export interface RequestLimits {
  /** Resolves the client's address (X-Forwarded-For from trusted proxies only). */
  clientAddress: ClientAddressResolver;
  /** Per-client cap on upload requests in progress. */
  uploads: UploadSlots;
  /** A body that sends nothing for this long is cut off (408). */
  requestIdleTimeout: number;
  maxHeaderCount: number;
}

/** How long a response may take after its body timed out before the connection is cut regardless. */
const IDLE_GRACE_MS = 2000;
/** How long a connection whose body we stopped reading stays half-open so the client can read our answer. */
const LINGER_MS = 2000;

let requestCounter = 0;
// The serving threads of one process (src/threads/) each count their own requests: the thread is part of the id.
const processTag = threadId === 0 ? process.pid.toString(36) : `${process.pid.toString(36)}.${threadId}`;
/** Where a response finds its request's Exchange (one shared "finish" listener instead of a closure per request). */
const EXCHANGE = Symbol("ferry.exchange");
type TaggedResponse = ServerResponse & { [EXCHANGE]?: Exchange };

/** What every request of one handler shares. */
interface Shared {
  options: AppOptions;
  accessLog: AccessLog;
  observers: RequestObserver[];
}

export function createRequestHandler(options: AppOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { extensions, limits } = options;
  const shared: Shared = {
    options,
    accessLog: accessLog(options.services.logger),
    observers: options.observers ?? [],
  };
  return (req, res) => {
    const exchange = new Exchange(req, res, shared);
    (res as TaggedResponse)[EXCHANGE] = exchange;
    res.on("finish", onFinish);
    if (shared.observers.length > 0) res.once("close", onClose);

    // Bad framing never reaches a handler: answered here, before anything reads the body.
    const framing = framingError(req, limits.maxHeaderCount);
    if (framing) {
      exchange.errorCode = framing.code;
      sendError(res, framing, exchange.method === "HEAD", exchange.requestId);
      return;
    }
    if (hasBody(req)) {
      const idleMs = limits.requestIdleTimeout;
      const code = () => bodyErrorCode(exchange.routeKind);
      const body = (exchange.lazyBody = new LazyBody(req, {
        idleMs,
        idleError: () => bodyIdleError(idleMs, code()),
        // Node's parser never sees a handed-over body end, so this connection cannot carry another request.
        onTaken: () => void (res.shouldKeepAlive = false),
      }));
      guardBody(req, res, body, idleMs, code);
    }
    void run(exchange, extensions, limits);
  };
}

/**
 * One request: its RequestContext and what the access line, the metrics and
 * the observers need once it is over. A class rather than an object literal
 * with getters and closures: building that literal per request was 6% of a
 * cached manifest GET's CPU and 12% of a tag list's (docs/benchmarks-history.md, round 6).
 */
class Exchange implements RequestContext {
  readonly method: string;
  readonly path: string;
  readonly requestId: string;
  readonly clientAddress: string;
  readonly services: Services;
  principal: Principal = { user: null };
  audit?: AuditFacts = undefined;
  /** Set by the dispatcher once the route matched (metrics, observers). */
  routeKind = "other";
  repository: string | undefined = undefined;
  errorCode: string | undefined = undefined;
  failure: unknown = undefined;
  /** Only for requests with a body (hasBody); the rest get an empty one on first use. */
  lazyBody: LazyBody | undefined = undefined;
  /** Whether a handler got as far as seeing this context (observers' `ctx`). */
  dispatched = false;
  private parsedQuery: URLSearchParams | undefined = undefined; // parsed on first use: most requests have no query
  private readonly started = performance.now();
  private readonly queryAt: number;
  private readonly url: string;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly shared: Shared,
  ) {
    this.services = shared.options.services;
    this.requestId = `${processTag}-${(++requestCounter).toString(36)}`;
    const url = (this.url = req.url ?? "/");
    this.queryAt = url.indexOf("?");
    this.path = this.queryAt === -1 ? url : url.slice(0, this.queryAt);
    this.method = req.method ?? "GET";
    this.clientAddress = shared.options.limits.clientAddress.resolve(req.socket.remoteAddress, req.headers["x-forwarded-for"]);
  }

  get query(): URLSearchParams {
    return (this.parsedQuery ??= new URLSearchParams(this.queryAt === -1 ? "" : this.url.slice(this.queryAt + 1)));
  }

  get body(): Readable {
    return (this.lazyBody ??= new LazyBody(this.req)).get();
  }

  seconds(): number {
    return (performance.now() - this.started) / 1e3;
  }

  finished(): void {
    const { options, accessLog, observers } = this.shared;
    const { res } = this;
    const seconds = this.seconds();
    options.metrics.observe(this.method, this.routeKind, res.statusCode, seconds);
    if (options.accessLog) {
      accessLog({ requestId: this.requestId, method: this.method, path: this.path, status: res.statusCode, ms: Math.round(seconds * 1e4) / 10, code: this.errorCode, client: this.clientAddress });
    }
    if (observers.length > 0) this.tell(true, seconds);
  }

  tell(completed: boolean, seconds: number): void {
    const { req, res, requestId, method, path, routeKind, repository } = this;
    const summary: RequestSummary = { req, res, requestId, method, path, routeKind, repository, status: res.statusCode, ctx: this.dispatched ? this : undefined, error: this.failure, completed, seconds };
    for (const observer of this.shared.observers) observer.requestDone(summary);
  }
}

function onFinish(this: TaggedResponse): void {
  this[EXCHANGE]?.finished();
}

function onClose(this: TaggedResponse): void {
  const exchange = this[EXCHANGE];
  if (exchange && !this.writableFinished) exchange.tell(false, exchange.seconds());
}

async function run(exchange: Exchange, extensions: Extension[], limits: RequestLimits): Promise<void> {
  exchange.dispatched = true;
  try {
    await dispatch(exchange, extensions, limits);
  } catch (error) {
    const { req, res, method, requestId, path, services } = exchange;
    exchange.failure = error;
    if (clientWentAway(req, error)) {
      // Nobody is left to answer; an interrupted upload was already rolled back.
      exchange.errorCode = "CLIENT_ABORTED";
      res.destroy();
      return;
    }
    const rendered = sendError(res, error, method === "HEAD", requestId);
    exchange.errorCode = rendered.code;
    if (rendered.status >= 500) logFailure(services, error, rendered, { requestId, method, path });
  }
}

/** The body handlers read: created on first use, so routes that never read it pay nothing. */
class LazyBody {
  private body: GuardedBody | null = null;
  private failure: Error | null = null;

  constructor(
    private readonly req: IncomingMessage,
    private readonly handoff?: HandoffOptions,
  ) {}

  /** Whether every byte of the body arrived (handed-over bodies end without Node's parser seeing it). */
  get whole(): boolean {
    return this.req.complete || this.body?.whole === true;
  }

  get(): GuardedBody {
    if (!this.body) {
      this.body = new GuardedBody(this.req, this.handoff);
      if (this.failure) this.body.fail(this.failure);
    }
    return this.body;
  }

  fail(error: Error): void {
    this.failure ??= error;
    this.body?.fail(error);
  }

  discardRest(): void {
    if (this.body) this.body.discardRest();
    else this.req.resume();
  }
}

/**
 * Makes sure a body ends: cut off when it goes quiet (the handler then answers
 * 408, or the connection is closed if it cannot), and not read further once
 * the answer is out (the connection is closed instead of reading a body
 * nobody wants, as Go's server does for large leftovers).
 */
function guardBody(req: IncomingMessage, res: ServerResponse, body: LazyBody, idleMs: number, code: () => ErrorCode): void {
  const watch = watchBody(req, idleMs, () => {
    body.fail(bodyIdleError(idleMs, code()));
    const cut = setTimeout(() => req.socket.destroy(), IDLE_GRACE_MS);
    cut.unref();
    res.once("close", () => clearTimeout(cut));
  });
  res.once("close", () => {
    if (body.whole) {
      watch.stop();
      return;
    }
    // Nothing more will be read for this request: a handler still reading must not wait for ever.
    body.fail(clientClosed());
    if (req.socket.destroyed) {
      watch.stop();
      return;
    }
    // Half-close and discard what still arrives for a moment, so the client reads our answer rather than a reset.
    body.discardRest();
    req.socket.end();
    const linger = setTimeout(() => req.socket.destroy(), LINGER_MS);
    linger.unref();
    req.socket.once("close", () => {
      clearTimeout(linger);
      watch.stop();
    });
  });
}

function bodyErrorCode(routeKind: string): ErrorCode {
  if (routeKind === "manifest") return "MANIFEST_INVALID";
  if (routeKind === "uploads" || routeKind === "upload") return "BLOB_UPLOAD_INVALID";
  return "UNSUPPORTED";
}

/**
 * Failures we expected (an upstream or storage failing: a RegistryError) are
 * one line at warn with the reason; anything else is a bug and gets its stack.
 */
function logFailure(services: Services, error: unknown, rendered: RegistryError, where: Record<string, string>): void {
  if (error instanceof RegistryError && error.code !== "UNKNOWN") {
    const line = { ...where, status: rendered.status, code: rendered.code, reason: error.message, detail: error.detail };
    if (rendered.status === 507) services.logger.error(line, "request failed: storage full");
    else services.logger.warn(line, "request failed upstream");
    return;
  }
  services.logger.error({ err: error, ...where }, "request failed");
}

function clientWentAway(req: IncomingMessage, error: unknown): boolean {
  if (error instanceof RegistryError) return false;
  return isClientAbort(error) || (req.destroyed && !req.complete);
}

async function dispatch(ctx: Exchange, extensions: Extension[], limits: RequestLimits): Promise<void> {
  const { method, path, services } = ctx;
  const route = matchRoute(path);
  if (hasBody(ctx.req) || (route && isUploadRequest(route, method))) {
    // Every request whose body Ferry reads (blob uploads, manifests, token
    // forms) holds a socket and buffers for as long as the body trickles in,
    // so all of them share the per-client cap. Checked before authentication:
    // an unauthenticated flood holds sockets just the same.
    const release = limits.uploads.acquire(ctx.clientAddress);
    ctx.res.once("close", release);
  }
  if (!route) {
    for (const extension of extensions) {
      const match = extension.path.exec(path);
      const methods = Array.isArray(extension.method) ? extension.method : [extension.method];
      if (!match || !methods.includes(method)) continue;
      ctx.routeKind = "extension";
      if (extension.access) {
        ctx.principal = await services.access.authenticate(ctx.req.headers, ctx.clientAddress);
        await services.access.authorize(ctx.principal, extension.access);
      }
      await extension.handle(ctx, match);
      return;
    }
    throw new RegistryError("UNSUPPORTED", `no endpoint ${path.slice(0, 200)} on this registry`, { status: 404 });
  }
  // containerd asks a mirror for `library/alpine?ns=docker.io`: the repository is the one under that upstream's mirror prefix.
  if (services.mirrors && "name" in route && ctx.req.url?.includes("ns=")) route.name = services.mirrors.nameForNamespace(route.name, ctx.query.get("ns"));
  ctx.routeKind = route.kind;
  ctx.repository = "name" in route ? route.name : undefined;
  const allowed = ALLOWED_METHODS[route.kind];
  if (!allowed.includes(method)) {
    throw new RegistryError("UNSUPPORTED", `${method} is not supported on this endpoint`, {
      status: 405,
      headers: { Allow: allowed.join(", ") },
    });
  }
  if ("name" in route) assertRepositoryName(route.name);
  // Without access control there is nothing to check (the caller stays anonymous): two promises fewer per request.
  if (!(services.access instanceof OpenAccess)) {
    ctx.principal = await services.access.authenticate(ctx.req.headers, ctx.clientAddress);
    await services.access.authorize(ctx.principal, requiredAccess(route, method));
  }
  // Repositories under a mirror prefix are answered by the mirror (src/mirrors/), read-only.
  if (services.mirrors && (await services.mirrors.handle(ctx, route))) return;
  await handle(ctx, route);
}

/** Requests that stream a blob into a session (POST, PATCH, PUT on uploads). */
function isUploadRequest(route: Route, method: string): boolean {
  return (route.kind === "uploads" && method === "POST") || (route.kind === "upload" && (method === "PATCH" || method === "PUT"));
}

function requiredAccess(route: Route, method: string): AccessRequest[] {
  switch (route.kind) {
    case "base":
      return [];
    case "catalog":
      return [{ type: "registry", name: "catalog", actions: ["*"] }];
    default: {
      const write = method === "PUT" || method === "POST" || method === "PATCH";
      const actions: Array<"pull" | "push" | "delete"> = method === "DELETE" ? ["delete"] : write ? ["pull", "push"] : ["pull"];
      // Cancelling one's own upload is part of pushing, not deleting content.
      if (route.kind === "upload" && method === "DELETE") actions.splice(0, 1, "push");
      return [{ type: "repository", name: route.name, actions }];
    }
  }
}

/** `GET /v2/`, the API version check every client starts with: the same answer every time, built once. */
const BASE_BODY = Buffer.from("{}");
const BASE_HEADERS: Headers = { ...API_VERSION_HEADER, "Content-Length": BASE_BODY.length, "Content-Type": "application/json" };

/** Not async: each handler's own promise is handed on (an async wrapper returning it costs two more microtask hops per request). */
function handle(ctx: RequestContext, route: Route): Promise<void> {
  const { method } = ctx;
  switch (route.kind) {
    case "base":
      sendPrepared(ctx.res, 200, BASE_HEADERS, BASE_BODY);
      return Promise.resolve();
    case "catalog":
      return listCatalog(ctx);
    case "tags":
      return listTags(ctx, route.name);
    case "referrers":
      return listReferrers(ctx, route.name, route.digest);
    case "manifest":
      if (method === "PUT") return putManifest(ctx, route.name, route.reference);
      if (method === "DELETE") return deleteManifest(ctx, route.name, route.reference);
      return getManifest(ctx, route.name, route.reference);
    case "blob":
      if (method === "DELETE") return deleteBlob(ctx, route.name, route.digest);
      return getBlob(ctx, route.name, route.digest);
    case "uploads":
      return startUpload(ctx, route.name);
    case "upload":
      if (method === "GET") return uploadStatus(ctx, route.name, route.id);
      if (method === "PATCH") return patchUpload(ctx, route.name, route.id);
      if (method === "PUT") return finishUpload(ctx, route.name, route.id);
      return cancelUpload(ctx, route.name, route.id);
  }
}
