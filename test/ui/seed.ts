/**
 * Seeds many repositories into a running registry's SQLite database in one
 * transaction: pushing 10,000 repositories through the MetaStore (one fsynced
 * commit each) takes half a minute on a busy machine. Writes the rows
 * putManifest writes (src/metadata/sqlite.ts's schema); callers check one
 * seeded repository through /v2/ so a schema change breaks this loudly.
 */
import Database from "better-sqlite3";
import { join } from "node:path";
import type { TestImage } from "../helpers/images.js";

export function seedRepositories(dataDir: string, names: string[], image: TestImage, tag = "latest"): void {
  const db = new Database(join(dataDir, "metadata.db"));
  try {
    db.pragma("busy_timeout = 10000");
    const now = Date.now();
    const blobs = [image.config, ...image.layers.filter((l) => !l.urls)];
    db.transaction(() => {
      const blob = db.prepare("INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)");
      for (const b of blobs) blob.run(b.digest, b.size, now);
      const repository = db.prepare("INSERT INTO repositories (name, created_at) VALUES (?, ?) RETURNING id");
      const link = db.prepare("INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (?, ?, ?)");
      const manifest = db.prepare(
        "INSERT INTO manifests (repository_id, digest, media_type, size, content, subject_digest, artifact_type, annotations, created_at) VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, ?)",
      );
      const reference = db.prepare("INSERT INTO manifest_references (repository_id, manifest_digest, kind, child_digest) VALUES (?, ?, 'blob', ?)");
      const tagRow = db.prepare("INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES (?, ?, ?, ?)");
      for (const name of names) {
        const { id } = repository.get(name, now) as { id: number };
        for (const b of blobs) {
          link.run(id, b.digest, now);
          reference.run(id, image.manifestDigest, b.digest);
        }
        manifest.run(id, image.manifestDigest, image.mediaType, image.manifest.length, image.manifest, now);
        tagRow.run(id, tag, image.manifestDigest, now);
      }
    }).immediate();
  } finally {
    db.close();
  }
}
