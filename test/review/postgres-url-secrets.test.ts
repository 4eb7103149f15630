/**
 * An operator's PostgreSQL URL may carry its password in the userinfo or,
 * as libpq and node-postgres both accept, in the query (`?password=`,
 * `?sslpassword=`): start-up errors and `ferry migrate`'s output must show
 * neither. Needs no PostgreSQL: nothing listens on the port.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { PostgresMetaStore, redactUrl } from "../../src/metadata/postgres.js";

describe("PostgreSQL URL in messages", () => {
  test("a password in the query string is redacted like one in the userinfo", () => {
    const shown = redactUrl("postgres://ferry:pw-in-userinfo@db.internal:5432/ferry?password=pw-in-query&sslpassword=key-pass&sslmode=require");
    assert.ok(!shown.includes("pw-in-userinfo"), shown);
    assert.ok(!shown.includes("pw-in-query"), shown);
    assert.ok(!shown.includes("key-pass"), shown);
    assert.match(shown, /db\.internal:5432\/ferry/);
    assert.match(shown, /sslmode=require/);
  });

  test("a start-up failure names the database without its password", async () => {
    const error = await PostgresMetaStore.open({
      url: "postgres://ferry@127.0.0.1:1/ferry?password=hunter2-in-query",
      poolSize: 1,
      connectTimeoutMs: 2000,
      statementTimeoutMs: 2000,
    }).then(
      () => null,
      (e: unknown) => e as Error,
    );
    assert.ok(error, "opening an unreachable database succeeded");
    assert.match(error.message, /127\.0\.0\.1:1/);
    assert.ok(!error.message.includes("hunter2"), error.message);
  });
});
