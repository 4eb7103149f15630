/**
 * Locks that must hold across processes live in the metadata store: two
 * registries over one data directory stand for two worker processes (or
 * replicas) here, sharing nothing but the files.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { startTestRegistry } from "../helpers/registry.js";

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

test("one garbage collector at a time: a second one skips while the first holds the lease", async (t) => {
  const first = await startTestRegistry();
  t.after(() => first.close());
  const second = await startTestRegistry({}, first.dataDir);
  t.after(() => second.close());
  // Another process is collecting.
  assert.equal(await first.registry.deps.meta.acquireLease("gc", "elsewhere:1:x", 60_000), true);
  const skipped = await second.registry.gc({ gracePeriodMs: 0 });
  assert.equal(skipped.skipped, true);
  await first.registry.deps.meta.releaseLease("gc", "elsewhere:1:x");
  const ran = await second.registry.gc({ gracePeriodMs: 0 });
  assert.equal(ran.skipped, false);
});

test("a blob commit waits while another process holds the digest (GC deleting it), then stores it", async (t) => {
  const first = await startTestRegistry();
  t.after(() => first.close());
  const second = await startTestRegistry({}, first.dataDir);
  t.after(() => second.close());
  const bytes = randomBytes(50_000);
  const digest = sha256(bytes);
  // A collector in the first process holds the digest.
  assert.equal(await first.registry.deps.meta.acquireLease(`blob:${digest}`, "collector:1:y", 60_000), true);
  let answered = false;
  const push = fetch(`${second.url}/v2/locks/a/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) }).then((response) => {
    answered = true;
    return response;
  });
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.equal(answered, false, "the commit waits for the digest's lease");
  await first.registry.deps.meta.releaseLease(`blob:${digest}`, "collector:1:y");
  const response = await push;
  assert.equal(response.status, 201);
  const pulled = Buffer.from(await (await fetch(`${first.url}/v2/locks/a/blobs/${digest}`)).arrayBuffer());
  assert.equal(sha256(pulled), digest);
});

test("a lease held by a process of this machine that died is broken at once, not after it expires", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const start = await fetch(`${r.url}/v2/locks/b/blobs/uploads/`, { method: "POST" });
  const location = start.headers.get("location")!;
  const id = location.split("/").pop()!;
  // pid 2^22+1 is above Linux's pid_max: no such process.
  const { hostname } = await import("node:os");
  const dead = `${hostname()}:4194305:00000000-0000-4000-8000-000000000000`;
  assert.equal(await r.registry.deps.meta.acquireLease(`upload:${id}`, dead, 60_000), true);
  const bytes = randomBytes(1000);
  const put = await fetch(`${r.url}${location}?digest=${sha256(bytes)}`, { method: "PUT", body: new Uint8Array(bytes) });
  assert.equal(put.status, 201);
});

test("open upload sessions are capped registry-wide: beyond the cap a POST gets 429 in the spec's format", async (t) => {
  const r = await startTestRegistry({ uploads: { maxOpenSessions: 3 } });
  t.after(() => r.close());
  const locations: string[] = [];
  for (let i = 0; i < 3; i++) {
    const response = await fetch(`${r.url}/v2/cap/a/blobs/uploads/`, { method: "POST" });
    assert.equal(response.status, 202);
    locations.push(response.headers.get("location")!);
  }
  const refused = await fetch(`${r.url}/v2/cap/a/blobs/uploads/`, { method: "POST" });
  assert.equal(refused.status, 429);
  const body = (await refused.json()) as { errors: Array<{ code: string }> };
  assert.equal(body.errors[0]!.code, "TOOMANYREQUESTS");
  assert.ok(refused.headers.get("retry-after"));
  // Monolithic pushes open no visible session and still work.
  const bytes = randomBytes(100);
  assert.equal((await fetch(`${r.url}/v2/cap/a/blobs/uploads/?digest=${sha256(bytes)}`, { method: "POST", body: new Uint8Array(bytes) })).status, 201);
  // Cancelling one frees a place (after the count is refreshed).
  assert.equal((await fetch(`${r.url}${locations[0]}`, { method: "DELETE" })).status, 204);
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  assert.equal((await fetch(`${r.url}/v2/cap/a/blobs/uploads/`, { method: "POST" })).status, 202);
});

test("a writer that lost its session (frozen past its lease) can no longer change the committed blob", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const bytes = randomBytes(200_000);
  const start = await fetch(`${r.url}/v2/locks/stale/blobs/uploads/`, { method: "POST" });
  const location = start.headers.get("location")!;
  const id = location.split("/").pop()!;
  assert.equal((await fetch(`${r.url}${location}`, { method: "PATCH", body: new Uint8Array(bytes) })).status, 202);
  // A writer in another process still has the session file open, and its
  // lease ran out without being released (it was frozen).
  const { open } = await import("node:fs/promises");
  const { join } = await import("node:path");
  const stale = await open(join(r.dataDir, "uploads", id), "r+");
  t.after(() => stale.close());
  assert.equal(await r.registry.deps.meta.acquireLease(`upload:${id}`, "frozen:1:x", 1), true);
  await new Promise((resolve) => setTimeout(resolve, 5));
  const put = await fetch(`${r.url}${location}?digest=${sha256(bytes)}`, { method: "PUT" });
  assert.equal(put.status, 201, "the session is taken over and committed");
  // The frozen writer wakes up: writes what it had, then rolls back as a failed append does.
  await stale.write(randomBytes(4096), 0, 4096, 0);
  await stale.truncate(0);
  const pulled = Buffer.from(await (await fetch(`${r.url}/v2/locks/stale/blobs/${sha256(bytes)}`)).arrayBuffer());
  assert.equal(pulled.length, bytes.length, "the committed blob was not truncated");
  assert.equal(sha256(pulled), sha256(bytes), "the committed blob holds the bytes named by its digest");
});

test("a mount that races garbage collection of its source is not acknowledged without bytes", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const bytes = randomBytes(10_000);
  const digest = sha256(bytes);
  assert.equal((await fetch(`${r.url}/v2/locks/src/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) })).status, 201);
  const { meta, blobs } = r.registry.deps;
  // A collector in another process holds the digest and is about to delete it.
  assert.equal(await meta.acquireLease(`blob:${digest}`, "collector:1:z", 60_000), true);
  const mount = fetch(`${r.url}/v2/locks/dst/blobs/uploads/?mount=${digest}&from=locks/src`, { method: "POST" });
  await new Promise((resolve) => setTimeout(resolve, 200));
  // It unlinks the blob, forgets it and deletes its bytes, then lets go.
  assert.equal(await meta.unlinkBlob("locks/src", digest), true);
  assert.deepEqual(await meta.forgetBlobs([digest]), [digest]);
  await blobs.delete(digest);
  await meta.releaseLease(`blob:${digest}`, "collector:1:z");
  const answered = await mount;
  assert.equal(answered.status, 202, "the mount falls back to an upload session instead of acknowledging a blob with no bytes");
  assert.equal((await fetch(`${r.url}/v2/locks/dst/blobs/${digest}`, { method: "HEAD" })).status, 404);
});
