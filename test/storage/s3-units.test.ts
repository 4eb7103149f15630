/**
 * The S3 driver's pure parts, without an S3 server: the key layout, the
 * session state's validation, what clients are told when the store fails,
 * when payloads go unsigned, and the per-process caches.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { S3Layout, emptySession, encodeSessionState, parseSessionState } from "../../src/storage/s3-layout.js";
import { once } from "node:events";
import net from "node:net";
import { HeadObjectCommand, UploadPartCommand } from "@aws-sdk/client-s3";
import { createS3Client, isLoopbackEndpoint, isMissing, payloadProtectedInTransit, storeUnavailable } from "../../src/storage/s3-client.js";
import { Readable } from "node:stream";
import { KnownParts, PartBufferPool, PieceCache, RecentStates } from "../../src/storage/s3-piece-cache.js";
import { stagePut } from "../../src/storage/s3-staged-put.js";

const HEX = "a".repeat(64);

test("blob keys are <prefix>blobs/<algorithm>/<hex>, and only such keys map back to digests", () => {
  const layout = new S3Layout("team-a");
  assert.equal(layout.blob(`sha256:${HEX}`), `team-a/blobs/sha256/${HEX}`);
  assert.equal(new S3Layout("").blob(`sha256:${HEX}`), `blobs/sha256/${HEX}`);
  assert.equal(new S3Layout("x/").blob(`sha256:${HEX}`), `x/blobs/sha256/${HEX}`);
  assert.equal(layout.digestOfKey(`team-a/blobs/sha256/${HEX}`), `sha256:${HEX}`);
  for (const key of [`team-a/blobs/sha256/${HEX}/x`, `team-a/blobs/md5/${HEX}`, `team-a/blobs/sha256/${HEX.toUpperCase()}`, `other/blobs/sha256/${HEX}`]) {
    assert.equal(layout.digestOfKey(key), null, key);
  }
  assert.throws(() => layout.blob("sha256:../../etc"), /not a digest/);
});

test("session keys stay inside the session's folder; keys no session could have are not reported as sessions", () => {
  const layout = new S3Layout("");
  assert.equal(layout.state("0b6c0d5e-1c1a-4a59-9d4b-7f1b2c3d4e5f"), "uploads/0b6c0d5e-1c1a-4a59-9d4b-7f1b2c3d4e5f/state");
  assert.equal(layout.piece("id1", { offset: 5, size: 7, t: "ab12" }), "uploads/id1/piece-0000000000000005-7-ab12");
  assert.equal(layout.stateVersion("id1", 12), "uploads/id1/state-0000000012");
  assert.throws(() => layout.piece("id1", { offset: 5, size: 7, t: "../x" }), /invalid piece token/);
  for (const bad of ["..", ".", "a/b", "", "x".repeat(129), "a b"]) assert.throws(() => layout.session(bad), /invalid upload id/, bad);
  assert.equal(layout.sessionOfKey("uploads/abc/state"), "abc");
  assert.equal(layout.sessionOfKey("uploads/../state"), null);
  assert.equal(layout.sessionOfKey("uploads/a b/state"), null);
  assert.equal(layout.sessionOfKey("blobs/sha256/x"), null);
});

test("a session state round-trips, and anything malformed is refused rather than guessed at", () => {
  const state = { ...emptySession(), seq: 3, size: 12, mpu: "2~abc", np: 1, partBytes: 10, ph: "ab", pieces: [{ offset: 10, size: 2, t: "0f" }] };
  assert.deepEqual(parseSessionState(encodeSessionState(state)), state);
  const ok = { v: 1, seq: 0, size: 0, np: 0, partBytes: 0, ph: "", pieces: [] };
  assert.deepEqual(parseSessionState(JSON.stringify(ok)), ok, "the baseline the bad cases below each break in one way");
  const broken = [
    { v: 2 },
    { size: -1 },
    { seq: 1.5 },
    { ph: 3 },
    { pieces: [{ offset: "0", size: 1, t: "ab" }] },
    { pieces: [{ offset: 0, size: 1, t: "../state" }] },
    { pieces: [{ offset: 0, size: 1 }] },
    { mpu: 5 },
  ].map((change) => JSON.stringify({ ...ok, ...change }));
  for (const bad of [undefined, "", "{", "null", ...broken]) {
    assert.throws(() => parseSessionState(bad), /malformed/, String(bad));
  }
});

test("a store failure becomes 503 UNAVAILABLE naming the S3 error, never S3's message (it may name the bucket)", () => {
  const s3Error = Object.assign(new Error("Access Denied for bucket secret-bucket-name"), { name: "AccessDenied", $metadata: { httpStatusCode: 403 } });
  const failure = storeUnavailable(s3Error, "storing upload data");
  assert.equal(failure.code, "UNAVAILABLE");
  assert.equal(failure.status, 503);
  assert.deepEqual(failure.detail, { store: "s3", reason: "AccessDenied", status: 403 });
  assert.doesNotMatch(JSON.stringify({ message: failure.message, detail: failure.detail }), /secret-bucket-name/);
  const refused = storeUnavailable(Object.assign(new Error("connect ECONNREFUSED 10.0.0.5:7480"), { code: "ECONNREFUSED" }), "reading a blob");
  assert.deepEqual(refused.detail, { store: "s3", reason: "ECONNREFUSED" });
  assert.doesNotMatch(refused.message, /10\.0\.0\.5/);
  // A missing object is an answer, a missing bucket is not.
  assert.equal(isMissing(Object.assign(new Error(""), { name: "NoSuchKey" })), true);
  assert.equal(isMissing(Object.assign(new Error(""), { name: "NotFound", $metadata: { httpStatusCode: 404 } })), true);
  assert.equal(isMissing(Object.assign(new Error(""), { name: "NoSuchBucket", $metadata: { httpStatusCode: 404 } })), false);
});

test("payloads go unsigned only where TLS or loopback protects them; keep-alive is dropped only on loopback", () => {
  assert.equal(payloadProtectedInTransit(undefined), true, "AWS default endpoint is HTTPS");
  assert.equal(payloadProtectedInTransit("https://s3.example.com"), true);
  assert.equal(payloadProtectedInTransit("http://127.0.0.1:7480"), true);
  assert.equal(payloadProtectedInTransit("http://[::1]:7480"), true);
  assert.equal(payloadProtectedInTransit("http://10.0.0.5:7480"), false);
  assert.equal(payloadProtectedInTransit("http://127.evil.example:7480"), false);
  assert.equal(isLoopbackEndpoint("http://127.0.0.1:7480"), true);
  assert.equal(isLoopbackEndpoint("https://s3.amazonaws.com"), false);
  assert.equal(isLoopbackEndpoint(undefined), false);
});

test("the piece cache is bounded and forgets on request; known parts are used only when they add up", () => {
  const cache = new PieceCache();
  const big = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < 6; i++) cache.remember(`k${i}`, big);
  assert.equal(cache.get("k0"), undefined, "oldest evicted past 32 MiB");
  assert.ok(cache.get("k5"));
  cache.remember("huge", Buffer.alloc(9 * 1024 * 1024));
  assert.equal(cache.get("huge"), undefined, "entries above 8 MiB are not kept");
  cache.forget(["k5"]);
  assert.equal(cache.get("k5"), undefined);

  const known = new KnownParts();
  known.add("u", [{ n: 1, etag: "a", size: 5 }]);
  known.add("u", [{ n: 2, etag: "b", size: 3 }]);
  assert.equal(known.take("u", 2, 9), null, "sizes that do not add up are asked of S3");
  known.add("u", [{ n: 1, etag: "a", size: 5 }, { n: 2, etag: "b", size: 3 }]);
  assert.deepEqual(known.take("u", 2, 8)?.map((p) => p.etag), ["a", "b"]);
  assert.equal(known.take("u", 2, 8), null, "taken once");
  known.add("v", [{ n: 2, etag: "b", size: 3 }]);
  assert.equal(known.take("v", 2, 3), null, "a part this process did not upload is missing");
});

test("buffers for parts still uploading come from a process-wide budget, so concurrent pushes cannot multiply memory", () => {
  const pool = new PartBufferPool(1024, 4, 2);
  const base = pool.take();
  const a = pool.tryTakeExtra();
  const b = pool.tryTakeExtra();
  assert.ok(a && b);
  assert.equal(pool.tryTakeExtra(), null, "budget of 2 spent");
  pool.giveExtra(a);
  const c = pool.tryTakeExtra();
  assert.equal(c, a, "a returned buffer is reused, not allocated anew");
  assert.equal(pool.tryTakeExtra(), null);
  pool.give(base);
  assert.equal(pool.tryTakeExtra(), null, "returning an append's own buffer does not widen the budget");
});

test("recently read session states are reused only for a few seconds, and forgotten when the session ends", () => {
  let now = 1_000;
  const recent = new RecentStates<{ seq: number }>(10_000, 2, () => now);
  recent.remember("a", { seq: 1 });
  assert.deepEqual(recent.get("a"), { seq: 1 });
  now += 10_001;
  assert.equal(recent.get("a"), undefined, "older than the limit: read again from S3");
  recent.remember("a", { seq: 2 });
  recent.remember("b", { seq: 1 });
  recent.remember("c", { seq: 1 });
  assert.equal(recent.get("a"), undefined, "bounded: the oldest goes");
  recent.forget("b");
  assert.equal(recent.get("b"), undefined);
  assert.deepEqual(recent.get("c"), { seq: 1 });
});

test("a store that takes the request and never answers fails it after the idle timeout instead of hanging the push", { timeout: 30_000 }, async () => {
  // What an RGW with a full OSD does: it accepts, reads the request, and answers nothing.
  const sockets = new Set<net.Socket>();
  let requests = 0;
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("data", (data) => void (requests += (data.toString("latin1").match(/^(HEAD|PUT) \//gm) ?? []).length));
    socket.on("error", () => undefined);
  });
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  const { port } = silent.address() as net.AddressInfo;
  try {
    const client = createS3Client({ endpoint: `http://127.0.0.1:${port}`, region: "us-east-1", bucket: "b", accessKeyId: "k", secretAccessKey: "s", idleTimeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(client.send(new HeadObjectCommand({ Bucket: "b", Key: "k" })), (error: Error) => error.name === "TimeoutError");
    // An upload body is sent, then nothing comes back: the same.
    const body = Buffer.alloc(1024 * 1024);
    const upload = client.send(new UploadPartCommand({ Bucket: "b", Key: "k", UploadId: "u", PartNumber: 1, Body: body, ContentLength: body.length }));
    await assert.rejects(upload, (error: Error) => error.name === "TimeoutError");
    // The SDK's attempts (3 each) with backoff, not a minute or forever.
    assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
    assert.ok(requests >= 2, `the silent store saw ${requests} requests`);
    client.destroy();
  } finally {
    for (const socket of sockets) socket.destroy();
    silent.close();
  }
});

test("once pushes go quiet, memory is returned in two steps: a collection and heap trim, then the idle part buffers", async () => {
  let collections = 0;
  const kinds: string[] = [];
  let clock = 0;
  const pool = new PartBufferPool(1024, 2, 4, { trimMs: 40, idleMs: 120, collect: (full) => void (collections++, kinds.push(full ? "full" : "minor")) }, () => clock);
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const held = [pool.take(), pool.take(), pool.take()];
  for (const buffer of held) pool.give(buffer);
  assert.equal(pool.idleCount, 2, "keeps `keep` idle buffers; the third is let go");
  // Still in use: a take within the quiet period postpones both steps.
  clock = 30;
  pool.give(pool.take());
  await wait(60);
  clock = 60;
  await wait(60);
  assert.equal(collections, 0, "no collection while pushes keep taking buffers");
  clock = 75;
  await wait(60);
  assert.equal(collections, 1, "first step: one collection and heap trim once no buffer was taken for trimMs");
  assert.equal(pool.idleCount, 2, "the idle buffers stay through the first step");
  await wait(60);
  assert.equal(collections, 1, "no second collection before idleMs");
  clock = 200;
  await wait(150);
  assert.equal(pool.idleCount, 0, "second step: idle buffers let go once no buffer was taken for idleMs");
  assert.equal(collections, 2, "with one more collection");
  // Nothing taken or let go since: no further collection.
  await wait(150);
  assert.equal(collections, 2);
  assert.deepEqual(kinds, ["minor", "full"], "young generation first (a full one on the idle heap costs the next push), full with the buffers");
  // A buffer taken after a release is a fresh one, and the next quiet period collects again.
  const fresh = pool.take();
  assert.equal(fresh.length, 1024);
  pool.give(fresh);
  clock = 300;
  await wait(80);
  assert.equal(collections, 3, "a take re-arms the first step");
});

test("a monolithic push announced smaller than a part uses a buffer of its own size, not a pooled part buffer", async () => {
  let taken = 0;
  const pool = new PartBufferPool(8 * 1024 * 1024);
  const take = pool.take.bind(pool);
  pool.take = () => (taken++, take());
  const sent: Array<{ name: string; body?: Buffer }> = [];
  const client = {
    send: async (command: { constructor: { name: string }; input: { Body?: Buffer } }) => {
      sent.push({ name: command.constructor.name, body: command.input.Body });
      return {};
    },
  };
  const bytes = Buffer.from("x".repeat(16 * 1024 + 3));
  const target = { client: client as never, bucket: "b", key: "blobs/sha256/x", partSize: 8 * 1024 * 1024, pool, partsInFlight: 2, active: new Set<string>() };
  const blob = await stagePut(target, Readable.from([bytes.subarray(0, 5000), bytes.subarray(5000)]), { exactBytes: bytes.length });
  assert.equal(blob.size, bytes.length);
  assert.equal(sent.length, 0, "nothing is stored before the digest is verified");
  await blob.publish();
  assert.equal(taken, 0, "no part buffer was taken from the pool");
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.name, "PutObjectCommand");
  assert.ok(sent[0]!.body!.equals(bytes), "the blob's exact bytes");
  assert.equal(sent[0]!.body!.buffer.byteLength < 1024 * 1024, true, "held in a buffer of about its own size");
  // More bytes than announced still fail, before anything is stored.
  await assert.rejects(stagePut(target, Readable.from([bytes, Buffer.from("y")]), { exactBytes: bytes.length }), /length|bytes/i);
  assert.equal(sent.length, 1);
});
