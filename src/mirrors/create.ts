/** Assembles the mirrors from config: the service the dispatcher asks, the admin endpoint, metrics and sync jobs. */
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Config } from "../config/schema.js";
import type { Extension } from "../http/app.js";
import type { RegistryDeps } from "../registry/context.js";
import type { ManifestService } from "../registry/manifests.js";
import type { HashFactory } from "../hashing/incremental-hash.js";
import { MirrorService } from "./service.js";
import { mirrorAdminExtensions, registerMirrorMetrics } from "./admin.js";
import { startSyncJobs, type SyncJob } from "./sync.js";
import { PullLog, startRetention } from "./retention.js";

export interface Mirrors {
  service: MirrorService;
  extensions: Extension[];
  syncJobs: SyncJob[];
  close(): Promise<void>;
}

/** Null when no mirror is configured (a `sync` entry then has nothing to sync from: refused). */
export function createMirrors(
  config: Config,
  deps: { registry: RegistryDeps; manifests: ManifestService; logger: Logger; metrics: Registry; metadataPath: string; hashes?: HashFactory },
): Mirrors | null {
  if (config.mirrors.length === 0) {
    if (config.sync.length > 0) throw new Error(`sync from ${config.sync[0]!.from}: no mirrors are configured (mirrors[] with prefix and upstream)`);
    return null;
  }
  const pulls = config.mirrors.some((m) => m.retention !== undefined) ? new PullLog(`${deps.metadataPath}.mirrors`) : undefined;
  const service = new MirrorService(config.mirrors, {
    registry: deps.registry,
    manifests: deps.manifests,
    logger: deps.logger,
    manifestMaxBytes: config.manifests.maxBytes,
    ...(pulls ? { pulls } : {}),
    ...(deps.hashes ? { hashes: deps.hashes } : {}),
  });
  let syncJobs: SyncJob[];
  try {
    syncJobs = startSyncJobs(config.sync, service, deps.registry.meta, deps.logger);
  } catch (error) {
    void service.close(); // nothing has been fetched yet: there is nothing to wait for
    pulls?.close();
    throw error;
  }
  const stopRetention = pulls ? startRetention(service.set.mirrors, deps.registry.meta, pulls, deps.logger) : () => undefined;
  registerMirrorMetrics(deps.metrics, service);
  service.warmUp();
  return {
    service,
    extensions: mirrorAdminExtensions(service, () => syncJobs.map((job) => job.status())),
    syncJobs,
    async close() {
      for (const job of syncJobs) job.stop();
      stopRetention();
      await service.close();
      pulls?.close();
    },
  };
}
