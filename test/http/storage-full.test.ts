/**
 * A full disk is the registry's problem, not the client's: the push gets a
 * clear error response (not a reset connection), nothing becomes visible, and
 * the registry keeps serving. Storage is made to fail with ENOSPC part-way
 * through the body, as a real full filesystem does.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import type { AppendOptions } from "../../src/storage/blob-store.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
  const blobs = reg.registry.deps.blobs;
  const real = blobs.appendUpload.bind(blobs);
  // Reads about 1 MiB of the body, then fails the way a full filesystem does.
  blobs.appendUpload = async (id: string, source: Readable, options: AppendOptions) => {
    let seen = 0;
    for await (const chunk of source) {
      seen += (chunk as Buffer).length;
      if (seen > 1024 * 1024) {
        source.destroy();
        throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      }
    }
    return real(id, source, options);
  };
});
after(() => reg.close());

test("a push that fills the disk gets 507 UNAVAILABLE with a message a person understands, and changes nothing", async () => {
  const body = randomBytes(4 * 1024 * 1024);
  const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
  const start = await fetch(`${reg.url}/v2/full/blobs/uploads/`, { method: "POST" });
  assert.equal(start.status, 202);
  const location = new URL(start.headers.get("location")!, reg.url);
  location.searchParams.set("digest", digest);
  const res = await fetch(location, { method: "PUT", body, headers: { "content-type": "application/octet-stream" } });
  assert.equal(res.status, 507);
  const error = ((await res.json()) as { errors: Array<{ code: string; message: string; detail: { reason: string } }> }).errors[0];
  assert.equal(error.code, "UNAVAILABLE");
  assert.match(error.message, /out of storage space/);
  assert.equal(error.detail.reason, "no space left on the device");
  assert.doesNotMatch(JSON.stringify(error), /\/tmp|ferry-test|at [A-Za-z]+ \(/, "no path or stack trace");

  assert.equal((await fetch(`${reg.url}/v2/full/blobs/${digest}`, { method: "HEAD" })).status, 404, "nothing became visible");
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 200, "the registry keeps serving");
});
