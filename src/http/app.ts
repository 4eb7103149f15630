/**
 * The request dispatcher: matches the route, checks the repository name,
 * authenticates and authorizes, calls the handler, renders errors, and
 * writes one access-log line. Nothing here knows how anything is stored.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { RegistryError } from "../oci/errors.js";
import { assertRepositoryName } from "../oci/reference.js";
import type { AccessRequest, Principal } from "../auth/access.js";
import type { RequestContext, Services } from "./context.js";
import { ALLOWED_METHODS, matchRoute, type Route } from "./routes.js";
import { isClientAbort, send, sendError } from "./respond.js";
import { getBlob, deleteBlob } from "./handlers/blobs.js";
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from "./handlers/uploads.js";
import { deleteManifest, getManifest, putManifest } from "./handlers/manifests.js";
import { listCatalog, listReferrers, listTags } from "./handlers/listing.js";
import type { Metrics } from "./metrics.js";

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
}

let requestCounter = 0;
const processTag = process.pid.toString(36);

export function createRequestHandler(options: AppOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { services, extensions, metrics } = options;
  return (req, res) => {
    const started = process.hrtime.bigint();
    const requestId = `${processTag}-${(++requestCounter).toString(36)}`;
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    const query = new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
    const method = req.method ?? "GET";
    let routeKind = "other";
    let errorCode: string | undefined;

    const finish = () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.observe(method, routeKind, res.statusCode, seconds);
      if (options.accessLog) {
        services.logger.info(
          { requestId, method, path, status: res.statusCode, ms: Math.round(seconds * 1e4) / 10, code: errorCode },
          "request",
        );
      }
    };
    res.once("finish", finish);

    const ctx: RequestContext = { req, res, method, path, query, principal: { user: null }, services, requestId };
    dispatch(ctx, extensions, (kind) => (routeKind = kind)).catch((error: unknown) => {
      if (clientWentAway(req, error)) {
        // Nobody is left to answer; an interrupted upload was already rolled back.
        errorCode = "CLIENT_ABORTED";
        res.destroy();
        return;
      }
      const rendered = sendError(res, error, method === "HEAD", requestId);
      errorCode = rendered.code;
      if (rendered.status >= 500) services.logger.error({ err: error, requestId, method, path }, "request failed");
    });
  };
}

function clientWentAway(req: IncomingMessage, error: unknown): boolean {
  if (error instanceof RegistryError) return false;
  return isClientAbort(error) || (req.destroyed && !req.complete);
}

async function dispatch(ctx: RequestContext, extensions: Extension[], setKind: (kind: string) => void): Promise<void> {
  const { method, path, services } = ctx;
  const route = matchRoute(path);
  if (!route) {
    for (const extension of extensions) {
      const match = extension.path.exec(path);
      const methods = Array.isArray(extension.method) ? extension.method : [extension.method];
      if (!match || !methods.includes(method)) continue;
      setKind("extension");
      if (extension.access) {
        ctx.principal = await services.access.authenticate(ctx.req.headers, ctx.req.socket.remoteAddress ?? "");
        await services.access.authorize(ctx.principal, extension.access);
      }
      await extension.handle(ctx, match);
      return;
    }
    throw new RegistryError("UNSUPPORTED", `no endpoint ${path.slice(0, 200)} on this registry`, { status: 404 });
  }
  setKind(route.kind);
  const allowed = ALLOWED_METHODS[route.kind];
  if (!allowed.includes(method)) {
    throw new RegistryError("UNSUPPORTED", `${method} is not supported on this endpoint`, {
      status: 405,
      headers: { Allow: allowed.join(", ") },
    });
  }
  if ("name" in route) assertRepositoryName(route.name);
  ctx.principal = await services.access.authenticate(ctx.req.headers, ctx.req.socket.remoteAddress ?? "");
  await services.access.authorize(ctx.principal, requiredAccess(route, method));
  await handle(ctx, route);
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

async function handle(ctx: RequestContext, route: Route): Promise<void> {
  const { method } = ctx;
  switch (route.kind) {
    case "base":
      send(ctx.res, 200, { "Content-Type": "application/json" }, "{}");
      return;
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
