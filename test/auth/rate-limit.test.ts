/**
 * Failed logins are limited per user name and per client address: 429
 * TOOMANYREQUESTS with Retry-After, on Basic API requests and on /token
 * alike. A locked user name is refused even with the right password; an
 * address over its limit gets 429 for failures only (test/auth/lockout.test.ts
 * covers the shared-proxy case).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { LoginLimiter } from "../../src/auth/rate-limit.js";
import { RegistryError } from "../../src/oci/errors.js";
import { basic, bcryptHash, errorCode } from "./util.js";

test("per user: after perUser failures the user is locked out, other users are not", async () => {
  const registry = await startTestRegistry({
    auth: {
      users: { alice: { passwordHash: bcryptHash("pw") }, bob: { passwordHash: bcryptHash("pw") } },
      rateLimit: { perUser: 3, perAddress: 100, window: "10m" },
    },
  });
  try {
    const v2 = (auth: string) => fetch(`${registry.url}/v2/`, { headers: { authorization: auth } });
    for (let i = 0; i < 3; i++) assert.equal((await v2(basic("alice", "wrong"))).status, 401, `failure ${i + 1}`);
    const locked = await v2(basic("alice", "pw"));
    assert.equal(locked.status, 429, "locked out even with the right password");
    assert.equal(await errorCode(locked), "TOOMANYREQUESTS");
    const retryAfter = Number(locked.headers.get("retry-after"));
    assert.ok(retryAfter > 590 && retryAfter <= 600, `Retry-After ${retryAfter}`);
    const viaToken = await fetch(`${registry.url}/token?service=ferry`, { headers: { authorization: basic("alice", "pw") } });
    assert.equal(viaToken.status, 429, "the token endpoint shares the limit");
    const viaPost = await fetch(`${registry.url}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "grant_type=password&username=alice&password=pw&service=ferry",
    });
    assert.equal(viaPost.status, 429);
    assert.equal((await v2(basic("bob", "pw"))).status, 200, "another user from the same address is unaffected");
  } finally {
    await registry.close();
  }
});

test("per address: failures across many user names get 429, a correct password still works", async () => {
  const registry = await startTestRegistry({
    auth: { users: { alice: { passwordHash: bcryptHash("pw") } }, rateLimit: { perUser: 100, perAddress: 4, window: "1m" } },
  });
  try {
    for (let i = 0; i < 4; i++) {
      const response = await fetch(`${registry.url}/token?service=ferry`, { headers: { authorization: basic(`guess${i}`, "x") } });
      assert.equal(response.status, 401);
    }
    const locked = await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("guess9", "x") } });
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers.get("retry-after")) > 0);
    assert.equal((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("alice", "pw") } })).status, 200);
    // Anonymous requests carry no credentials to guess with and are not limited.
    assert.equal((await fetch(`${registry.url}/v2/`)).status, 401);
  } finally {
    await registry.close();
  }
});

test("the lock lifts when failures age out of the window", () => {
  let now = 1_000_000;
  const limiter = new LoginLimiter({ windowMs: 60_000, perUser: 2, perAddress: 10, maxEntries: 1000 }, () => now);
  limiter.failed("1.2.3.4", "u");
  limiter.admit("1.2.3.4", "u"); // one failure: not limited
  now += 10_000;
  limiter.failed("1.2.3.4", "u");
  assert.throws(() => limiter.admit("1.2.3.4", "u"), (error: RegistryError) => {
    assert.equal(error.code, "TOOMANYREQUESTS");
    assert.equal(error.status, 429);
    assert.equal(error.headers["Retry-After"], "50");
    return true;
  });
  now += 50_001;
  limiter.admit("1.2.3.4", "u");
});
