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
}

export async function createAccessController(config: Config, context: AuthContext): Promise<AccessController> {
  const auth = config.auth;
  if (!auth) return new OpenAccess();
  const [{ PolicyAccess }, { Policy }, { LoginLimiter }, { tokenExtensions }, { TokenService }, { UserDirectory }] = await Promise.all([
    import("./controller.js"),
    import("./policy.js"),
    import("./rate-limit.js"),
    import("./token-endpoint.js"),
    import("./tokens.js"),
    import("./users.js"),
  ]);
  const logger = context.logger.child({ component: "auth" });
  const users = new UserDirectory(auth, logger);
  await users.load();
  const tokens = await TokenService.create(auth.token, context.dataDir);
  const { window: windowMs, perUser, perAddress, maxEntries } = auth.rateLimit;
  const limiter = new LoginLimiter({ windowMs, perUser, perAddress, maxEntries });
  const access = new PolicyAccess({ config: auth, users, policy: new Policy(auth), tokens, limiter, logger });
  if (auth.token.enabled) access.extensions = tokenExtensions(access);
  return access;
}
