/**
 * The shared MetaStore contract on PostgreSQL (each test in a schema of its own).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { PostgresMetaStore } from "../../src/metadata/postgres.js";
import { freshDatabaseUrl, skipUnlessPostgres } from "../helpers/postgres.js";
import { manifest, metaStoreSuite } from "./meta-store-suite.js";

const skip = skipUnlessPostgres();
if (skip) {
  describe("MetaStore contract: postgres", { skip }, () => {});
} else {
  metaStoreSuite("postgres", async () => {
    const { url, drop } = await freshDatabaseUrl();
    const meta = await PostgresMetaStore.open({ url, poolSize: 4, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 });
    return { meta, cleanup: drop };
  });
}

describe("PostgreSQL change token (WAL position, listener off)", { skip }, () => {
  test("a write committed through another connection pool changes the token read right after; no write keeps it", async (t) => {
    const { url, drop } = await freshDatabaseUrl();
    t.after(drop);
    // The WAL-position token: what a replica serves while its LISTEN connection is not live.
    const open = () => PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000, listen: false });
    const [reader, writer] = [await open(), await open()];
    t.after(async () => {
      await reader.close();
      await writer.close();
    });
    for (let i = 0; i < 20; i++) {
      const before = await reader.changeToken();
      await writer.putManifest("tok", manifest(`sha256:${String(i).padStart(64, "0")}`), "latest");
      assert.notEqual(await reader.changeToken(), before, `write ${i} is seen by the token`);
    }
    assert.equal(await reader.ping(2_000), true, "a reachable database answers the health check");
    // Concurrent callers share token queries but every answer postdates the call.
    const tokens = await Promise.all(Array.from({ length: 50 }, () => reader.changeToken()));
    assert.equal(tokens.length, 50);
  });
});

describe("PostgreSQL change token scheduling", { skip }, () => {
  test("a caller is never answered by a token read sent before it arrived; callers arriving while both token connections are busy share one read", async (t) => {
    const { url, drop } = await freshDatabaseUrl();
    t.after(drop);
    const store = await PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000, listen: false });
    t.after(() => store.close());
    // Token reads held open by the test: each answers with the number of reads sent before it.
    const sent: Array<(token: string) => void> = [];
    (store as unknown as { readToken: () => Promise<string> }).readToken = () =>
      new Promise<string>((resolve) => {
        const index = sent.length;
        sent.push(() => resolve(`read ${index}`));
      });
    const settle = () => new Promise((resolve) => setImmediate(resolve));

    const first = store.changeToken();
    const second = store.changeToken();
    assert.equal(sent.length, 2, "two callers with idle connections: two reads sent at once");
    const third = store.changeToken();
    const fourth = store.changeToken();
    await settle();
    assert.equal(sent.length, 2, "both connections busy: later callers wait, no third read yet");

    sent[0]!("");
    assert.equal(await first, "read 0");
    await settle();
    assert.equal(sent.length, 3, "a freed connection sends one read for every waiting caller");
    // Arrives after read 2 was sent: must not be answered by it.
    const fifth = store.changeToken();
    sent[2]!("");
    assert.equal(await third, "read 2");
    assert.equal(await fourth, "read 2", "waiting callers share one read");
    sent[1]!("");
    assert.equal(await second, "read 1");
    await settle();
    assert.equal(sent.length, 4, "the caller that arrived after read 2 was sent gets a read of its own");
    sent[3]!("");
    assert.equal(await fifth, "read 3");
  });
});
