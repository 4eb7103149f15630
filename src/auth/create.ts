/** Builds the AccessController the config asks for: OpenAccess without `auth`, PolicyAccess with it. */
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import { OpenAccess, type AccessController } from "./access.js";
import { PolicyAccess } from "./controller.js";
import { Policy } from "./policy.js";
import { LoginLimiter } from "./rate-limit.js";
import { SqliteFailureLog } from "./shared-failures.js";
import { tokenExtensions } from "./token-endpoint.js";
import { TokenService } from "./tokens.js";
import { UserDirectory } from "./users.js";

export interface AuthContext {
  dataDir: string;
  logger: Logger;
  /** Where failed logins are shared by every process on the store (shared-failures.ts); per process without it. */
  sharedFailuresPath?: string;
}

export async function createAccessController(config: Config, context: AuthContext): Promise<AccessController> {
  const auth = config.auth;
  if (!auth) return new OpenAccess();
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
