/**
 * Apache htpasswd files, bcrypt entries only. `htpasswd -B` writes `$2y$`;
 * Go's bcrypt and bcryptjs write `$2a$`/`$2b$`; all three are the same
 * algorithm. MD5 (`$apr1$`), SHA-1 (`{SHA}`), crypt(3) and plain text are
 * refused at start-up: they are fast to brute-force from a leaked file.
 */
import { readFile, writeFile, rename, stat } from "node:fs/promises";
import { BCRYPT_HASH } from "./config.js";
import { threadId } from "node:worker_threads";

export class HtpasswdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HtpasswdError";
  }
}

function weakKind(hash: string): string {
  if (hash.startsWith("$apr1$")) return "an MD5 ($apr1$) hash";
  if (hash.startsWith("{SHA}")) return "a SHA-1 ({SHA}) hash";
  if (hash.startsWith("$1$")) return "an MD5-crypt ($1$) hash";
  if (hash.startsWith("$5$") || hash.startsWith("$6$")) return "a SHA-crypt hash";
  if (hash.startsWith("$2")) return "a malformed bcrypt hash";
  if (/^[./0-9A-Za-z]{13}$/.test(hash)) return "a DES crypt(3) hash";
  return "plain text or an unknown hash kind";
}

/** Parses an htpasswd file; throws HtpasswdError naming the file, line and user on anything but bcrypt. */
export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `${file} line ${index + 1}`;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HtpasswdError(`${where}: expected NAME:HASH`);
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (!BCRYPT_HASH.test(hash)) {
      throw new HtpasswdError(
        `${where} (user "${user}"): ${weakKind(hash)} is not accepted; only bcrypt is. ` +
          `Re-create the entry with "htpasswd -B ${file} ${user}" or "ferry user add --file ${file} ${user}".`,
      );
    }
    if (users.has(user)) throw new HtpasswdError(`${where}: user "${user}" appears twice`);
    users.set(user, hash);
  });
  return users;
}

export async function readHtpasswd(file: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new HtpasswdError(`cannot read htpasswd file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return parseHtpasswd(text, file);
}

/**
 * Sets (hash !== null) or removes one user's line, keeping every other line
 * (comments included) as it was. Written to a temp file and renamed, so a
 * running registry never reads half a file. Returns whether the user existed.
 */
export async function updateHtpasswd(file: string, user: string, hash: string | null): Promise<boolean> {
  let lines: string[] = [];
  let mode = 0o600;
  try {
    const text = await readFile(file, "utf8");
    lines = text.split(/\r?\n/);
    if (lines[lines.length - 1] === "") lines.pop();
    mode = (await stat(file)).mode & 0o777;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const index = lines.findIndex((line) => line.trim().startsWith(`${user}:`));
  const existed = index !== -1;
  if (hash === null) {
    if (existed) lines.splice(index, 1);
  } else if (existed) {
    lines[index] = `${user}:${hash}`;
  } else {
    lines.push(`${user}:${hash}`);
  }
  const temp = `${file}.${process.pid}.${threadId}.tmp`;
  await writeFile(temp, lines.map((l) => `${l}\n`).join(""), { mode });
  await rename(temp, file);
  return existed;
}
