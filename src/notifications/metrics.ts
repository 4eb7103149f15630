/**
 * Delivery counters per endpoint on /metrics, read from the shared queue at
 * scrape time (every worker reports the same numbers, whoever delivered).
 * Labelled by endpoint name: bounded by the configuration (at most 32).
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { EndpointStatus, Notifier } from "./notifier.js";

/** The collect() calls of one scrape share one read of the queue. */
const SNAPSHOT_MS = 100;

export function registerNotificationMetrics(registry: Registry, notifier: Notifier): void {
  let cached: { at: number; status: EndpointStatus[] } | null = null;
  const snapshot = (): EndpointStatus[] => {
    const now = Date.now();
    if (!cached || now - cached.at > SNAPSHOT_MS) cached = { at: now, status: notifier.status() };
    return cached.status;
  };
  const counter = (name: string, help: string, value: (s: EndpointStatus) => number) =>
    new Counter({
      name,
      help,
      labelNames: ["endpoint"],
      registers: [registry],
      collect() {
        this.reset();
        for (const status of snapshot()) this.inc({ endpoint: status.name }, value(status));
      },
    });
  const gauge = (name: string, help: string, value: (s: EndpointStatus) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: ["endpoint"],
      registers: [registry],
      collect() {
        this.reset();
        for (const status of snapshot()) {
          const v = value(status);
          if (v !== null) this.set({ endpoint: status.name }, v);
        }
      },
    });
  counter("ferry_notifications_delivered_total", "Events delivered to this endpoint (2xx answer)", (s) => s.delivered);
  counter("ferry_notifications_failed_attempts_total", "Delivery attempts to this endpoint that failed (each retry counts)", (s) => s.failedAttempts);
  counter("ferry_notifications_given_up_total", "Events given up after maxAttempts or maxAge", (s) => s.givenUp);
  counter("ferry_notifications_dropped_total", "Events dropped because the endpoint's queue was full (oldest first)", (s) => s.dropped);
  gauge("ferry_notifications_pending", "Events waiting for delivery to this endpoint", (s) => s.pending);
  gauge("ferry_notifications_last_success_timestamp_seconds", "When an event was last delivered to this endpoint (Unix time)", (s) =>
    s.lastSuccessAt === null ? null : s.lastSuccessAt / 1000,
  );
  gauge("ferry_notifications_last_failure_timestamp_seconds", "When a delivery to this endpoint last failed (Unix time)", (s) =>
    s.lastFailureAt === null ? null : s.lastFailureAt / 1000,
  );
}
