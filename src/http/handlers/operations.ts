/** Operational endpoints: liveness and Prometheus metrics. */
import type { Extension } from "../app.js";
import type { Metrics } from "../metrics.js";
import { send } from "../respond.js";

export function coreExtensions(metrics: Metrics): Extension[] {
  return [
    {
      method: ["GET", "HEAD"],
      path: /^\/healthz$/,
      access: null,
      async handle(ctx) {
        send(ctx.res, 200, { "Content-Type": "application/json" }, '{"status":"ok"}');
      },
    },
    {
      method: "GET",
      path: /^\/metrics$/,
      access: [{ type: "admin" }],
      async handle(ctx) {
        const body = await metrics.registry.metrics();
        send(ctx.res, 200, { "Content-Type": metrics.registry.contentType }, body);
      },
    },
  ];
}
