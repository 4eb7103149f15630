/**
 * The object store going away under `ferry serve` (storage.driver s3). Uses
 * an RGW of its own, since its gateway is stopped and started again.
 * - during a push: the client gets 503 UNAVAILABLE saying so, nothing
 *   becomes visible, and the session is retried once the store is back;
 * - during a pull: the connection ends with an error, never with a short
 *   blob that looks complete.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { sha256 } from "../helpers/images.js";
import { createTestBucket, skipUnlessS3, startS3Server, type S3TestServer } from "../helpers/s3-rgw.js";

const MiB = 1024 * 1024;
const skip = skipUnlessS3({ ownServer: true });
let server: S3TestServer;
let registry: TestRegistry;

before(async () => {
  if (skip) return;
  server = await startS3Server({ ownServer: true });
  const { bucket } = await createTestBucket(server);
  registry = await startTestRegistry({
    storage: {
      driver: "s3",
      s3: { endpoint: server.endpoint, bucket, accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey, partSize: "5MiB" },
    },
  });
});

after(async () => {
  await registry?.close();
  await server?.close();
});

/** A PATCH whose body is sent in two halves, running `between` after the first. */
function patchInTwo(url: string, first: Buffer, second: Buffer, between: () => Promise<void>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "PATCH", headers: { "Content-Type": "application/octet-stream" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.write(first, () => {
      between().then(
        () => req.end(second),
        (error: unknown) => {
          req.destroy();
          reject(error);
        },
      );
    });
  });
}

test("object store stopped during a push: 503 UNAVAILABLE, nothing visible, and the session completes once the store is back", { skip }, async () => {
  const bytes = randomBytes(8 * MiB);
  const digest = sha256(bytes);
  const start = await fetch(`${registry.url}/v2/fault/app/blobs/uploads/`, { method: "POST" });
  assert.equal(start.status, 202);
  let location = new URL(start.headers.get("location")!, registry.url).toString();
  const firstChunk = await fetch(location, { method: "PATCH", body: new Uint8Array(bytes.subarray(0, MiB)) });
  assert.equal(firstChunk.status, 202);
  location = new URL(firstChunk.headers.get("location")!, registry.url).toString();

  // The gateway stops while the next chunk is on the wire; its second half fills a part that cannot be stored.
  const failed = await patchInTwo(location, bytes.subarray(MiB, 2 * MiB), bytes.subarray(2 * MiB, 7 * MiB), () => server.gateway!.stop());
  assert.equal(failed.status, 503, failed.body);
  const error = (JSON.parse(failed.body) as { errors: Array<{ code: string; message: string; detail: { store: string } }> }).errors[0];
  assert.equal(error.code, "UNAVAILABLE");
  assert.match(error.message, /object store failed .*nothing was stored by this request, retry later/);
  assert.equal(error.detail.store, "s3");
  assert.doesNotMatch(failed.body, /127\.0\.0\.1|ferrytest|ferry-test-/, "no endpoint, key or bucket in the response");

  // A monolithic push while the store is down fails the same way.
  const small = randomBytes(1000);
  const mono = await fetch(`${registry.url}/v2/fault/app/blobs/uploads/?digest=${sha256(small)}`, { method: "POST", body: new Uint8Array(small) });
  assert.equal(mono.status, 503);
  assert.equal(((await mono.json()) as { errors: Array<{ code: string }> }).errors[0].code, "UNAVAILABLE");

  await server.gateway!.start();
  for (const d of [digest, sha256(small)]) {
    assert.equal((await fetch(`${registry.url}/v2/fault/app/blobs/${d}`, { method: "HEAD" })).status, 404, "nothing became visible");
  }
  const status = await fetch(location);
  assert.equal(status.status, 204);
  assert.equal(status.headers.get("range"), `0-${MiB - 1}`, "the failed chunk left the session as it was");

  const retry = await fetch(location, {
    method: "PATCH",
    headers: { "Content-Range": `${MiB}-${7 * MiB - 1}` },
    body: new Uint8Array(bytes.subarray(MiB, 7 * MiB)),
  });
  assert.equal(retry.status, 202, await retry.text());
  location = new URL(retry.headers.get("location")!, registry.url).toString();
  const done = await fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${digest}`, { method: "PUT", body: new Uint8Array(bytes.subarray(7 * MiB)) });
  assert.equal(done.status, 201, await done.text());
  const got = await fetch(`${registry.url}/v2/fault/app/blobs/${digest}`);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
});

test("object store stopped during a pull: the connection ends with an error, never with a short blob", { skip }, async () => {
  const bytes = randomBytes(24 * MiB);
  const digest = sha256(bytes);
  const push = await fetch(`${registry.url}/v2/fault/pull/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) });
  assert.equal(push.status, 201);
  const outcome = await new Promise<{ received: number; error: Error | null; length: number }>((resolve) => {
    request(`${registry.url}/v2/fault/pull/blobs/${digest}`, (res) => {
      let received = 0;
      let stopping: Promise<void> | null = null;
      const length = Number(res.headers["content-length"]);
      // Read slowly so the registry is still fetching from the store when it goes away.
      res.pause();
      res.on("data", (c: Buffer) => {
        received += c.length;
        if (!stopping && received >= MiB) {
          res.pause();
          stopping = server.gateway!.stop().then(() => void res.resume());
        }
      });
      res.on("end", () => resolve({ received, error: null, length }));
      res.on("error", (error) => resolve({ received, error, length }));
      res.on("aborted", () => undefined);
      setTimeout(() => res.resume(), 50);
    })
      .on("error", (error) => resolve({ received: 0, error, length: -1 }))
      .end();
  });
  await server.gateway!.start();
  assert.equal(outcome.length, bytes.length);
  assert.ok(outcome.error !== null || outcome.received === bytes.length, `got ${outcome.received} of ${bytes.length} bytes and no error`);
  assert.ok(outcome.received < bytes.length, "the store went away before the whole blob was sent");
});
