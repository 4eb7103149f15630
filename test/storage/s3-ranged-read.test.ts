/**
 * Blob reads as ranged windows fetched ahead of the client (s3-ranged-read.ts),
 * against a fake store: bytes arrive in order whatever order windows finish in,
 * a window that fails or ends short fails the stream (never a short blob with
 * success), memory ahead stays within the process-wide budget, and a client
 * that goes away aborts what is in flight.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { PrefetchBudget, RangedObjectStream, totalFromContentRange, type FetchWindow } from "../../src/storage/s3-ranged-read.js";

const W = 1000;

function fakeStore(bytes: Buffer, options: { delay?: (start: number) => number; short?: number; fail?: number } = {}) {
  const calls: Array<{ start: number; end: number; signal: AbortSignal }> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const fetch: FetchWindow = async (start, end, signal) => {
    calls.push({ start, end, signal });
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((resolve) => setTimeout(resolve, options.delay?.(start) ?? 1));
    inFlight--;
    if (options.fail === start) throw new Error("store went away");
    const slice = bytes.subarray(start, end + 1);
    const sent = options.short === start ? slice.subarray(0, slice.length - 1) : slice;
    // Several chunks per window, as a socket delivers them.
    const chunks = [sent.subarray(0, 300), sent.subarray(300, 700), sent.subarray(700)].filter((c) => c.length > 0);
    return { body: Readable.from(chunks, { objectMode: false }), length: slice.length };
  };
  return { fetch, calls, maxInFlight: () => maxInFlight };
}

async function open(bytes: Buffer, fetch: FetchWindow, budget: PrefetchBudget, start: number, end: number): Promise<RangedObjectStream> {
  const firstEnd = Math.min(end, start + W - 1);
  const first = await fetch(start, firstEnd, new AbortController().signal);
  return new RangedObjectStream(fetch, budget, { start, end: firstEnd, open: first }, end, W);
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test("a blob read in windows arrives whole and in order, even when later windows finish first", async () => {
  const bytes = randomBytes(10 * W + 123);
  // Later windows answer sooner than earlier ones.
  const store = fakeStore(bytes, { delay: (start) => 30 - Math.min(29, start / W) * 3 });
  const got = await collect(await open(bytes, store.fetch, new PrefetchBudget(10 * W), 0, bytes.length - 1));
  assert.ok(got.equals(bytes));
  assert.ok(store.maxInFlight() >= 2, "windows are fetched ahead of the client");
  // Windows tile the blob exactly.
  const sorted = store.calls.map((c) => [c.start, c.end]).sort((a, b) => a[0]! - b[0]!);
  assert.deepEqual(sorted[0], [0, W - 1]);
  assert.deepEqual(sorted.at(-1), [10 * W, 10 * W + 122]);
});

test("a range that starts and ends inside windows gets exactly its bytes", async () => {
  const bytes = randomBytes(8 * W);
  const store = fakeStore(bytes);
  const got = await collect(await open(bytes, store.fetch, new PrefetchBudget(10 * W), W - 7, 5 * W + 3));
  assert.ok(got.equals(bytes.subarray(W - 7, 5 * W + 4)));
});

test("a window that ends short fails the stream instead of ending the blob early", async () => {
  const bytes = randomBytes(6 * W);
  const store = fakeStore(bytes, { short: 3 * W });
  await assert.rejects(collect(await open(bytes, store.fetch, new PrefetchBudget(10 * W), 0, bytes.length - 1)), /sent 999 of 1000 bytes/);
});

test("a window the store fails to send fails the stream", async () => {
  const bytes = randomBytes(6 * W);
  const store = fakeStore(bytes, { fail: 2 * W });
  await assert.rejects(collect(await open(bytes, store.fetch, new PrefetchBudget(10 * W), 0, bytes.length - 1)), /store went away/);
});

test("with the prefetch budget spent, a read still completes one window at a time, and the budget is returned", async () => {
  const bytes = randomBytes(6 * W);
  const budget = new PrefetchBudget(0);
  const store = fakeStore(bytes);
  assert.ok((await collect(await open(bytes, store.fetch, budget, 0, bytes.length - 1))).equals(bytes));
  assert.equal(store.maxInFlight(), 1);
  const shared = new PrefetchBudget(2 * W);
  await Promise.all([0, 1, 2].map(async () => assert.ok((await collect(await open(bytes, fakeStore(bytes).fetch, shared, 0, bytes.length - 1))).equals(bytes))));
  assert.ok(shared.tryTake(2 * W), "every reservation was given back");
});

test("a client that goes away aborts the windows in flight and returns their budget", async () => {
  const bytes = randomBytes(20 * W);
  const budget = new PrefetchBudget(4 * W);
  const store = fakeStore(bytes, { delay: () => 20 });
  const stream = await open(bytes, store.fetch, budget, 0, bytes.length - 1);
  await new Promise((resolve) => setTimeout(resolve, 5));
  stream.destroy();
  await new Promise((resolve) => setTimeout(resolve, 40));
  const started = store.calls.slice(1);
  assert.ok(started.length > 0 && started.every((c) => c.signal.aborted), "in-flight windows aborted");
  assert.ok(budget.tryTake(4 * W), "budget returned");
  assert.ok(store.calls.length < 20, "nothing more is fetched for a client that left");
});

test("Content-Range totals", () => {
  assert.equal(totalFromContentRange("bytes 0-4194303/104857600"), 104857600);
  assert.equal(totalFromContentRange("bytes 0-0/*"), null);
  assert.equal(totalFromContentRange(undefined), null);
});
