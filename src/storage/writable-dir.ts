/**
 * Start-up check of the directories Ferry writes to, so a permission problem
 * reads "data directory X is not writable by user Y" instead of an EACCES
 * from deep inside SQLite or a blob store.
 */
import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import { userInfo } from "node:os";
import { dirname } from "node:path";

function whoAmI(): string {
  try {
    const user = userInfo();
    return `${user.username} (uid ${user.uid})`;
  } catch {
    return `uid ${process.getuid?.() ?? "?"}`;
  }
}

/**
 * Creates `dir` if needed and checks that this process can create files in it.
 * `what` names it for the user ("data directory", "blob directory").
 */
export function ensureWritableDirectory(dir: string, what: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
      const why = code === "EROFS" ? "it is on a read-only file system" : `it does not exist and its parent ${dirname(dir)} does not let this user create it`;
      throw new Error(`${what} ${dir} is not writable by user ${whoAmI()}: ${why}; create it, or choose another with --data`);
    }
    if (code === "EEXIST" || code === "ENOTDIR") throw new Error(`${what} ${dir} is not a directory (a file is in the way)`);
    throw error;
  }
  if (!statSync(dir).isDirectory()) throw new Error(`${what} ${dir} is not a directory (a file is in the way)`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "EROFS" ? "it is on a read-only file system" : "fix its owner or permissions, or choose another with --data";
    throw new Error(`${what} ${dir} is not writable by user ${whoAmI()}: ${why}`);
  }
}
