/**
 * GET /ferry/v1/notifications (admin only): per endpoint, what was delivered,
 * what failed and why, what is waiting. Read from the shared queue file, so
 * every worker answers the same. Header values and the HMAC secret are
 * never shown; the URL is shown without userinfo or query.
 */
import type { Extension } from "../http/app.js";
import { sendJson } from "../http/respond.js";
import type { EndpointStatus, Notifier } from "./notifier.js";

const ADMIN = [{ type: "admin" as const }];

/** With no endpoint configured the answer is an empty list (not a 404 an operator would take for a wrong URL). */
export function notificationExtensions(notifier: Pick<Notifier, "status" | "source"> | null): Extension[] {
  return [
    {
      method: ["GET", "HEAD"],
      path: /^\/ferry\/v1\/notifications$/,
      access: ADMIN,
      async handle(ctx) {
        const endpoints: EndpointStatus[] = notifier?.status() ?? [];
        // Admin-only JSON: never kept by a browser or proxy cache.
        sendJson(ctx.res, 200, { endpoints, ...(notifier ? { source: notifier.source } : {}) }, { "Cache-Control": "no-store" }, ctx.method === "HEAD");
      },
    },
  ];
}
