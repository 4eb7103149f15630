/**
 * Prometheus metrics for requests, served at /metrics.
 *
 * The two request series are counted here in plain numbers and handed to
 * prom-client only when /metrics is scraped. Observing through prom-client's
 * Histogram and Counter built, validated and hashed a labels object twice per
 * request, ~4% of a cached manifest GET's CPU (docs/benchmarks-history.md, round 3);
 * here a request is three map lookups and three additions. The exposition is
 * the same (test/http/request-metrics.test.ts holds it to prom-client's own).
 */
import { Registry, collectDefaultMetrics, type Metric } from "prom-client";

const DURATION = "ferry_http_request_duration_seconds";
const REQUESTS = "ferry_http_requests_total";
export const DURATION_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30];

type Labels = { method: string; route: string; status: string };

/** One exported sample, in the form prom-client's registry renders (its own metrics' get() returns these). */
interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

interface Series {
  labels: Labels;
  /** Per bucket, not cumulative; the last slot counts what is above every bound. */
  counts: number[];
  sum: number;
  count: number;
}

export class Metrics {
  readonly registry = new Registry();
  /** method -> route -> status -> series: lookups with the values the dispatcher already holds, no key strings. */
  private readonly series = new Map<string, Map<string, Map<number, Series>>>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "ferry_" });
    const all = () => [...this.series.values()].flatMap((routes) => [...routes.values()].flatMap((statuses) => [...statuses.values()]));
    this.registry.registerMetric(
      exported(DURATION, "Time to answer a request, by method, route and status", "histogram", () => all().flatMap(histogramValues)),
    );
    this.registry.registerMetric(
      exported(REQUESTS, "Requests answered, by method, route and status", "counter", () =>
        all().map((s): Sample => ({ labels: { ...s.labels }, value: s.count })),
      ),
    );
  }

  observe(method: string, route: string, status: number, seconds: number): void {
    let routes = this.series.get(method);
    if (routes === undefined) this.series.set(method, (routes = new Map()));
    let statuses = routes.get(route);
    if (statuses === undefined) routes.set(route, (statuses = new Map()));
    let series = statuses.get(status);
    if (series === undefined) {
      series = { labels: { method, route, status: String(status) }, counts: new Array<number>(DURATION_BUCKETS.length + 1).fill(0), sum: 0, count: 0 };
      statuses.set(status, series);
    }
    let bucket = 0;
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
    series.counts[bucket]!++;
    series.sum += seconds;
    series.count++;
  }
}

/** prom-client's export form of one histogram series: cumulative buckets, +Inf, sum, count. */
function histogramValues(series: Series): Sample[] {
  const values: Sample[] = [];
  let cumulative = 0;
  DURATION_BUCKETS.forEach((bound, i) => {
    cumulative += series.counts[i]!;
    values.push({ labels: { le: bound, ...series.labels }, value: cumulative, metricName: `${DURATION}_bucket` });
  });
  values.push({ labels: { le: "+Inf", ...series.labels }, value: series.count, metricName: `${DURATION}_bucket` });
  values.push({ labels: { ...series.labels }, value: series.sum, metricName: `${DURATION}_sum` });
  values.push({ labels: { ...series.labels }, value: series.count, metricName: `${DURATION}_count` });
  return values;
}

/** A metric the registry renders like its own (it calls get() on every scrape). */
function exported(
  name: string,
  help: string,
  type: "histogram" | "counter",
  values: () => Sample[],
): Metric<string> {
  const metric = {
    name,
    help,
    type,
    aggregator: "sum",
    get: async () => ({ name, help, type, values: values(), aggregator: "sum" }),
  };
  // prom-client types a metric's type as its MetricType enum; the registry reads the string, as its own classes set it.
  return metric as unknown as Metric<string>;
}
