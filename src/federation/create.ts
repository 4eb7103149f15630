/** Builds the Federation the config asks for. */
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { AccessController } from "../auth/access.js";
import type { MetaStore } from "../metadata/meta-store.js";
import type { Federation } from "./federation.js";
import { BaselineFederation } from "./baseline.js";

export interface FederationContext {
  dataDir: string;
  logger: Logger;
  access: AccessController;
  meta: MetaStore;
}

export async function createFederation(config: Config, _context: FederationContext): Promise<Federation> {
  return new BaselineFederation({ enabled: config.federation.enabled, schemes: config.federation.schemes });
}
