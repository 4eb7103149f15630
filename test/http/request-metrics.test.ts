/**
 * /metrics request series: counted without prom-client's per-request label
 * handling, but a scraper must see exactly what prom-client's own Histogram and
 * Counter would have exposed for the same requests.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Counter, Histogram, Registry } from "prom-client";
import { DURATION_BUCKETS, Metrics } from "../../src/http/metrics.js";

const REQUESTS: Array<[string, string, number, number]> = [
  ["GET", "manifest", 200, 0.0002],
  ["GET", "manifest", 200, 0.0005], // on a bound: counted in that bucket (le is "less or equal")
  ["GET", "manifest", 200, 0.003],
  ["GET", "manifest", 404, 0.0001],
  ["HEAD", "manifest", 200, 0.04],
  ["PUT", "upload", 201, 12],
  ["PUT", "upload", 201, 31], // above every bound: +Inf only
  ["GET", "other", 404, 0],
  ["GET", "tags", 200, 0.7],
];

function seriesLines(text: string): string[] {
  return text.split("\n").filter((line) => /^(# (HELP|TYPE) )?ferry_http_request/.test(line));
}

describe("request metrics", () => {
  it("expose the same text as prom-client's Histogram and Counter fed the same requests", async () => {
    const metrics = new Metrics();
    const reference = new Registry();
    const duration = new Histogram({
      name: "ferry_http_request_duration_seconds",
      help: "Time to answer a request, by method, route and status",
      labelNames: ["method", "route", "status"],
      buckets: DURATION_BUCKETS,
      registers: [reference],
    });
    const requests = new Counter({
      name: "ferry_http_requests_total",
      help: "Requests answered, by method, route and status",
      labelNames: ["method", "route", "status"],
      registers: [reference],
    });
    for (const [method, route, status, seconds] of REQUESTS) {
      metrics.observe(method, route, status, seconds);
      duration.observe({ method, route, status: String(status) }, seconds);
      requests.inc({ method, route, status: String(status) });
    }
    const ours = seriesLines(await metrics.registry.metrics());
    const theirs = seriesLines(await reference.metrics());
    assert.ok(ours.length > 40, `expected every series, got:\n${ours.join("\n")}`);
    assert.deepEqual([...ours].sort(), [...theirs].sort());
  });

  it("count every request, and a scrape does not reset them", async () => {
    const metrics = new Metrics();
    for (let i = 0; i < 1000; i++) metrics.observe("GET", "manifest", 200, 0.0001);
    const first = await metrics.registry.metrics();
    assert.match(first, /^ferry_http_requests_total\{method="GET",route="manifest",status="200"\} 1000$/m);
    assert.match(first, /^ferry_http_request_duration_seconds_bucket\{le="0.0005",method="GET",route="manifest",status="200"\} 1000$/m);
    metrics.observe("GET", "manifest", 200, 0.0001);
    assert.match(await metrics.registry.metrics(), /^ferry_http_requests_total\{method="GET",route="manifest",status="200"\} 1001$/m);
  });
});
