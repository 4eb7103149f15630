/**
 * A push's body chunks are collected while it streams: without young
 * collections paced by body bytes, V8 collected them only after hundreds of
 * MiB (a push allocates almost no JavaScript per byte), the heap grew by tens
 * of MiB per push and the CPU per 100 MiB push was ~30% higher.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { PerformanceObserver, constants } from "node:perf_hooks";
import { startTestRegistry } from "../helpers/registry.js";
import { resolveLocation, sha256, withQuery } from "../http/client.js";
import { BODY_BYTES_PER_COLLECTION } from "../../src/memory/body-collections.js";

test("a 128 MiB push runs a young collection every 8 MiB of body", async (t) => {
  const registry = await startTestRegistry();
  t.after(() => registry.close());
  const body = randomBytes(128 * 1024 * 1024);
  const start = await fetch(`${registry.url}/v2/gc/blobs/uploads/`, { method: "POST" });
  assert.equal(start.status, 202);
  const location = withQuery(resolveLocation(registry.url, start), { digest: sha256(body) });

  let minor = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const detail = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail;
      if (detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  const put = await fetch(location, { method: "PUT", body, headers: { "content-type": "application/octet-stream" } });
  assert.equal(put.status, 201);
  await new Promise((resolve) => setImmediate(resolve));
  observer.disconnect();
  const expected = body.length / BODY_BYTES_PER_COLLECTION;
  assert.ok(minor >= expected - 2, `${minor} young collections during a 128 MiB push, expected about ${expected}`);
});
