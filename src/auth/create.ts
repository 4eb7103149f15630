/**
 * Builds the AccessController the config asks for: OpenAccess without `auth`, PolicyAccess with it.
 * The policy side (jose for tokens, bcryptjs for passwords) is loaded only when `auth` is configured:
 * an open registry does not keep it in memory.
 */
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import { OpenAccess, type AccessController } from "./access.js";

export interface AuthContext {
  dataDir: string;
  logger: Logger;
  /** Where failed logins are shared by every process on the store (shared-failures.ts); per process without it. */
  sharedFailuresPath?: string;
}

export async function createAccessController(config: Config, context: AuthContext): Promise<AccessController> {
  const auth = config.auth;
  if (!auth) return new OpenAccess();
  const [{ PolicyAccess }, { Policy }, { LoginLimiter }, { SqliteFailureLog }, { tokenExtensions }, { TokenService }, { UserDirectory }] = await Promise.all([
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
  const tokens = await TokenService.create(auth.token, context.dataDir);
  const { window: windowMs, perUser, perAddress, maxEntries } = auth.rateLimit;
  const shared = context.sharedFailuresPath ? new SqliteFailureLog(context.sharedFailuresPath, windowMs, maxEntries * 4) : undefined;
  const limiter = new LoginLimiter({ windowMs, perUser, perAddress, maxEntries }, Date.now, shared);
  const access = new PolicyAccess({ config: auth, users, policy: new Policy(auth), tokens, limiter, logger });
  if (shared) access.close = async () => shared.close();
  if (auth.token.enabled) access.extensions = tokenExtensions(access);
  return access;
}
