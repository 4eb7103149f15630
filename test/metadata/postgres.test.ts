/**
 * The shared MetaStore contract on PostgreSQL (each test in a schema of its own).
 */
import { describe } from "node:test";
import { PostgresMetaStore } from "../../src/metadata/postgres.js";
import { freshDatabaseUrl, skipUnlessPostgres } from "../helpers/postgres.js";
import { metaStoreSuite } from "./meta-store-suite.js";

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
