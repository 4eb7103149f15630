/**
 * A mirror's upstream is trusted with its own content, nothing more: an
 * upstream that only claims to have a digest must not get a client of the
 * mirror bytes this registry holds for another repository.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startTestRegistry } from "../helpers/registry.js";
import { hostileUpstream } from "./hostile.js";

describe("hostile mirror upstream: claimed digests", () => {
  test("an upstream that only claims a digest gets no content held for another repository", async (t) => {
    const secret = randomBytes(4096);
    const digest = `sha256:${createHash("sha256").update(secret).digest("hex")}`;
    // Claims every blob exists at the size asked about, but has no bytes to send.
    const upstream = await hostileUpstream(t, (req, res) => {
      const path = (req.url ?? "/").split("?")[0]!;
      if (path === "/v2/" ) return void res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
      if (req.method === "HEAD" && /\/blobs\//.test(path)) return void res.writeHead(200, { "Content-Length": secret.length, "Docker-Content-Digest": digest }).end();
      res.writeHead(404, { "Content-Type": "application/json" }).end(JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN", message: "no" }] }));
    });
    const registry = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream }] });
    t.after(() => registry.close());
    const pushed = await fetch(`${registry.url}/v2/private/app/blobs/uploads/?digest=${digest}`, { method: "POST", body: secret, headers: { "Content-Type": "application/octet-stream" } });
    assert.equal(pushed.status, 201);

    const response = await fetch(`${registry.url}/v2/m/anything/blobs/${digest}`);
    const body = Buffer.from(await response.arrayBuffer());
    assert.notEqual(response.status, 200, "the private blob was served under the mirror on the upstream's word");
    assert.ok(!body.includes(secret.subarray(0, 64)));
    // Nor is it linked there for later requests (or for a manifest) to find.
    const again = await fetch(`${registry.url}/v2/m/anything/blobs/${digest}`);
    assert.notEqual(again.status, 200);
    assert.ok(!Buffer.from(await again.arrayBuffer()).includes(secret.subarray(0, 64)));
  });

});
