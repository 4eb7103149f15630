/**
 * A push's body chunks are collected while it streams: without young
 * collections paced by body bytes, V8 collected them only after hundreds of
 * MiB (a push allocates almost no JavaScript per byte), the heap grew by tens
 * of MiB per push and the CPU per 100 MiB push was ~30% higher. A body
 * handed over to storage (src/storage/body-handoff.ts) makes no chunks, so it
 * must not pay for those collections.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { PerformanceObserver, constants } from "node:perf_hooks";
import { startTestRegistry } from "../helpers/registry.js";
import { resolveLocation, sha256, withQuery } from "../http/client.js";
import { BODY_BYTES_PER_COLLECTION } from "../../src/memory/body-collections.js";
import { nativeReceiveAvailable } from "../../src/native/addon.js";

/** Young collections in this process while `body` is pushed; `chunked` streams it without a Content-Length. */
async function youngCollectionsDuringPush(body: Buffer, chunked: boolean): Promise<number> {
  const registry = await startTestRegistry();
  try {
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
    const payload = chunked
      ? new ReadableStream<Uint8Array>({
          start(controller) {
            for (let at = 0; at < body.length; at += 1024 * 1024) controller.enqueue(body.subarray(at, at + 1024 * 1024));
            controller.close();
          },
        })
      : body;
    const put = await fetch(location, {
      method: "PUT",
      body: payload,
      headers: { "content-type": "application/octet-stream" },
      ...(chunked ? { duplex: "half" } : {}),
    } as RequestInit);
    assert.equal(put.status, 201);
    await new Promise((resolve) => setImmediate(resolve));
    observer.disconnect();
    return minor;
  } finally {
    await registry.close();
  }
}

test("a 128 MiB push streamed through the parser runs a young collection every 8 MiB of body", async () => {
  const body = randomBytes(128 * 1024 * 1024);
  const minor = await youngCollectionsDuringPush(body, true);
  const expected = body.length / BODY_BYTES_PER_COLLECTION;
  assert.ok(minor >= expected - 2, `${minor} young collections during a 128 MiB push, expected about ${expected}`);
});

test("a 128 MiB push handed over to storage makes no chunks to collect", { skip: nativeReceiveAvailable() ? false : "no native receive" }, async () => {
  const body = randomBytes(128 * 1024 * 1024);
  const minor = await youngCollectionsDuringPush(body, false);
  const paced = body.length / BODY_BYTES_PER_COLLECTION;
  assert.ok(minor < paced / 2, `${minor} young collections during a handed-over 128 MiB push (paced would be ${paced})`);
});
