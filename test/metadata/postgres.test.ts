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

describe("PostgreSQL change token", { skip }, () => {
  test("a write committed through another connection pool changes the token read right after; no write keeps it", async (t) => {
    const { url, drop } = await freshDatabaseUrl();
    t.after(drop);
    const open = () => PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 });
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
