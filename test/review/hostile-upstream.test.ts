/**
 * A hostile upstream registry (or its token realm) must not exhaust a
 * mirror's memory with endless bodies: only a blob's body is unbounded (its
 * digest bounds it), everything read whole is cut off.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { startTestRegistry } from "../helpers/registry.js";
import { hostileUpstream } from "./hostile.js";

/** Writes 1 MiB chunks (honouring backpressure) until `limit` bytes or the peer hangs up; counts what the peer took. */
function endless(res: ServerResponse, sent: { bytes: number }, limit = 512 * 1024 * 1024, chunk = Buffer.alloc(1024 * 1024, 0x61)): void {
  void (async () => {
    while (sent.bytes < limit && !res.destroyed) {
      const ok = res.write(chunk);
      sent.bytes += chunk.length;
      if (!ok) {
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off("drain", done);
            res.off("close", done);
            resolve();
          };
          res.once("drain", done);
          res.once("close", done);
        });
      }
    }
    res.end();
  })();
}

describe("hostile mirror upstream: endless bodies", () => {
  test("an endless token body from the upstream's realm is cut off, not read into memory", async (t) => {
    const sent = { bytes: 0 };
    const upstream = await hostileUpstream(t, (req, res, base) => {
      const path = (req.url ?? "/").split("?")[0]!;
      if (path === "/token") return endless(res.writeHead(200, { "Content-Type": "application/json" }), sent);
      res.writeHead(401, { "WWW-Authenticate": `Bearer realm="${base}/token",service="hostile"`, "Content-Type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "token please" }] }));
    });
    const registry = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream, onUpstreamDown: "fail" }] });
    t.after(() => registry.close());
    const response = await fetch(`${registry.url}/v2/m/app/manifests/v1`, { signal: AbortSignal.timeout(60_000) });
    await response.arrayBuffer();
    assert.equal(response.status, 502);
    assert.ok(sent.bytes < 64 * 1024 * 1024, `the mirror read ${sent.bytes} bytes of a token answer`);
  });

  test("an endless tag list or error body from the upstream is cut off, not read into memory", async (t) => {
    const sent = { bytes: 0 };
    const upstream = await hostileUpstream(t, (req, res) => {
      const path = (req.url ?? "/").split("?")[0]!;
      if (path === "/v2/") return void res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
      if (path.endsWith("/tags/list")) return endless(res.writeHead(200, { "Content-Type": "application/json" }), sent);
      return endless(res.writeHead(500, { "Content-Type": "application/json" }), sent);
    });
    const registry = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream, onUpstreamDown: "fail" }] });
    t.after(() => registry.close());
    const tags = await fetch(`${registry.url}/v2/m/app/tags/list`, { signal: AbortSignal.timeout(60_000) });
    await tags.arrayBuffer();
    assert.equal(tags.status, 502);
    assert.ok(sent.bytes < 64 * 1024 * 1024, `the mirror read ${sent.bytes} bytes of a tag list`);
    sent.bytes = 0;
    const blob = await fetch(`${registry.url}/v2/m/app/blobs/sha256:${"a".repeat(64)}`, { signal: AbortSignal.timeout(60_000) });
    await blob.arrayBuffer();
    assert.equal(blob.status, 502);
    assert.ok(sent.bytes < 64 * 1024 * 1024, `the mirror read ${sent.bytes} bytes of an error body`);
  });
});
