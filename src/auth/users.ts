/**
 * Who exists and how they prove it: users from the htpasswd file and from
 * `auth.users`, their groups, and bcrypt password checks (cached briefly,
 * because bcryptjs takes tens of milliseconds per check and a client sending
 * Basic credentials sends them on every request).
 */
import { createHash, randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import bcrypt from "bcryptjs";
import type { Logger } from "pino";
import type { AuthConfig } from "./config.js";
import { readHtpasswd } from "./htpasswd.js";

const RELOAD_CHECK_MS = 2_000;
const VERIFIED_TTL_MS = 60_000;
const VERIFIED_MAX = 10_000;
// Compared against for unknown users so that a miss costs as much as a wrong password.
let dummyHash: string | undefined;
function dummy(): string {
  return (dummyHash ??= bcrypt.hashSync(randomBytes(16).toString("hex"), 10));
}

export class UserDirectory {
  private htpasswdUsers = new Map<string, string>();
  private htpasswdMtime = 0;
  private lastCheck = 0;
  private readonly groupsByUser = new Map<string, Set<string>>();
  /** sha256(user, password, stored hash) → expiry of a successful check. */
  private readonly verified = new Map<string, number>();

  constructor(
    private readonly config: Pick<AuthConfig, "htpasswd" | "users" | "groups">,
    private readonly logger: Logger,
  ) {
    for (const [user, entry] of Object.entries(config.users)) {
      for (const group of entry.groups) this.addToGroup(user, group);
    }
    for (const [group, members] of Object.entries(config.groups)) {
      for (const user of members) this.addToGroup(user, group);
    }
  }

  private addToGroup(user: string, group: string): void {
    let set = this.groupsByUser.get(user);
    if (!set) this.groupsByUser.set(user, (set = new Set()));
    set.add(group);
  }

  /** Reads the htpasswd file; throws HtpasswdError (naming the line) at start-up. */
  async load(): Promise<void> {
    const file = this.config.htpasswd;
    if (!file) return;
    const { mtimeMs } = await stat(file).catch(() => ({ mtimeMs: 0 }));
    this.htpasswdUsers = await readHtpasswd(file);
    this.htpasswdMtime = mtimeMs;
    this.lastCheck = Date.now();
  }

  /** Picks up edits to the htpasswd file (`ferry user add` on a running registry); keeps the old users if the new file is bad. */
  async refresh(): Promise<void> {
    const file = this.config.htpasswd;
    if (!file || Date.now() - this.lastCheck < RELOAD_CHECK_MS) return;
    this.lastCheck = Date.now();
    try {
      const { mtimeMs } = await stat(file);
      if (mtimeMs === this.htpasswdMtime) return;
      this.htpasswdUsers = await readHtpasswd(file);
      this.htpasswdMtime = mtimeMs;
      this.verified.clear();
      this.logger.info({ file, users: this.htpasswdUsers.size }, "htpasswd file reloaded");
    } catch (error) {
      this.logger.error({ file, err: (error as Error).message }, "htpasswd file not reloaded; keeping the previous users");
    }
  }

  private hashOf(user: string): string | undefined {
    return this.config.users[user]?.passwordHash ?? this.htpasswdUsers.get(user);
  }

  exists(user: string): boolean {
    return this.hashOf(user) !== undefined;
  }

  groupsOf(user: string): string[] {
    return [...(this.groupsByUser.get(user) ?? [])];
  }

  /** Changes whenever the user's password changes; refresh tokens carry it so a new password revokes them. */
  credentialFingerprint(user: string): string | undefined {
    const hash = this.hashOf(user);
    return hash === undefined ? undefined : createHash("sha256").update(hash).digest("base64url").slice(0, 16);
  }

  async verify(user: string, password: string): Promise<boolean> {
    const hash = this.hashOf(user);
    if (hash === undefined) {
      await bcrypt.compare(password, dummy());
      return false;
    }
    const key = createHash("sha256").update(user).update("\0").update(password).update("\0").update(hash).digest("base64");
    const now = Date.now();
    const until = this.verified.get(key);
    if (until !== undefined && until > now) return true;
    if (!(await bcrypt.compare(password, hash))) return false;
    if (this.verified.size >= VERIFIED_MAX) this.verified.clear();
    this.verified.set(key, now + VERIFIED_TTL_MS);
    return true;
  }
}
