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
  limits: { manifestMaxBytes: number; /** Config `manifests.sparse`: pushes may reference what the repository does not hold. */ sparseManifests?: boolean };
  /** Per-digest lock shared by blob commits and garbage collection. */
  digestLocks: Mutex;
}
