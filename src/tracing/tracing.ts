/**
 * OpenTelemetry tracing (config `tracing`, docs/observability.md). Loaded
 * only when enabled (server.ts imports this module dynamically), so a
 * registry without tracing loads no OpenTelemetry code at all.
 *
 * Spans:
 * - one server span per HTTP request (`GET manifest`, `PUT blob upload`…),
 *   child of an incoming W3C `traceparent` when there is one, with the
 *   request id, route, repository, status and user;
 * - a child span per MetaStore and BlobStore call (`metadata.getTaggedManifest`,
 *   `blobstore.read`): the stores are wrapped, no call site changes;
 * - a client span per outgoing federation request (each redirect hop), whose
 *   `traceparent` goes out with the request.
 *
 * Nothing global is registered but the AsyncLocalStorage context manager (so
 * spans find their parent across awaits): the tracer provider and propagator
 * are this module's own, and two registries in one process do not fight.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "pino";
import {
  context,
  diag,
  DiagLogLevel,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  defaultTextMapGetter,
  defaultTextMapSetter,
  type Attributes,
  type Span,
  type Tracer,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from "@opentelemetry/sdk-trace-base";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import type { RequestObserver, RequestSummary } from "../http/app.js";
import { RegistryError } from "../oci/errors.js";
import type { TracingConfig } from "./config.js";
import { tracingHooks, type OutgoingSpan } from "./hooks.js";

export interface Tracing extends RequestObserver {
  /** Runs each request inside its server span, so everything it awaits is a child. */
  wrapHandler(handler: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void;
  /** The same store, with a child span around every method call made while a span is active. */
  wrapStore<T extends object>(layer: "metadata" | "blobstore", store: T): T;
  /** Exports what is still buffered and stops. */
  shutdown(): Promise<void>;
}

/** Where each route kind lives, as `http.route` (low cardinality, unlike the path). */
const ROUTE_TEMPLATES: Record<string, string> = {
  base: "/v2/",
  catalog: "/v2/_catalog",
  tags: "/v2/{name}/tags/list",
  manifest: "/v2/{name}/manifests/{reference}",
  uploads: "/v2/{name}/blobs/uploads/",
  upload: "/v2/{name}/blobs/uploads/{id}",
  blob: "/v2/{name}/blobs/{digest}",
  referrers: "/v2/{name}/referrers/{digest}",
};

/** Spans waiting for export, at most: past it new spans are dropped rather than memory growing while the collector is down. */
const MAX_QUEUED_SPANS = 4096;
/** Failed exports are reported in the server log this often at most. */
const WARN_EVERY_MS = 60_000;

let contextManagerInstalled = false;

export async function startTracing(config: TracingConfig, logger: Logger): Promise<Tracing> {
  installContextManager();
  reportExportFailures(logger);
  const exporter = new OTLPTraceExporter({
    ...(config.endpoint ? { url: config.endpoint } : {}),
    headers: config.headers,
    timeoutMillis: config.exportTimeout,
  });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": config.serviceName, "process.pid": process.pid }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: MAX_QUEUED_SPANS, scheduledDelayMillis: 1000, exportTimeoutMillis: config.exportTimeout })],
  });
  const tracer = provider.getTracer("ferry");
  const propagator = new W3CTraceContextPropagator();
  const outgoing = (method: string, url: URL, kind: string) => startOutgoing(tracer, propagator, method, url, kind);
  tracingHooks.outgoing = outgoing;
  // The exporter's headers may hold a collector key: log where, never what.
  logger.info({ endpoint: config.endpoint ?? "(OTEL_EXPORTER_OTLP_* or http://localhost:4318/v1/traces)", sampleRatio: config.sampleRatio }, "tracing enabled");

  const serverSpans = new WeakMap<IncomingMessage, Span>();
  return {
    wrapHandler(handler) {
      return (req, res) => {
        const parent = propagator.extract(ROOT_CONTEXT, req.headers, defaultTextMapGetter);
        const method = req.method ?? "GET";
        const span = tracer.startSpan(method, { kind: SpanKind.SERVER, attributes: requestAttributes(req, method) }, parent);
        // An unsampled request records nothing, so it needs no active context: while no request is sampled,
        // the AsyncLocalStorage behind the context stays unused and costs nothing.
        if (!span.isRecording()) return handler(req, res);
        serverSpans.set(req, span);
        context.with(trace.setSpan(parent, span), () => handler(req, res));
      };
    },
    requestDone(summary: RequestSummary) {
      const span = serverSpans.get(summary.req);
      if (!span) return;
      serverSpans.delete(summary.req);
      endServerSpan(span, summary);
    },
    wrapStore(layer, store) {
      return tracedStore(tracer, layer, store);
    },
    async shutdown() {
      if (tracingHooks.outgoing === outgoing) tracingHooks.outgoing = undefined;
      // The last export may fail (collector down): that must not fail the registry's shutdown.
      await provider.shutdown().catch((error: unknown) => logger.warn({ detail: String(error).slice(0, 300) }, "tracing: last spans could not be exported"));
    },
  };
}

function installContextManager(): void {
  if (contextManagerInstalled) return;
  contextManagerInstalled = context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

let diagInstalled = false;
function reportExportFailures(logger: Logger): void {
  if (diagInstalled) return;
  diagInstalled = true;
  let last = 0;
  const report = (message: string) => {
    const now = Date.now();
    if (now - last < WARN_EVERY_MS) return;
    last = now;
    logger.warn({ detail: message.slice(0, 500) }, "tracing: spans could not be exported");
  };
  diag.setLogger({ error: report, warn: report, info: () => {}, debug: () => {}, verbose: () => {} }, DiagLogLevel.WARN);
}

function requestAttributes(req: IncomingMessage, method: string): Attributes {
  const attributes: Attributes = { "http.request.method": method };
  const userAgent = req.headers["user-agent"];
  if (userAgent) attributes["user_agent.original"] = userAgent.slice(0, 300);
  // Ferry keeps its own request id (ferry.request_id); a proxy's X-Request-Id is recorded beside it, never adopted.
  const upstreamId = req.headers["x-request-id"];
  if (typeof upstreamId === "string" && /^[\x21-\x7e]{1,128}$/.test(upstreamId)) attributes["ferry.upstream_request_id"] = upstreamId;
  return attributes;
}

function endServerSpan(span: Span, summary: RequestSummary): void {
  const template = ROUTE_TEMPLATES[summary.routeKind];
  span.updateName(`${summary.method} ${summary.routeKind}`);
  const attributes: Attributes = {
    "url.path": summary.path.slice(0, 1000),
    "http.response.status_code": summary.status,
    "ferry.request_id": summary.requestId,
    "ferry.route_kind": summary.routeKind,
  };
  if (template) attributes["http.route"] = template;
  if (summary.repository) attributes["ferry.repository"] = summary.repository;
  if (summary.ctx) {
    attributes["client.address"] = summary.ctx.clientAddress;
    if (summary.ctx.principal.user) attributes["enduser.id"] = summary.ctx.principal.user;
  }
  if (!summary.completed) attributes["ferry.aborted"] = true;
  if (summary.error instanceof RegistryError) attributes["error.type"] = summary.error.code;
  else if (summary.error !== undefined) attributes["error.type"] = "internal";
  span.setAttributes(attributes);
  // As the HTTP conventions say: a 4xx is the client's doing, not a server span error.
  if (summary.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: summary.error instanceof Error ? withoutQueries(summary.error.message).slice(0, 300) : undefined });
  span.end();
}

/**
 * Error messages name URLs (a fetcher refusal quotes the foreign URL, query
 * and all); a presigned URL's query is a credential, so no URL in a span
 * status keeps its query or fragment.
 */
export function withoutQueries(message: string): string {
  return message.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s?#"']*)[?#][^\s"']*/gi, "$1");
}

function startOutgoing(tracer: Tracer, propagator: W3CTraceContextPropagator, method: string, url: URL, kind: string): OutgoingSpan {
  const parent = context.active();
  const port = url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port);
  const span = tracer.startSpan(
    method,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        "http.request.method": method,
        "server.address": url.hostname,
        "server.port": port,
        // No query: foreign URLs may be presigned, and their signature is a credential.
        "url.full": `${url.protocol}//${url.host}${url.pathname}`,
        "ferry.fetch": kind,
      },
    },
    parent,
  );
  const headers: Record<string, string> = {};
  propagator.inject(trace.setSpan(parent, span), headers, defaultTextMapSetter);
  let ended = false;
  return {
    headers,
    end(status, error) {
      if (ended) return;
      ended = true;
      if (status !== null) span.setAttribute("http.response.status_code", status);
      if (error !== undefined || status === null || status >= 400) {
        const message = error instanceof Error ? withoutQueries(error.message).slice(0, 300) : status !== null ? `HTTP ${status}` : undefined;
        span.setStatus({ code: SpanStatusCode.ERROR, message });
        if (error !== undefined) span.setAttribute("error.type", (error as NodeJS.ErrnoException).code ?? "network");
      }
      span.end();
    },
  };
}

/**
 * A proxy that puts a span around every method call of `store` made inside an
 * active span (background jobs outside a request make none: lease renewals
 * would drown the traces). Methods run on the real object, so private fields
 * and `instanceof` keep working; optional methods a driver lacks stay absent.
 */
function tracedStore<T extends object>(tracer: Tracer, layer: string, store: T): T {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== "function" || property === "constructor" || typeof property === "symbol") return value;
      let traced = wrapped.get(property);
      if (!traced) {
        traced = tracedMethod(tracer, `${layer}.${property}`, value as (...args: unknown[]) => unknown, target);
        wrapped.set(property, traced);
      }
      return traced;
    },
  });
}

function tracedMethod(tracer: Tracer, name: string, method: (...args: unknown[]) => unknown, target: object): (...args: unknown[]) => unknown {
  return (...args: unknown[]) => {
    const parent = context.active();
    if (!trace.getSpan(parent)?.isRecording()) return method.apply(target, args);
    const span = tracer.startSpan(name, { kind: SpanKind.INTERNAL }, parent);
    let result: unknown;
    try {
      result = context.with(trace.setSpan(parent, span), () => method.apply(target, args));
    } catch (error) {
      failed(span, error);
      throw error;
    }
    if (isPromise(result)) {
      // A derived promise: the caller still gets (and handles) the original.
      result.then(
        () => span.end(),
        (error: unknown) => failed(span, error),
      );
    } else {
      span.end();
    }
    return result;
  };
}

function failed(span: Span, error: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message.slice(0, 300) : undefined });
  span.setAttribute("error.type", error instanceof Error ? error.constructor.name : "error");
  span.end();
}

function isPromise(value: unknown): value is Promise<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}

