/**
 * The few lines handlers call after a registry action succeeded: they turn
 * the request (id, client address, Host, method, User-Agent, user) into the
 * `request` and `actor` of a distribution event. Nothing is built when no
 * endpoint subscribed to the action.
 */
import type { RequestContext } from "../http/context.js";
import type { EventAction } from "./config.js";
import type { EventRequest, EventTarget } from "./events.js";

export function notify(ctx: RequestContext, action: EventAction, target: EventTarget): void {
  const sink = ctx.services.events;
  if (!sink?.wants(action)) return;
  // A delete names what is gone: there is nothing to fetch, and a manifest delete carries no media type, so a
  // URL would have to guess /blobs/ or /manifests/ (it used to say /blobs/ for manifests). distribution sends none either.
  const url = action === "delete" ? {} : contentUrl(ctx, target);
  sink.emit({ action, target: { ...target, ...url }, request: requestOf(ctx), actor: ctx.principal.user });
}

function requestOf(ctx: RequestContext): EventRequest {
  const { req } = ctx;
  return {
    id: ctx.requestId,
    addr: addressOf(ctx),
    host: headerText(req.headers.host),
    method: ctx.method,
    useragent: headerText(req.headers["user-agent"]),
  };
}

/** Where a consumer fetches the content: this registry as the client addressed it. */
function contentUrl(ctx: RequestContext, target: EventTarget): { url?: string } {
  if (!target.repository || !target.digest) return {};
  const host = headerText(ctx.req.headers.host);
  if (host === "") return {};
  // Only a label in the event (no decision rests on it), so a proxy's X-Forwarded-Proto is taken as given.
  const scheme = headerText(ctx.req.headers["x-forwarded-proto"]).toLowerCase() === "https" ? "https" : "http";
  const kind = target.mediaType === undefined || target.mediaType === "application/octet-stream" ? "blobs" : "manifests";
  return { url: `${scheme}://${host}/v2/${target.repository}/${kind}/${target.digest}` };
}

/**
 * distribution's form: the peer as host:port (Go's RemoteAddr, "[::1]:port"
 * for IPv6), or the address alone when a trusted proxy named the client.
 */
function addressOf(ctx: RequestContext): string {
  const { remoteAddress, remotePort } = ctx.req.socket;
  if (ctx.clientAddress !== remoteAddress || remotePort === undefined) return ctx.clientAddress;
  return remoteAddress.includes(":") ? `[${remoteAddress}]:${remotePort}` : `${remoteAddress}:${remotePort}`;
}

function headerText(value: string | string[] | undefined): string {
  return (Array.isArray(value) ? value[0] : value)?.slice(0, 1024) ?? "";
}
