/** Builds the Federation the config asks for. */
import { join } from "node:path";
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { AccessController } from "../auth/access.js";
import type { MetaStore } from "../metadata/meta-store.js";
import type { Federation } from "./federation.js";
import { FederationService } from "./service.js";

export interface FederationContext {
  dataDir: string;
  logger: Logger;
  access: AccessController;
  meta: MetaStore;
}

export async function createFederation(config: Config, context: FederationContext): Promise<Federation> {
  const federation = new FederationService({
    config: config.federation,
    meta: context.meta,
    logger: context.logger.child({ component: "federation" }),
    cacheDir: join(context.dataDir, "federation-cache"),
  });
  await federation.init();
  return federation;
}
