/**
 * The probes behind /healthz (readiness.ts): one cheap request to each store
 * this replica depends on, through the same objects requests use.
 */
import { constants, statSync } from "node:fs";
import { access, stat } from "node:fs/promises";
import type { MetaStore } from "../metadata/meta-store.js";
import type { BlobReader } from "../storage/blob-store.js";
import { FsPaths } from "../storage/fs-paths.js";
import type { Probe, ProbeName } from "./readiness.js";

/** A digest no blob has: looking it up costs one HEAD (S3) or one stat and proves the store answers. */
const PROBE_DIGEST = `sha256:${"0".repeat(64)}`;

export interface ProbeTargets {
  meta: Pick<MetaStore, "listRepositories">;
  blobs: Pick<BlobReader, "stat">;
  /** The filesystem driver's root, when blobs are on a (possibly shared) filesystem. */
  filesystemRoot?: string;
  /** The SQLite database file, when metadata is SQLite. */
  sqlitePath?: string;
}

export function storeProbes(targets: ProbeTargets): Record<ProbeName, Probe> {
  const sqliteFile = targets.sqlitePath ? sqliteFileProbe(targets.sqlitePath) : null;
  return {
    metadata: async () => {
      await sqliteFile?.();
      await targets.meta.listRepositories({ limit: 1 });
    },
    blobs: async () => {
      if (targets.filesystemRoot) {
        // A missing or read-only blob directory (an unmounted share) must fail the check: a
        // stat of an absent blob would only answer "not found".
        const paths = new FsPaths(targets.filesystemRoot);
        await access(paths.uploadsDir(), constants.W_OK);
      }
      await targets.blobs.stat(PROBE_DIGEST);
    },
  };
}

/**
 * SQLite keeps answering from a database file that was deleted or replaced
 * under it (its descriptor stays open), so the query alone cannot notice that
 * this replica lost the database the others use: the file at the path must
 * still be the one it opened.
 */
function sqliteFileProbe(path: string): Probe | null {
  let opened: number;
  try {
    opened = statSync(path).ino;
  } catch {
    return null; // an in-memory database (tests)
  }
  return async () => {
    const now = await stat(path);
    if (now.ino !== opened) throw Object.assign(new Error("database file replaced"), { code: "REPLACED" });
  };
}
