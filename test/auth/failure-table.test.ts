/**
 * Bounded failure counts: a full table must not forget everything at once
 * (the old limiter cleared all counts when it held 100 000 keys, so spraying
 * fresh names unlocked every locked user and address), must not let fresh
 * names push out a key under attack, and must never grow past its bound.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { FailureTable } from "../../src/auth/failure-table.js";
import { LoginLimiter } from "../../src/auth/rate-limit.js";
import { RegistryError } from "../../src/oci/errors.js";

const WINDOW = 60_000;

function isTooMany(error: unknown): boolean {
  return error instanceof RegistryError && error.code === "TOOMANYREQUESTS";
}

test("at the default size, overflowing the table with fresh names keeps the locked user and the spraying address limited", () => {
  let now = 1_000_000;
  const limiter = new LoginLimiter({ windowMs: WINDOW, perUser: 10, perAddress: 30, maxEntries: 100_000 }, () => now);
  for (let i = 0; i < 10; i++) limiter.failed("10.0.0.1", "admin");
  assert.throws(() => limiter.admit("10.0.0.9", "admin"), isTooMany);
  for (let i = 0; i < 100_050; i++) {
    if (i % 10_000 === 0) now += 1; // time moves on, but well within the window
    limiter.failed(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, `sprayed-${i}`);
  }
  assert.throws(() => limiter.admit("10.0.0.9", "admin"), isTooMany, "the user under attack is still locked");
  const sizes = limiter.sizes;
  assert.ok(sizes.users <= 100_000 && sizes.addresses <= 100_000, `tables stay bounded: ${JSON.stringify(sizes)}`);
  // An address that sprayed many names is still limited for its failures.
  const sprayer = new LoginLimiter({ windowMs: WINDOW, perUser: 10, perAddress: 30, maxEntries: 100 }, () => now);
  for (let i = 0; i < 1000; i++) sprayer.failed("10.9.9.9", `name-${i}`);
  assert.ok(isTooMany(sprayer.failed("10.9.9.9", "one-more").error), "the spraying address is still limited");
});

test("a full table evicts expired keys first, then those with the fewest recent failures, never the busiest", () => {
  let now = 0;
  const table = new FailureTable({ limit: 5, windowMs: WINDOW, maxEntries: 4, now: () => now });
  table.record("old");
  now += WINDOW + 1; // "old" has expired
  for (let i = 0; i < 5; i++) table.record("attacked");
  table.record("once");
  table.record("twice");
  table.record("twice");
  assert.equal(table.size, 4);
  table.record("new-1"); // replaces the expired key
  assert.equal(table.count("old"), 0);
  assert.equal(table.count("attacked"), 5);
  assert.equal(table.count("once"), 1);
  table.record("new-2"); // replaces a key with one failure, not "attacked"
  assert.equal(table.size, 4);
  assert.equal(table.count("attacked"), 5);
  assert.equal(table.count("twice"), 2);
  for (let i = 0; i < 1000; i++) table.record(`filler-${i}`);
  assert.equal(table.size, 4);
  assert.equal(table.count("attacked"), 5, "the locked key survives a flood of fresh keys");
  assert.ok(table.wait("attacked") > 0);
});

test("huge keys are stored by digest and still counted", () => {
  const table = new FailureTable({ limit: 2, windowMs: WINDOW, maxEntries: 10, now: () => 0 });
  const huge = "u".repeat(16_000);
  table.record(huge);
  table.record(huge);
  assert.equal(table.count(huge), 2);
  assert.equal(table.count(huge.slice(1)), 0);
  assert.ok(table.wait(huge) > 0);
});

test("per-address limit: failures get 429 with Retry-After, successes are never refused unless the name is locked", () => {
  let now = 0;
  const limiter = new LoginLimiter({ windowMs: WINDOW, perUser: 10, perAddress: 3, maxEntries: 1000 }, () => now);
  for (let i = 0; i < 3; i++) assert.equal(limiter.failed("10.0.0.1", `x${i}`).error, null);
  now += 1000;
  limiter.admit("10.0.0.1", "admin"); // the admin's attempt is let through to the password check
  const outcome = limiter.failed("10.0.0.1", "x9");
  assert.ok(outcome.error !== null && isTooMany(outcome.error));
  assert.equal(outcome.error.headers["Retry-After"], "59"); // the three failures at t=0 leave the window at t=60 s
  assert.equal(limiter.failed("10.0.0.2", "x9").error, null, "another address is not limited");
});

test("reaching a limit is reported once, not on every later failure", () => {
  const limiter = new LoginLimiter({ windowMs: WINDOW, perUser: 2, perAddress: 3, maxEntries: 1000 }, () => 0);
  const reached = Array.from({ length: 6 }, (_, i) => limiter.failed("10.0.0.1", "u").reached.join(",") || `-${i}`);
  assert.deepEqual(reached, ["-0", "user", "address", "-3", "-4", "-5"]);
});
