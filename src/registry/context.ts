/** The dependencies every use case receives. */
import type { Logger } from "pino";
import type { BlobStore } from "../storage/blob-store.js";
import type { MetaStore } from "../metadata/meta-store.js";
import type { Federation } from "../federation/federation.js";
import type { AccessController } from "../auth/access.js";
import type { Mutex } from "./leases.js";

export interface RegistryDeps {
  blobs: BlobStore;
  meta: MetaStore;
  federation: Federation;
  access: AccessController;
  logger: Logger;
  limits: { manifestMaxBytes: number };
  /** Per-digest lock shared by blob commits and garbage collection. */
  digestLocks: Mutex;
}
