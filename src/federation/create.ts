/** Builds the Federation the config asks for. */
import { join, resolve } from "node:path";
import { rm } from "node:fs/promises";
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { AccessController } from "../auth/access.js";
import type { MetaStore } from "../metadata/meta-store.js";
import type { BlobStore } from "../storage/blob-store.js";
import { FilesystemBlobStore } from "../storage/filesystem.js";
import type { Federation } from "./federation.js";
import { FederationService } from "./service.js";

export interface FederationContext {
  dataDir: string;
  logger: Logger;
  access: AccessController;
  meta: MetaStore;
  /**
   * The proxy cache's blob store: a namespace of the blob store apart from
   * pushed blobs (on S3, the same bucket under its own prefix, so replicas
   * share the cache). Federation closes it. Default: the filesystem under
   * `<storage root>/federation-cache`.
   */
  cacheStore?: BlobStore;
  /** Clean the proxy cache's stale uploads and evict at start-up (default true; a process's extra serving threads do not). */
  startupCleanup?: boolean;
}

export async function createFederation(config: Config, context: FederationContext): Promise<Federation> {
  const cacheStore = context.cacheStore ?? (await filesystemCacheStore(config, context.dataDir));
  const federation = new FederationService({
    config: config.federation,
    meta: context.meta,
    logger: context.logger.child({ component: "federation" }),
    cacheStore,
  });
  try {
    await federation.init(context.startupCleanup !== false);
  } catch (error) {
    await federation.close();
    throw error;
  }
  return federation;
}

async function filesystemCacheStore(config: Config, dataDir: string): Promise<BlobStore> {
  const storageRoot = config.storage.filesystem.path ? resolve(config.storage.filesystem.path) : dataDir;
  const root = join(storageRoot, "federation-cache");
  // Caches written before the cache moved behind the blob store (<root>/<algorithm>/<hex>, <root>/tmp)
  // have no index: drop them, they are only a cache.
  for (const dir of new Set([root, join(dataDir, "federation-cache")])) {
    for (const old of ["sha256", "sha512", "tmp"]) await rm(join(dir, old), { recursive: true, force: true });
  }
  const store = new FilesystemBlobStore({ root, fsync: config.storage.filesystem.fsync, directIo: false });
  await store.init();
  return store;
}
