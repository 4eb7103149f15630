/**
 * SQLite specifics of the foreign-layer bookkeeping: a database written
 * before per-manifest sources existed is filled once from the stored
 * manifests, and garbage collection of untagged manifests takes their
 * sources and proofs with them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { manifest } from "./meta-store-suite.js";

const D = (n: number) => `sha256:${n.toString(16).padStart(64, "0")}`;
const LAYER_TYPE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

function imageManifest(layers: Array<{ digest: string; urls: string[] }>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: D(1), size: 2 },
      layers: layers.map((l) => ({ mediaType: LAYER_TYPE, digest: l.digest, size: 5, urls: l.urls })),
    }),
  );
}

const foreign = (digest: string, urls: string[]) => ({ digest, mediaType: LAYER_TYPE, size: 5, urls, verification: "unverified" as const, verifiedAt: null, verificationDetail: null });

test("an existing database gets per-manifest sources from its stored manifests, once", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-meta-mig-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "metadata.db");
  const [u1, u2] = ["https://one.example/l", "https://two.example/l"];
  const first = new SqliteMetaStore(path);
  await first.putManifest("m", manifest(D(11), { content: imageManifest([{ digest: D(10), urls: [u1] }]), foreignLayers: [foreign(D(10), [u1])] }), "a");
  await first.putManifest("m", manifest(D(12), { content: imageManifest([{ digest: D(10), urls: [u2] }]), foreignLayers: [foreign(D(10), [u2])] }), "b");
  await first.close();

  // Back to the old schema: no per-manifest sources, and the last push's URLs in foreign_layers.
  const raw = new Database(path);
  // (Databases from before schema versioning have no ferry_schema table either.)
  raw.exec("DROP TABLE foreign_layer_sources; DROP TABLE foreign_layer_proofs; DROP TABLE foreign_cache; DROP TABLE ferry_schema");
  raw.prepare("UPDATE foreign_layers SET urls = ?").run(JSON.stringify([u2]));
  raw.close();

  const migrated = new SqliteMetaStore(path);
  t.after(() => migrated.close());
  assert.deepEqual((await migrated.getForeignLayer("m", D(10)))?.urls, [u1, u2], "the union, read from the manifests");
  await migrated.deleteManifest("m", D(12));
  assert.deepEqual((await migrated.getForeignLayer("m", D(10)))?.urls, [u1], "u2 left with the manifest that named it");
  // A second open does not run the backfill again (it would resurrect u2 from nothing, but must not duplicate or fail).
  const again = new SqliteMetaStore(path);
  assert.deepEqual((await again.getForeignLayer("m", D(10)))?.urls, [u1]);
  await again.close();
});

test("garbage collection of untagged manifests removes their foreign sources and proofs", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-meta-gc-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const meta = new SqliteMetaStore(join(dir, "metadata.db"));
  t.after(() => meta.close());
  const [u1, u2] = ["https://one.example/g", "https://two.example/g"];
  await meta.putManifest("g", manifest(D(21), { foreignLayers: [{ ...foreign(D(20), [u1]), provenUrls: [u1] }] })); // untagged
  await meta.putManifest("g", manifest(D(22), { foreignLayers: [foreign(D(20), [u2])] }), "kept");
  await meta.putForeignCacheEntry({ digest: D(20), size: 5, fetchedAt: 1, pinned: true });
  assert.deepEqual((await meta.getForeignLayer("g", D(20)))?.urls, [u1, u2]);
  await meta.collectGarbage({ olderThan: Date.now() + 1000, untagged: true });
  const mark = await meta.getForeignLayer("g", D(20));
  assert.deepEqual(mark?.urls, [u2]);
  assert.deepEqual(mark?.provenUrls, [], "the proof through u1 went with u1");
  assert.equal((await meta.getForeignCacheEntry(D(20)))?.pinned, true, "still referenced: still pinned");
  await meta.deleteTag("g", "kept");
  await meta.collectGarbage({ olderThan: Date.now() + 1000, untagged: true });
  assert.equal(await meta.getForeignLayer("g", D(20)), null);
  assert.equal((await meta.getForeignCacheEntry(D(20)))?.pinned, false, "no repository references it: the pin is released");
});
