/**
 * Shutting down while a mirror fetch runs in the background (its client left:
 * the fetch goes on for the next puller). Closing the registry must stop the
 * fetch and wait until it has dropped its upload session, so nothing writes
 * into a store being closed, nothing partial stays on disk, and shutdown does
 * not wait for a slow upstream to finish.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "node:http";
import { FakeUpstream } from "./fake-upstream.js";
import { startTestRegistry } from "../helpers/registry.js";

async function entries(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

/** Starts a GET, reads its first bytes, then drops the connection. */
function pullAndLeave(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      assert.equal(res.statusCode, 200);
      res.once("data", () => {
        req.destroy();
        resolve();
      });
    });
    req.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code !== "ECONNRESET") reject(error);
    });
    req.end();
  });
}

test("close() stops a background mirror fetch, drops its session and returns without waiting for the upstream", async (t) => {
  const upstream = await new FakeUpstream().start();
  t.after(() => upstream.close());
  const dir = await mkdtemp(join(tmpdir(), "ferry-mirror-close-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const mirror = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream: upstream.url }] }, dir);
  let closed = false;
  t.after(async () => {
    if (!closed) await mirror.registry.close();
  });

  // ~10 s at this pace: far longer than close() may take.
  const bytes = randomBytes(6 * 1024 * 1024);
  const digest = upstream.addBlob("big", bytes);
  upstream.pace = { chunk: 64 * 1024, delayMs: 100 };
  await pullAndLeave(`${mirror.url}/v2/m/big/blobs/${digest}`);
  // The fetch carries on without its client: its session is on disk.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal((await entries(join(dir, "uploads"))).length, 1, "the background fetch writes a session");

  const started = Date.now();
  await mirror.registry.close();
  closed = true;
  const took = Date.now() - started;
  assert.ok(took < 5_000, `close() took ${took} ms: it waited for the upstream`);
  assert.deepEqual(await entries(join(dir, "uploads")), [], "the aborted fetch's session is gone when close() returns");
  // And nothing is written afterwards (the upstream keeps sending for seconds).
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  assert.deepEqual(await entries(join(dir, "uploads")), []);
  assert.deepEqual(await entries(join(dir, "blobs", "sha256", digest.slice(7, 9))), [], "nothing partial is committed");
});
