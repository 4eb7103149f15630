/**
 * How many threads `ferry serve` starts (config `threads`): one per core by
 * default, capped, one per worker process under `--workers N`, and exactly
 * what an operator wrote otherwise.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_AUTO_THREADS, threadCount } from "../../src/threads/serving-threads.js";
import { mergeThreadMetrics } from "../../src/threads/metrics.js";
import { Metrics } from "../../src/http/metrics.js";
import { loadConfig } from "../../src/config/load.js";

test("one serving thread unless the operator asks for more (each costs ~30-40 MiB)", () => {
  assert.equal(loadConfig().threads, 1);
  assert.equal(threadCount(loadConfig(), 8), 1);
});

test("auto is one thread per core, at most MAX_AUTO_THREADS, and 1 under --workers", () => {
  assert.equal(threadCount({ threads: "auto", workers: 1 }, 2), 2);
  assert.equal(threadCount({ threads: "auto", workers: 1 }, 1), 1);
  assert.equal(threadCount({ threads: "auto", workers: 1 }, 64), MAX_AUTO_THREADS);
  assert.equal(threadCount({ threads: "auto", workers: 2 }, 2), 1);
  assert.equal(threadCount({ threads: 1, workers: 1 }, 16), 1);
  assert.equal(threadCount({ threads: 12, workers: 1 }, 2), 12);
});

test("merged metrics: request counters summed over threads, process figures once", async () => {
  const main = new Metrics();
  const other = new Metrics();
  for (let i = 0; i < 3; i++) main.observe("GET", "catalog", 200, 0.001);
  for (let i = 0; i < 5; i++) other.observe("GET", "catalog", 200, 0.002);
  const text = await mergeThreadMetrics([await main.registry.getMetricsAsJSON(), await other.registry.getMetricsAsJSON()]);
  assert.match(text, /^ferry_http_requests_total\{method="GET",route="catalog",status="200"\} 8$/m);
  assert.match(text, /^ferry_http_request_duration_seconds_count\{method="GET",route="catalog",status="200"\} 8$/m);
  const own = /^ferry_process_start_time_seconds (\d+)$/m.exec(await main.registry.metrics())?.[1];
  assert.match(text, new RegExp(`^ferry_process_start_time_seconds ${own}$`, "m"), "the main thread's start time, not a sum");
});
