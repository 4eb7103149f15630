/**
 * /metrics for a process with several serving threads: a scrape lands on
 * whichever thread accepted the connection, and must describe the whole
 * server. Each thread keeps its own registry (counting is a few additions per
 * request, no locking); a scrape gathers every thread's registry as JSON and
 * merges them here.
 *
 * How each series is merged:
 * - counters and histograms that Ferry keeps (requests, durations, drops,
 *   deliveries): summed, each thread counted its own events;
 * - per-isolate Node.js series (heap sizes, handles, GC durations): summed,
 *   each thread has its own heap and event loop; event loop lag: the worst;
 * - process-wide series (CPU seconds, resident memory, open fds, start
 *   time): the main thread's, every thread reads the same process;
 * - Ferry's gauges (foreign source health, mirror upstream state, cache
 *   invalidation): the main thread's, they describe shared state every
 *   thread sees the same way.
 */
import { AggregatorRegistry, type Registry } from "prom-client";

export type MetricsJson = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>;
type Aggregator = "sum" | "first" | "max" | "omit" | "average" | "min";

const PREFIX = "ferry_";

function aggregatorFor(name: string, type: string): Aggregator {
  const bare = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : name;
  if (bare.startsWith("process_")) return "first";
  if (bare.startsWith("nodejs_")) {
    if (bare.startsWith("nodejs_eventloop_lag")) return "max";
    if (bare === "nodejs_version_info") return "first";
    return "sum";
  }
  return type === "gauge" ? "first" : "sum";
}

/** One Prometheus text answer from every thread's metrics; the main thread's first. */
export async function mergeThreadMetrics(perThread: MetricsJson[]): Promise<string> {
  const marked = perThread.map((metrics) =>
    metrics.map((metric) => ({ ...metric, aggregator: aggregatorFor(metric.name, String(metric.type)) })),
  );
  return AggregatorRegistry.aggregate(marked as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
}
