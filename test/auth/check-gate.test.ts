/**
 * Password checks cost ~300 ms of CPU each, and wrong passwords are known to
 * be wrong only after the check: the number of checks in progress is bounded
 * per address and in total, so a few clients cannot keep every core busy.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CheckGate } from "../../src/auth/check-gate.js";
import { RegistryError } from "../../src/oci/errors.js";

test("at most `concurrency` checks run at once; the rest wait their turn in order", async () => {
  const gate = new CheckGate({ concurrency: 2, perAddress: 10, maxWaiting: 10 });
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  const work = (i: number) => async () => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((resolve) => setTimeout(resolve, 20));
    running--;
    order.push(i);
    return i;
  };
  const results = await Promise.all([0, 1, 2, 3, 4].map((i) => gate.run(`10.0.0.${i}`, work(i))));
  assert.deepEqual(results, [0, 1, 2, 3, 4]);
  assert.equal(peak, 2);
  assert.deepEqual(order.slice(2), [2, 3, 4], "waiters run first come, first served");
});

test("one address beyond its share is refused with 429 at once; other addresses still get in", async () => {
  const gate = new CheckGate({ concurrency: 1, perAddress: 2, maxWaiting: 100 });
  let release!: () => void;
  const blocked = new Promise<void>((resolve) => (release = resolve));
  const first = gate.run("attacker", () => blocked);
  const second = gate.run("attacker", async () => undefined);
  await assert.rejects(gate.run("attacker", async () => undefined), (error: unknown) => {
    assert.ok(error instanceof RegistryError);
    assert.equal(error.status, 429);
    assert.equal(error.code, "TOOMANYREQUESTS");
    return true;
  });
  const other = gate.run("admin", async () => "in");
  release();
  await Promise.all([first, second]);
  assert.equal(await other, "in");
  // Slots are given back: the attacker may try again once its checks ended.
  assert.equal(await gate.run("attacker", async () => "again"), "again");
});

test("a failing check gives its slot back", async () => {
  const gate = new CheckGate({ concurrency: 1, perAddress: 1, maxWaiting: 1 });
  await assert.rejects(gate.run("a", async () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(await gate.run("a", async () => 1), 1);
});
