/**
 * Builds the AccessController the config asks for: OpenAccess without `auth`, PolicyAccess with it.
 * The policy side (jose for tokens, bcryptjs for passwords) is loaded only when `auth` is configured:
 * an open registry does not keep it in memory.
 */
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { MetaStore } from "../metadata/meta-store.js";
import { OpenAccess, type AccessController } from "./access.js";

export interface AuthContext {
  dataDir: string;
  logger: Logger;
  /**
   * The metadata store: failed logins (shared-failures.ts) and the token
   * signing key set (key-set.ts) are shared through it by every process and
   * replica on it. Without it, each process counts alone and signs with the
   * key in its data directory.
   */
  meta?: MetaStore;
}

export async function createAccessController(config: Config, context: AuthContext): Promise<AccessController> {
  const auth = config.auth;
  if (!auth) return new OpenAccess();
  const [{ PolicyAccess }, { Policy }, { LoginLimiter }, { storeFailureLog }, { tokenExtensions }, { TokenService }, { UserDirectory }] = await Promise.all([
    import("./controller.js"),
    import("./policy.js"),
    import("./rate-limit.js"),
    import("./shared-failures.js"),
    import("./token-endpoint.js"),
    import("./tokens.js"),
    import("./users.js"),
  ]);
  const logger = context.logger.child({ component: "auth" });
  const users = new UserDirectory(auth, logger);
  await users.load();
  const tokens = await TokenService.create(auth.token, context.dataDir, Date.now, context.meta);
  const { window: windowMs, perUser, perAddress, maxEntries } = auth.rateLimit;
  const shared = context.meta ? storeFailureLog(context.meta, windowMs, maxEntries * 4) : undefined;
  const limiter = new LoginLimiter({ windowMs, perUser, perAddress, maxEntries }, Date.now, shared);
  const access = new PolicyAccess({ config: auth, users, policy: new Policy(auth), tokens, limiter, logger });
  if (auth.token.enabled) access.extensions = tokenExtensions(access);
  return access;
}
