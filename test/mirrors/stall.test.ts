/**
 * An upstream that stops sending in the middle of a blob: the mirror's
 * `upstreamTimeout` bounds the silence (not the client library's 120 s), the
 * client's connection is cut (never a short body that looks complete), and
 * nothing is stored.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { request } from "node:http";
import { FakeUpstream } from "./fake-upstream.js";
import { startTestRegistry } from "../helpers/registry.js";

test("a blob whose upstream goes silent mid-body is cut after upstreamTimeout, and nothing is stored", { timeout: 30_000 }, async (t) => {
  const upstream = await new FakeUpstream().start();
  t.after(() => upstream.close());
  const mirror = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream: upstream.url, upstreamTimeout: "1s" }] });
  t.after(() => mirror.close());
  const bytes = randomBytes(512 * 1024);
  const digest = upstream.addBlob("stall", bytes);
  // The first 64 KiB at once, then a 60 s silence.
  upstream.pace = { chunk: 64 * 1024, delayMs: 60_000 };

  const started = Date.now();
  const outcome = await new Promise<{ status: number; received: number; error: string | null }>((resolve) => {
    let status = 0;
    let received = 0;
    const req = request(`${mirror.url}/v2/m/stall/blobs/${digest}`, (res) => {
      status = res.statusCode ?? 0;
      res.on("data", (chunk: Buffer) => (received += chunk.length));
      res.on("end", () => resolve({ status, received, error: null }));
      res.on("error", (error) => resolve({ status, received, error: error.message }));
    });
    req.on("error", (error) => resolve({ status, received, error: error.message }));
    req.end();
  });
  const took = Date.now() - started;
  assert.ok(outcome.error !== null || outcome.status >= 500, `the pull must fail, got ${JSON.stringify(outcome)}`);
  assert.ok(outcome.received < bytes.length, "never the whole length");
  assert.ok(took < 10_000, `cut after ${took} ms: upstreamTimeout (1 s) did not bound the silence`);
  assert.equal(await mirror.registry.deps.meta.linkedBlob("m/stall", digest), null, "nothing linked");
});
