/**
 * Failed logins counted through the metadata store: limiters of separate
 * processes (replicas) on one store allow what one would, on SQLite and
 * PostgreSQL, whatever the user name holds (a NUL, which PostgreSQL text
 * refuses, must not let a name escape the shared count).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { PostgresMetaStore } from "../../src/metadata/postgres.js";
import type { MetaStore } from "../../src/metadata/meta-store.js";
import { storeFailureLog } from "../../src/auth/shared-failures.js";
import { LoginLimiter } from "../../src/auth/rate-limit.js";
import { RegistryError } from "../../src/oci/errors.js";
import { freshDatabaseUrl, skipUnlessPostgres } from "../helpers/postgres.js";

const PER_USER = 4;

function limiters(meta: MetaStore, count: number): LoginLimiter[] {
  const log = storeFailureLog(meta, 600_000, 1000);
  assert.ok(log, "the store keeps failed logins");
  return Array.from({ length: count }, () => new LoginLimiter({ windowMs: 600_000, perUser: PER_USER, perAddress: 1000, maxEntries: 1000 }, Date.now, log));
}

async function attempt(limiter: LoginLimiter, user: string): Promise<number> {
  let claim;
  try {
    claim = await limiter.admitShared("10.0.0.1", user);
  } catch (error) {
    if (error instanceof RegistryError && error.code === "TOOMANYREQUESTS") return 429;
    throw error;
  }
  // The attempt was claimed (counted) before the password check; its failure adds nothing more.
  await limiter.failedShared("10.0.0.1", user, claim);
  return 401;
}

function cases(open: () => Promise<{ meta: MetaStore; close(): Promise<void> }>): void {
  test("a right password releases its claimed attempt: successful logins never count toward the limit", async () => {
    const { meta, close } = await open();
    try {
      const [replica] = limiters(meta, 1);
      for (let i = 0; i < PER_USER * 2; i++) await replica!.succeeded(await replica!.admitShared("10.0.0.1", "dave"));
      const statuses: number[] = [];
      for (let i = 0; i < PER_USER + 1; i++) statuses.push(await attempt(replica!, "dave"));
      assert.deepEqual(statuses, [...Array(PER_USER).fill(401), 429]);
    } finally {
      await close();
    }
  });

  for (const user of ["alice", "nul\u0000name", "x".repeat(10_000)]) {
    test(`${PER_USER} failures in total over three processes lock ${JSON.stringify(user.slice(0, 12))}`, async () => {
      const { meta, close } = await open();
      try {
        const replicas = limiters(meta, 3);
        const statuses: number[] = [];
        for (let i = 0; i < PER_USER * 3; i++) statuses.push(await attempt(replicas[i % 3]!, user));
        assert.deepEqual(statuses, [...Array(PER_USER).fill(401), ...Array(PER_USER * 2).fill(429)]);
        const fresh = limiters(meta, 1)[0]!;
        assert.equal(await attempt(fresh, user), 429, "a process started later sees the lock too");
        assert.equal(await attempt(fresh, "bob"), 401, "another name is not affected");
      } finally {
        await close();
      }
    });
  }
}

describe("shared failed-login counts: sqlite", () => {
  cases(async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-logins-"));
    const meta = new SqliteMetaStore(join(dir, "metadata.db"));
    return { meta, close: async () => (await meta.close(), await rm(dir, { recursive: true, force: true })) };
  });
});

const skip = skipUnlessPostgres();
describe("shared failed-login counts: postgres", { skip }, () => {
  if (skip) return;
  cases(async () => {
    const { url, drop } = await freshDatabaseUrl();
    const meta = await PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 });
    return { meta, close: async () => (await meta.close(), await drop()) };
  });
});
