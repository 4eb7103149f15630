/**
 * GET /ferry/v1/notifications (admin only): per endpoint, what was delivered,
 * what failed and why, what is waiting. Read from the shared queue file, so
 * every worker answers the same. Header values and the HMAC secret are
 * never shown; the URL is shown without userinfo or query.
 */
import type { Extension } from "../http/app.js";
import { sendJson } from "../http/respond.js";
import type { Notifier } from "./notifier.js";

const ADMIN = [{ type: "admin" as const }];

export function notificationExtensions(notifier: Notifier): Extension[] {
  return [
    {
      method: ["GET", "HEAD"],
      path: /^\/ferry\/v1\/notifications$/,
      access: ADMIN,
      async handle(ctx) {
        sendJson(ctx.res, 200, { endpoints: notifier.status(), source: notifier.source }, {}, ctx.method === "HEAD");
      },
    },
  ];
}
