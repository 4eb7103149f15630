/**
 * The durable queue on its own: only the oldest event of a repository can be
 * claimed, two processes on one file never claim the same event, dropping
 * the oldest on overflow keeps the order of what remains, and the counters
 * stay right without scanning the backlog.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NotificationQueue, type QueuedEvent } from "../../src/notifications/queue.js";

async function queuePath(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-queue-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "metadata.db.notifications");
}

function event(key: string, id: string, endpoint = "e"): QueuedEvent {
  return { endpoint, orderingKey: key, eventId: id, action: "push", payload: JSON.stringify({ id }) };
}

test("only each key's oldest event is claimable; the next becomes claimable once it is delivered or given up", async (t) => {
  const q = new NotificationQueue(await queuePath(t));
  t.after(async () => q.close());
  const now = 1_000;
  q.enqueue([event("a", "a1"), event("a", "a2"), event("b", "b1"), event("a", "a3")], now, 100);
  const first = q.claim("e", "h", now, 5_000, 10);
  assert.deepEqual(first.map((d) => d.eventId), ["a1", "b1"]);
  assert.deepEqual(q.claim("e", "h", now, 5_000, 10), [], "claimed heads block their keys");
  q.failedAttempt(first[0]!, "h", now, "answered 500", now + 100);
  assert.deepEqual(q.claim("e", "h", now + 50, 5_000, 10), [], "a1 waits for its retry, and a2 behind it");
  const retried = q.claim("e", "h", now + 100, 5_000, 10);
  assert.deepEqual(retried.map((d) => [d.eventId, d.attempts]), [["a1", 1]]);
  q.succeeded(retried[0]!, "h", now + 100);
  assert.deepEqual(q.claim("e", "h", now + 100, 5_000, 10).map((d) => d.eventId), ["a2"]);
  q.failedAttempt(first[1]!, "h", now, "timed out", null);
  const stats = q.stats().get("e")!;
  assert.deepEqual(
    { pending: stats.pending, delivered: stats.delivered, failed: stats.failedAttempts, givenUp: stats.givenUp, lastError: stats.lastError },
    { pending: 2, delivered: 1, failed: 2, givenUp: 1, lastError: "timed out" },
  );
});

test("two processes on one file claim disjoint events, and a dead holder's claim runs out", async (t) => {
  const path = await queuePath(t);
  const one = new NotificationQueue(path);
  const two = new NotificationQueue(path);
  t.after(async () => {
    one.close();
    two.close();
  });
  const now = 1_000;
  one.enqueue(Array.from({ length: 20 }, (_, i) => event(`k${i}`, `e${i}`)), now, 100);
  const a = one.claim("e", "one", now, 5_000, 15);
  const b = two.claim("e", "two", now, 60_000, 15);
  assert.equal(a.length, 15);
  assert.equal(b.length, 5);
  assert.equal(new Set([...a, ...b].map((d) => d.eventId)).size, 20, "no event claimed twice");
  // "one" dies: its claims expire and "two" takes them; "one"'s late success then changes nothing.
  const taken = two.claim("e", "two", now + 5_000, 5_000, 20);
  assert.equal(taken.length, 15);
  one.succeeded(a[0]!, "one", now + 6_000);
  assert.equal(two.stats().get("e")!.delivered, 0, "a lost claim cannot complete");
});

test("a full queue drops the oldest, keeps the rest in order, and counts per endpoint", async (t) => {
  const q = new NotificationQueue(await queuePath(t));
  t.after(async () => q.close());
  const now = 1_000;
  for (let i = 1; i <= 5; i++) q.enqueue([event("a", `a${i}`), event("a", `x${i}`, "other")], now, 3);
  const stats = q.stats();
  assert.deepEqual([stats.get("e")!.pending, stats.get("e")!.dropped], [3, 2]);
  assert.deepEqual([stats.get("other")!.pending, stats.get("other")!.dropped], [3, 2]);
  const order: string[] = [];
  for (;;) {
    const [next] = q.claim("e", "h", now, 5_000, 5);
    if (!next) break;
    order.push(next.eventId);
    q.succeeded(next, "h", now);
  }
  assert.deepEqual(order, ["a3", "a4", "a5"]);
  assert.equal(q.stats().get("e")!.pending, 0);
});

test("a claim takes the events waiting behind a head into one envelope; a failure keeps them waiting, a success removes them all", async (t) => {
  const q = new NotificationQueue(await queuePath(t));
  t.after(async () => q.close());
  const now = 1_000;
  q.enqueue([event("a", "a1"), event("a", "a2"), event("b", "b1"), event("a", "a3"), event("a", "a4")], now, 100);
  const [a, b] = q.claim("e", "h", now, 5_000, 10, 3);
  assert.deepEqual([a!.eventId, ...a!.followers.map((f) => f.eventId)], ["a1", "a2", "a3"]);
  assert.deepEqual([b!.eventId, b!.followers.length], ["b1", 0]);
  q.failedAttempt(a!, "h", now, "answered 500", now + 10);
  const [again] = q.claim("e", "h", now + 10, 5_000, 10, 3);
  assert.deepEqual([again!.eventId, ...again!.followers.map((f) => f.eventId), again!.attempts], ["a1", "a2", "a3", 1], "the same batch, in order");
  q.succeeded(again!, "h", now + 10);
  const [rest] = q.claim("e", "h", now + 10, 5_000, 10, 3);
  assert.deepEqual([rest!.eventId, rest!.followers.length], ["a4", 0]);
  const stats = q.stats().get("e")!;
  assert.deepEqual([stats.delivered, stats.pending, stats.failedAttempts], [3, 2, 1]);
});
