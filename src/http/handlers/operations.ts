/** Operational endpoints: readiness (/healthz) and Prometheus metrics. */
import type { ReadinessCheck } from "../../health/readiness.js";
import type { Extension } from "../app.js";
import type { Metrics } from "../metrics.js";
import { send } from "../respond.js";

/** `metricsText` answers /metrics when set: serving threads answer for the whole process (src/threads/metrics.ts). */
export function coreExtensions(metrics: Metrics, readiness?: ReadinessCheck, metricsText?: () => Promise<string>): Extension[] {
  return [
    {
      method: ["GET", "HEAD"],
      path: /^\/healthz$/,
      access: null,
      async handle(ctx) {
        // 503 when this replica cannot reach its metadata or blob store, so a load balancer routes around it.
        const result = readiness ? await readiness.check() : null;
        const status = result === null || result.ok ? 200 : 503;
        const body = JSON.stringify({ status: status === 200 ? "ok" : "unavailable", ...(result ? { checks: result.checks } : {}), ...(result?.details ? { details: result.details } : {}) });
        send(ctx.res, status, { "Content-Type": "application/json", "Cache-Control": "no-store" }, body);
      },
    },
    {
      method: "GET",
      path: /^\/metrics$/,
      access: [{ type: "admin" }],
      async handle(ctx) {
        const body = metricsText ? await metricsText() : await metrics.registry.metrics();
        send(ctx.res, 200, { "Content-Type": metrics.registry.contentType }, body);
      },
    },
  ];
}
