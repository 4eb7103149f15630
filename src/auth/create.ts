/** Builds the AccessController the config asks for. */
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import { OpenAccess, type AccessController } from "./access.js";

export interface AuthContext {
  dataDir: string;
  logger: Logger;
}

export async function createAccessController(_config: Config, _context: AuthContext): Promise<AccessController> {
  return new OpenAccess();
}
