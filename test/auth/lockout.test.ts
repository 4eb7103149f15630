/**
 * The shared-address lockout (hardening issue, item 5): an attacker behind
 * the same address as everyone else (a TLS proxy, a NAT) sprays made-up user
 * names. The address gets 429 for its further failures, the user name under
 * attack is locked, and everyone else, the admin included, still logs in
 * with the right password: over real HTTP, on Basic /v2/ and on /token (GET
 * and POST). Other loopback source addresses (127.0.0.2) stand for other
 * clients.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { basic, bcryptHash } from "./util.js";

const PASSWORD = { admin: "admin-pw", alice: "alice-pw", bob: "bob-pw" } as const;

function auth(rateLimit: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    auth: {
      users: {
        admin: { passwordHash: bcryptHash(PASSWORD.admin) },
        alice: { passwordHash: bcryptHash(PASSWORD.alice) },
        bob: { passwordHash: bcryptHash(PASSWORD.bob) },
      },
      admins: { users: ["admin"] },
      rateLimit,
    },
  };
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request from the loopback source address `from`. */
function send(registry: TestRegistry, path: string, options: { from?: string; method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const url = new URL(path, registry.url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method: options.method ?? "GET", headers: options.headers, localAddress: options.from ?? "127.0.0.1" },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

type Via = "v2" | "token-get" | "token-post";

/** A login attempt by one of the three routes a client can take. */
function login(registry: TestRegistry, via: Via, user: string, password: string, from = "127.0.0.1"): Promise<Answer> {
  if (via === "v2") return send(registry, "/v2/", { from, headers: { authorization: basic(user, password) } });
  if (via === "token-get") return send(registry, "/token?service=ferry&scope=repository:x/y:pull", { from, headers: { authorization: basic(user, password) } });
  return send(registry, "/token", {
    from,
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "password", service: "ferry", username: user, password }).toString(),
  });
}

function code(answer: Answer): string | undefined {
  return (JSON.parse(answer.body) as { errors?: Array<{ code: string }> }).errors?.[0]?.code;
}

function assertTooMany(answer: Answer, what: string): void {
  assert.equal(answer.status, 429, `${what}: ${answer.status} ${answer.body}`);
  assert.equal(code(answer), "TOOMANYREQUESTS", what);
  const retryAfter = Number(answer.headers["retry-after"]);
  assert.ok(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 300, `${what}: Retry-After ${answer.headers["retry-after"]}`);
}

for (const via of ["v2", "token-get", "token-post"] as const) {
  test(`${via}: 30 failures for made-up users from one address do not lock the admin out of it; the address's further failures get 429`, async () => {
    const registry = await startTestRegistry(auth());
    try {
      for (let i = 0; i < 30; i++) {
        const answer = await login(registry, via, `made-up-${i}`, "guess");
        assert.equal(answer.status, 401, `failure ${i + 1}: ${answer.body}`);
      }
      // The issue: here every user of the address got 429 for 5 minutes.
      assert.equal((await login(registry, via, "admin", PASSWORD.admin)).status, 200, "the admin logs in from the spraying address");
      assert.equal((await login(registry, via, "alice", PASSWORD.alice)).status, 200, "so does any user not under attack");
      assertTooMany(await login(registry, via, "made-up-31", "guess"), "a further failure from the spraying address");
      assertTooMany(await login(registry, via, "admin", "wrong"), "a wrong admin password from the spraying address");
      assert.equal((await login(registry, via, "admin", PASSWORD.admin)).status, 200, "the admin's right password still works");
      // Another client's failures are its own: 401, not 429.
      assert.equal((await login(registry, via, "made-up-x", "guess", "127.0.0.2")).status, 401, "another address is not limited");
    } finally {
      await registry.close();
    }
  });
}

test("the user name under attack is locked from every address and route, the others are not", async () => {
  const registry = await startTestRegistry(auth());
  try {
    for (let i = 0; i < 30; i++) assert.equal((await login(registry, "v2", `made-up-${i}`, "guess", "127.0.0.2")).status, 401);
    for (let i = 0; i < 10; i++) {
      const answer = await login(registry, i % 2 === 0 ? "token-post" : "v2", "alice", `guess-${i}`, "127.0.0.3");
      assert.equal(answer.status, 401, `alice failure ${i + 1}`);
    }
    for (const via of ["v2", "token-get", "token-post"] as const) {
      assertTooMany(await login(registry, via, "alice", PASSWORD.alice, "127.0.0.1"), `alice's right password via ${via} while her name is locked`);
      assert.equal((await login(registry, via, "admin", PASSWORD.admin, "127.0.0.2")).status, 200, `admin via ${via}`);
      assert.equal((await login(registry, via, "bob", PASSWORD.bob, "127.0.0.3")).status, 200, `bob via ${via}`);
    }
  } finally {
    await registry.close();
  }
});

test("from an address over its limit each name gets only a few more tries; the same user elsewhere is unaffected", async () => {
  const registry = await startTestRegistry(auth({ perAddress: 5 }));
  try {
    for (let i = 0; i < 5; i++) assert.equal((await login(registry, "v2", `made-up-${i}`, "guess", "127.0.0.2")).status, 401);
    // A sprayer may not use the whole per-user allowance (10) on every real name from a limited address.
    for (let i = 0; i < 3; i++) assertTooMany(await login(registry, "token-post", "bob", `guess-${i}`, "127.0.0.2"), `bob guess ${i + 1}`);
    assertTooMany(await login(registry, "v2", "bob", PASSWORD.bob, "127.0.0.2"), "bob's pair is refused before the password is checked");
    assert.equal((await login(registry, "v2", "bob", PASSWORD.bob, "127.0.0.1")).status, 200, "bob from his own address");
    assert.equal((await login(registry, "v2", "admin", PASSWORD.admin, "127.0.0.2")).status, 200, "admin from the limited address");
  } finally {
    await registry.close();
  }
});

test("bad refresh tokens count against the address like bad passwords", async () => {
  const registry = await startTestRegistry(auth({ perAddress: 3 }));
  try {
    const refresh = (token: string) =>
      send(registry, "/token", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "refresh_token", service: "ferry", refresh_token: token }).toString(),
      });
    for (let i = 0; i < 3; i++) assert.equal((await refresh(`not.a.token${i}`)).status, 401);
    assertTooMany(await refresh("not.a.token"), "a further bad refresh token");
    assert.equal((await login(registry, "token-post", "admin", PASSWORD.admin)).status, 200, "a correct password still works");
  } finally {
    await registry.close();
  }
});

test("a full table evicts fresh names, not the count of the user under attack", async () => {
  const registry = await startTestRegistry(auth({ maxEntries: 100, perAddress: 100_000 }));
  try {
    for (let i = 0; i < 10; i++) assert.equal((await login(registry, "v2", "alice", `guess-${i}`)).status, 401);
    assertTooMany(await login(registry, "v2", "alice", PASSWORD.alice), "alice is locked");
    // Three times as many fresh names as the table holds, from several addresses.
    for (let i = 0; i < 300; i++) {
      assert.equal((await login(registry, "v2", `filler-${i}`, "x", `127.0.0.${2 + (i % 50)}`)).status, 401);
    }
    assertTooMany(await login(registry, "v2", "alice", PASSWORD.alice), "alice is still locked after the table filled up");
    assert.equal((await login(registry, "v2", "bob", PASSWORD.bob)).status, 200);
  } finally {
    await registry.close();
  }
});

test("oversized Basic credentials are refused unread with 401", async () => {
  const registry = await startTestRegistry(auth());
  try {
    const answer = await login(registry, "v2", "admin", "x".repeat(6000));
    assert.equal(answer.status, 401);
    assert.equal(code(answer), "UNAUTHORIZED");
    assert.match(answer.body, /too long/);
  } finally {
    await registry.close();
  }
});

test("behind a trusted proxy the limits key on the forwarded client; X-Forwarded-For from anyone else is ignored", async () => {
  const registry = await startTestRegistry({ ...auth({ perAddress: 5 }), trustedProxies: ["127.0.0.1"] });
  try {
    const viaProxy = (user: string, password: string, client: string) =>
      send(registry, "/v2/", { headers: { authorization: basic(user, password), "x-forwarded-for": client } });
    for (let i = 0; i < 5; i++) assert.equal((await viaProxy(`made-up-${i}`, "guess", "203.0.113.5")).status, 401);
    assertTooMany(await viaProxy("made-up-9", "guess", "203.0.113.5"), "the spraying client behind the proxy");
    assert.equal((await viaProxy("made-up-9", "guess", "203.0.113.6")).status, 401, "another client behind the same proxy is not limited");
    assert.equal((await viaProxy("admin", PASSWORD.admin, "203.0.113.5")).status, 200);
    // 127.0.0.2 is not a trusted proxy: its X-Forwarded-For cannot make it look like a fresh client each time.
    for (let i = 0; i < 5; i++) {
      const answer = await send(registry, "/v2/", { from: "127.0.0.2", headers: { authorization: basic(`x-${i}`, "guess"), "x-forwarded-for": `198.51.100.${i}` } });
      assert.equal(answer.status, 401);
    }
    const spoofed = await send(registry, "/v2/", { from: "127.0.0.2", headers: { authorization: basic("x-9", "guess"), "x-forwarded-for": "198.51.100.99" } });
    assertTooMany(spoofed, "a spoofed X-Forwarded-For from an untrusted peer");
  } finally {
    await registry.close();
  }
});
