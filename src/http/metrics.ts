/** Prometheus metrics for requests, served at /metrics. */
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class Metrics {
  readonly registry = new Registry();
  private readonly duration: Histogram<"method" | "route" | "status">;
  private readonly requests: Counter<"method" | "route" | "status">;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "ferry_" });
    this.duration = new Histogram({
      name: "ferry_http_request_duration_seconds",
      help: "Time to answer a request, by method, route and status",
      labelNames: ["method", "route", "status"],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [this.registry],
    });
    this.requests = new Counter({
      name: "ferry_http_requests_total",
      help: "Requests answered, by method, route and status",
      labelNames: ["method", "route", "status"],
      registers: [this.registry],
    });
  }

  observe(method: string, route: string, status: number, seconds: number): void {
    const labels = { method, route, status: String(status) };
    this.duration.observe(labels, seconds);
    this.requests.inc(labels);
  }
}
