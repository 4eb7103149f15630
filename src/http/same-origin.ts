/**
 * Cross-site request refusal for the state-changing endpoints of /ferry/v1
 * (POST /ferry/v1/gc, POST /ferry/v1/foreign/verify). The UI sends
 * `Authorization: Bearer` from script, but a browser that once answered a
 * Basic challenge (someone opened /v2/ in a tab) keeps those credentials and
 * attaches them to any request to this origin, including a plain form POST
 * from another site, which needs no CORS preflight. So a POST that a browser
 * marks as coming from another site is refused whatever its credentials.
 * Non-browser clients (ferry, curl) send neither Sec-Fetch-Site nor Origin.
 */
import type { RequestContext } from "./context.js";
import { RegistryError } from "../oci/errors.js";

export function refuseCrossSite(ctx: RequestContext): void {
  const headers = ctx.req.headers;
  const site = headers["sec-fetch-site"];
  // Every current browser sends Sec-Fetch-Site: "same-origin" from the UI, "none" when typed into the address bar.
  if (typeof site === "string") {
    if (site === "same-origin" || site === "none") return;
    throw crossSite();
  }
  // Older browsers: an Origin that names another host than the one addressed.
  const origin = headers.origin;
  if (typeof origin !== "string") return;
  const forwarded = headers["x-forwarded-host"];
  const host = (typeof forwarded === "string" ? forwarded.split(",")[0]!.trim() : undefined) ?? headers.host;
  let originHost: string | null;
  try {
    originHost = new URL(origin).host;
  } catch {
    originHost = null; // "null" (sandboxed or privacy-sensitive contexts) is never this registry
  }
  if (originHost === null || host === undefined || originHost.toLowerCase() !== host.toLowerCase()) throw crossSite();
}

function crossSite(): RegistryError {
  return new RegistryError("DENIED", "cross-site requests may not change anything here; use the web UI or the API from a client", { status: 403 });
}
