/**
 * Embedded installs upgrade in place: a SQLite file written by the Ferry
 * before the Kysely layer (its exact DDL, no schema version table) opens with
 * this code with every record intact, and is stamped with the schema version.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { SCHEMA_VERSION } from "../../src/metadata/sql/migrations.js";

const D = (n: number) => `sha256:${n.toString(16).padStart(64, "0")}`;

/** The DDL of sqlite.ts, sqlite-foreign.ts and sqlite-source-health.ts before the move onto Kysely. */
const OLD_DDL = `
CREATE TABLE IF NOT EXISTS repositories (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repository_blobs (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  linked_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repository_blobs_by_digest ON repository_blobs (digest, repository_id);
CREATE TABLE IF NOT EXISTS manifests (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  content BLOB NOT NULL,
  subject_digest TEXT,
  artifact_type TEXT,
  annotations TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_by_subject ON manifests (repository_id, subject_digest) WHERE subject_digest IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_references (
  repository_id INTEGER NOT NULL,
  manifest_digest TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest', 'foreign')),
  child_digest TEXT NOT NULL,
  PRIMARY KEY (repository_id, manifest_digest, kind, child_digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_references_by_child ON manifest_references (repository_id, child_digest, kind);
CREATE TABLE IF NOT EXISTS tags (
  repository_id INTEGER NOT NULL,
  name TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_manifest ON tags (repository_id, manifest_digest);
CREATE TABLE IF NOT EXISTS foreign_layers (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  urls TEXT NOT NULL,
  verification TEXT NOT NULL,
  verified_at INTEGER,
  verification_detail TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY,
  repository TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  committing_digest TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS foreign_layer_sources (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  url TEXT NOT NULL,
  position INTEGER NOT NULL,
  added_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest, manifest_digest, url)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS foreign_layer_sources_by_manifest ON foreign_layer_sources (repository_id, manifest_digest);
CREATE TABLE IF NOT EXISTS foreign_layer_proofs (
  repository_id INTEGER NOT NULL,
  digest TEXT NOT NULL,
  url TEXT NOT NULL,
  proven_at INTEGER NOT NULL,
  PRIMARY KEY (repository_id, digest, url)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS foreign_cache (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  fetched_at INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  pinned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS foreign_cache_lru ON foreign_cache (pinned, last_access);

CREATE TABLE IF NOT EXISTS foreign_source_health (
  url TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  successes INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  recent TEXT NOT NULL DEFAULT '',
  last_success_at INTEGER,
  last_failure_at INTEGER,
  last_error TEXT,
  last_latency_ms INTEGER,
  latency_total_ms INTEGER NOT NULL DEFAULT 0,
  latency_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS foreign_recheck_rounds (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  lease_until INTEGER NOT NULL,
  checked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
`;

test("a database written by the pre-Kysely code opens with all data intact", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-upgrade-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "metadata.db");
  const raw = new Database(path);
  raw.pragma("journal_mode = WAL");
  raw.exec(OLD_DDL);
  const content = Buffer.from('{"schemaVersion":2,"layers":[]}\n\u0000binary-safe\u00ff');
  raw.prepare("INSERT INTO repositories (id, name, created_at) VALUES (7, 'team/app', 1000)").run();
  raw.prepare("INSERT INTO blobs VALUES (?, 123, 1000)").run(D(1));
  raw.prepare("INSERT INTO repository_blobs VALUES (7, ?, 1000)").run(D(1));
  raw.prepare("INSERT INTO manifests VALUES (7, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, NULL, NULL, NULL, 2000)").run(D(2), content.length, content);
  raw.prepare("INSERT INTO manifests VALUES (7, ?, 'application/vnd.oci.image.manifest.v1+json', 2, '{}', ?, 'application/x-sig', '{\"k\":\"v\"}', 2500)").run(D(3), D(2));
  raw.prepare("INSERT INTO manifest_references VALUES (7, ?, 'blob', ?)").run(D(2), D(1));
  raw.prepare("INSERT INTO tags VALUES (7, 'v1', ?, 3000)").run(D(2));
  raw.prepare("INSERT INTO uploads VALUES ('up-1', 'team/app', 1000, 4000, ?)").run(D(9));
  raw.prepare("INSERT INTO foreign_cache VALUES (?, 55, 10, 20, 1)").run(D(8));
  raw.prepare("INSERT INTO foreign_source_health (url, host, successes, failures) VALUES ('https://x.example/l', 'x.example', 4, 1)").run();
  raw.close();

  const meta = await SqliteMetaStore.open(path);
  t.after(() => meta.close());
  assert.deepEqual(await meta.listRepositories({ limit: 10 }), ["team/app"]);
  assert.deepEqual(await meta.listTags("team/app", { limit: 10 }), ["v1"]);
  const tagged = await meta.getTaggedManifest("team/app", "v1");
  assert.ok(tagged);
  assert.deepEqual(tagged.content, content, "manifest bytes unchanged");
  assert.equal(tagged.createdAt, 2000);
  assert.deepEqual(await meta.linkedBlob("team/app", D(1)), { size: 123 });
  assert.deepEqual((await meta.listReferrers("team/app", D(2))).map((r) => [r.digest, r.artifactType, r.annotations]), [[D(3), "application/x-sig", { k: "v" }]]);
  assert.equal((await meta.getUpload("up-1"))?.committingDigest, D(9));
  assert.equal((await meta.getForeignCacheEntry(D(8)))?.pinned, true);
  assert.equal((await meta.listSourceHealth())[0]?.successes, 4);
  // Still writable, and GC still sees the old references.
  await meta.putManifest("team/app", { digest: D(4), mediaType: "application/vnd.oci.image.manifest.v1+json", content: Buffer.from("{}"), subjectDigest: null, artifactType: null, annotations: null, blobs: [D(1)], manifests: [], foreignLayers: [] }, "v2");
  const plan = await meta.collectGarbage({ olderThan: Date.now() + 1000, untagged: false });
  assert.deepEqual([plan.linksDeleted, plan.orphanBlobs], [0, []]);

  const check = new Database(path, { readonly: true });
  assert.equal((check.prepare("SELECT version FROM ferry_schema WHERE id = 1").get() as { version: number }).version, SCHEMA_VERSION);
  check.close();
});

test("a database whose uploads table predates committing_digest gets the column", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-upgrade-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "metadata.db");
  const raw = new Database(path);
  raw.exec("CREATE TABLE uploads (id TEXT PRIMARY KEY, repository TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID");
  raw.prepare("INSERT INTO uploads VALUES ('u', 'r', 1, 2)").run();
  raw.close();
  const meta = await SqliteMetaStore.open(path);
  t.after(() => meta.close());
  assert.deepEqual(await meta.getUpload("u"), { id: "u", repository: "r", createdAt: 1, updatedAt: 2, committingDigest: null });
  await meta.markUploadCommitting("u", D(5));
  assert.equal((await meta.getUpload("u"))?.committingDigest, D(5));
});

test("a SQLite database migrated by a newer Ferry is refused at open", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-upgrade-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "metadata.db");
  await (await SqliteMetaStore.open(path)).close();
  const raw = new Database(path);
  raw.prepare("UPDATE ferry_schema SET version = version + 5").run();
  raw.close();
  await assert.rejects(SqliteMetaStore.open(path), /newer than this Ferry understands/);
});
