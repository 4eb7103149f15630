/**
 * The cold-pull pipeline's guarantees (docs/mirrors.md "Speed"): the flight
 * hashes on the upstream's data events and keeps chunks only while a client
 * or the store needs them; mirror blob bodies come from the SSRF-safe fetcher
 * without a stream stage, with the same byte and idle bounds.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough, Readable } from "node:stream";
import { createHash, randomBytes } from "node:crypto";
import { BlobFlight, DigestMismatchError } from "../../src/mirrors/blob-flight.js";
import { SafeFetcher, FetchError } from "../../src/federation/fetcher.js";

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A store that takes what it is given at once. */
const eagerStore = (into: Buffer[]) => async (verified: Readable) => {
  for await (const chunk of verified) into.push(chunk as Buffer);
};

test("a slow client keeps its bytes only within the window: memory stays bounded, and it is then sent to the store", async () => {
  const bytes = randomBytes(1024 * 1024);
  const flight = new BlobFlight(sha256(bytes), bytes.length, { windowBytes: 128 * 1024, lateJoinBytes: 16 * 1024 });
  const slow = flight.join(); // never moves: a client that stopped reading
  const upstream = new PassThrough();
  const stored: Buffer[] = [];
  const running = flight.run(upstream, eagerStore(stored));
  let peak = 0;
  for (let i = 0; i < 64; i++) {
    upstream.write(bytes.subarray(i * 16384, (i + 1) * 16384));
    await tick();
    peak = Math.max(peak, flight.heldBytes);
    if (i === 4) {
      const piece = flight.pieceAt(0, slow);
      assert.equal(piece.kind, "bytes", "a client behind by less than the window still gets its bytes from memory (past the late-join bytes)");
    }
  }
  upstream.end();
  await running;
  assert.deepEqual(Buffer.concat(stored), bytes);
  assert.ok(peak <= 128 * 1024 + 16384, `held at most the window (+ one chunk), held ${peak}`);
  assert.equal(flight.pieceAt(0, slow).kind, "behind", "further behind than the window: the store serves it");
  flight.leave(slow);
});

test("clients that keep up let the flight drop chunks at once: only the late-join bytes stay held", async () => {
  const bytes = randomBytes(1024 * 1024);
  const flight = new BlobFlight(sha256(bytes), bytes.length, { windowBytes: 512 * 1024, lateJoinBytes: 32 * 1024 });
  const client = flight.join();
  const upstream = new PassThrough();
  const running = flight.run(upstream, eagerStore([]));
  let offset = 0;
  let peak = 0;
  for (let i = 0; i < 64; i++) {
    upstream.write(bytes.subarray(i * 16384, (i + 1) * 16384));
    await tick();
    for (let piece = flight.pieceAt(offset, client); piece.kind === "bytes"; piece = flight.pieceAt(offset, client)) offset += piece.bytes.length;
    peak = Math.max(peak, flight.heldBytes);
  }
  upstream.end();
  await running;
  assert.equal(offset, bytes.length);
  assert.ok(peak <= 32 * 1024 + 2 * 16384, `held ${peak} bytes with every reader caught up (late-join 32 KiB)`);
  flight.leave(client);
});

test("a mismatch found at the last byte cuts every client and the store: the last chunk is never handed out", async () => {
  const bytes = randomBytes(256 * 1024);
  const flight = new BlobFlight(`sha256:${"1".repeat(64)}`, bytes.length);
  const client = flight.join();
  const upstream = new PassThrough();
  let storedBytes = 0;
  const running = flight.run(upstream, async (verified) => {
    for await (const chunk of verified) storedBytes += (chunk as Buffer).length;
  });
  const woken = flight.changed();
  upstream.end(bytes);
  await assert.rejects(running, DigestMismatchError);
  await woken; // a waiting client is woken to see the failure
  assert.ok(flight.failed instanceof DigestMismatchError);
  assert.equal(flight.pieceAt(0, client).kind, "wait", "nothing to send once failed");
  assert.ok(storedBytes < bytes.length, "the store never got the whole (wrong) blob");
  await assert.rejects(flight.done);
  flight.leave(client);
});

test("an upstream that sends more than the blob's size, or ends early, fails the flight", async () => {
  const bytes = randomBytes(64 * 1024);
  const longer = new BlobFlight(sha256(bytes), bytes.length - 1);
  await assert.rejects(longer.run(Readable.from([bytes]), eagerStore([])), /more than the expected/);
  const shorter = new BlobFlight(sha256(bytes), bytes.length);
  await assert.rejects(shorter.run(Readable.from([bytes.subarray(0, 1000)]), eagerStore([])), /size mismatch/);
  const cut = new BlobFlight(sha256(bytes), bytes.length);
  const upstream = new PassThrough();
  const running = cut.run(upstream, eagerStore([]));
  upstream.write(bytes.subarray(0, 1000));
  await tick();
  upstream.destroy(new Error("connection reset"));
  await assert.rejects(running, /connection reset/);
});

test("an empty blob is checked against its digest too", async () => {
  const wrong = new BlobFlight(`sha256:${"2".repeat(64)}`, 0);
  await assert.rejects(wrong.run(Readable.from([]), eagerStore([])), DigestMismatchError);
  const right = new BlobFlight(sha256(Buffer.alloc(0)), 0);
  await right.run(Readable.from([]), eagerStore([]));
  assert.ok(right.isStored);
});

/** A loopback server whose blob answer the test scripts. */
async function scriptedServer(t: { after: (fn: () => unknown) => void }, handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/blob`;
}

function fetcher(t: { after: (fn: () => unknown) => void }): SafeFetcher {
  const f = new SafeFetcher({ schemes: ["http"], allowPrivateNetworks: true });
  t.after(() => f.close());
  return f;
}

test("plain fetcher bodies keep the idle timeout: an upstream that stalls mid-body is cut", async (t) => {
  const url = await scriptedServer(t, (_req, res) => {
    res.writeHead(200, { "Content-Length": "100000" });
    res.write(Buffer.alloc(1000)); // then nothing
  });
  const response = await fetcher(t).fetch({ url, method: "GET", timeoutMs: 300, maxBytes: Number.MAX_SAFE_INTEGER, plainBody: true });
  let got = 0;
  const failure = await new Promise<unknown>((resolve) => {
    response.body.on("data", (chunk: Buffer) => (got += chunk.length));
    response.body.on("error", resolve);
    response.body.on("end", () => resolve(null));
    response.body.resume();
  });
  assert.equal(got, 1000);
  assert.ok(failure instanceof FetchError && failure.kind === "timeout", `stalled body ends with a timeout, got ${String(failure)}`);
});

test("plain fetcher bodies: a consumer that holds the body back longer than the idle timeout is not a stalled source", async (t) => {
  const payload = randomBytes(4 * 1024 * 1024);
  const url = await scriptedServer(t, (_req, res) => {
    res.writeHead(200, { "Content-Length": String(payload.length) });
    res.end(payload);
  });
  const response = await fetcher(t).fetch({ url, method: "GET", timeoutMs: 200, maxBytes: Number.MAX_SAFE_INTEGER, plainBody: true });
  await new Promise((resolve) => setTimeout(resolve, 600)); // handed over paused; nobody reads yet
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    response.body.on("data", (chunk: Buffer) => chunks.push(chunk));
    response.body.on("error", reject);
    response.body.on("end", resolve);
    response.body.resume();
  });
  assert.deepEqual(Buffer.concat(chunks), payload, "every byte, none lost before the consumer attached");
});

test("plain fetcher bodies keep the byte limit", async (t) => {
  const url = await scriptedServer(t, (_req, res) => {
    res.writeHead(200); // no Content-Length: chunked, so only the body count can catch it
    res.end(Buffer.alloc(64 * 1024));
  });
  const response = await fetcher(t).fetch({ url, method: "GET", timeoutMs: 5000, maxBytes: 1000, plainBody: true });
  const failure = await new Promise<unknown>((resolve) => {
    response.body.on("data", () => undefined);
    response.body.on("error", resolve);
    response.body.on("end", () => resolve(null));
    response.body.resume();
  });
  assert.ok(failure instanceof FetchError && failure.kind === "too-large", `got ${String(failure)}`);
});

test("a mismatch before the store started reading (a small blob arrives whole first) fails the flight and the store, and is no uncaught exception", async () => {
  const bytes = randomBytes(4096);
  const flight = new BlobFlight(`sha256:${"3".repeat(64)}`, bytes.length);
  let storeError: unknown = null;
  await assert.rejects(
    flight.run(Readable.from([bytes]), async (verified) => {
      await new Promise((resolve) => setTimeout(resolve, 50)); // like startUpload's file system round trips
      try {
        for await (const _chunk of verified) void _chunk;
      } catch (error) {
        storeError = error;
        throw error;
      }
    }),
    DigestMismatchError,
  );
  assert.ok(storeError instanceof DigestMismatchError, "the store's stream ends with the mismatch, not a clean end");
});
