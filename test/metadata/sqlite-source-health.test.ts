/**
 * SQLite: databases written before source health was per URL (one
 * `foreign_sources` row per host) keep working — the rows are carried over to
 * the URLs of that host, once, even with several processes opening the file.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { sourceState } from "../../src/federation/health.js";
import { manifest } from "./meta-store-suite.js";

const D = (n: number) => `sha256:${n.toString(16).padStart(64, "0")}`;
const LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

test("a per-host foreign_sources table is migrated to per-URL records once, then dropped", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-health-migrate-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "metadata.db");
  const a1 = "https://a.example.com/one.tar.gz";
  const a2 = "https://a.example.com/two.tar.gz";
  const b1 = "https://b.example.com:8443/x";

  const before = new SqliteMetaStore(path);
  const layer = (digest: string, urls: string[]) => ({ digest, mediaType: LAYER, size: 5, urls, verification: "unverified" as const, verifiedAt: null, verificationDetail: null });
  await before.putManifest("team/app", manifest(D(1), { foreignLayers: [layer(D(2), [a1, b1]), layer(D(3), [a2])] }), "v1");
  await before.close();

  // What the per-host version left behind.
  const old = new Database(path);
  old.exec("DROP TABLE ferry_schema"); // an old database has no schema version
  old.exec(`CREATE TABLE foreign_sources (
    host TEXT PRIMARY KEY, successes INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
    last_success_at INTEGER, last_failure_at INTEGER, last_error TEXT, last_latency_ms INTEGER,
    latency_total_ms INTEGER NOT NULL DEFAULT 0, latency_count INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID`);
  const insert = old.prepare("INSERT INTO foreign_sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  insert.run("a.example.com", 5, 2, 1_000, 2_000, "HTTP 503", 40, 200, 5);
  insert.run("b.example.com:8443", 3, 0, 3_000, null, null, 10, 30, 3);
  insert.run("gone.example.com", 1, 1, 1, 2, "timed out", null, 0, 0);
  old.close();

  // Two processes open the old database at once.
  const first = new SqliteMetaStore(path);
  const second = new SqliteMetaStore(path);
  t.after(async () => {
    await first.close();
    await second.close();
  });
  const [records, same] = await Promise.all([first.listSourceHealth(), second.listSourceHealth()]);
  assert.deepEqual(same, records);
  assert.deepEqual(records.map((r) => r.url), [a1, a2, b1], "every referenced URL of a known host, nothing for a host no layer references");
  const one = records[0]!;
  assert.equal(one.host, "a.example.com");
  assert.equal(one.lastError, "HTTP 503");
  assert.equal(one.lastFailureAt, 2_000);
  assert.equal(one.lastSuccessAt, 1_000);
  assert.equal(one.averageLatencyMs, 40);
  assert.equal(one.successes + one.failures, 1, "the host's latest outcome, as one attempt per URL");
  assert.equal(sourceState(one), "failing");
  assert.equal(sourceState(records[2]), "healthy");

  const check = new Database(path, { readonly: true });
  assert.equal(check.prepare("SELECT 1 FROM sqlite_master WHERE name = 'foreign_sources'").get(), undefined, "the old table is gone");
  check.close();

  // New attempts build on the migrated record; reopening migrates nothing again.
  await first.recordSourceHealth({ url: a1, host: "a.example.com", ok: true, at: 5_000, latencyMs: 20, error: null });
  const reopened = new SqliteMetaStore(path);
  t.after(() => reopened.close());
  const after = await reopened.listSourceHealth();
  assert.equal(after.length, 3);
  assert.equal(after[0]!.successes, 1);
  assert.equal(after[0]!.recent, "10");
  assert.equal(sourceState(after[0]), "degraded");
});
