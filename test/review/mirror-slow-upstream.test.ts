/**
 * A slow-loris upstream (headers, then a byte now and then, never idle long
 * enough for the idle timeout) must not hold a mirror's manifest pulls
 * forever: every client waiting for that tag shares the one check. Each
 * upstream answer read whole has a deadline (`upstreamTimeout`); past it the
 * mirror answers 502, or serves its cached tag with a Warning.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { hostileUpstream } from "./hostile.js";

describe("slow-loris mirror upstream", () => {
  test("a manifest dripped a byte at a time ends in a 502 at the deadline, not a hang", async (t) => {
    const timers = new Set<NodeJS.Timeout>();
    t.after(() => timers.forEach((timer) => clearInterval(timer)));
    const upstream = await hostileUpstream(t, (req, res) => {
      const path = (req.url ?? "/").split("?")[0]!;
      if (path === "/v2/") return void res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
      res.writeHead(200, { "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": 100_000 });
      if (req.method === "HEAD") return void res.end();
      const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write(" ")), 300);
      timers.add(timer);
    });
    const registry = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream, onUpstreamDown: "fail", upstreamTimeout: "2s" }] });
    t.after(() => registry.close());
    const started = Date.now();
    const response = await fetch(`${registry.url}/v2/m/app/manifests/v1`, { signal: AbortSignal.timeout(20_000) });
    await response.arrayBuffer();
    assert.equal(response.status, 502);
    assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started} ms`);
  });
});
