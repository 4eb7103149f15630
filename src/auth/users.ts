/**
 * Who exists and how they prove it: users from the htpasswd file and from
 * `auth.users`, their groups, and bcrypt password checks (cached briefly,
 * because bcryptjs takes tens of milliseconds per check and a client sending
 * Basic credentials sends them on every request).
 *
 * A check for a name that does not exist does the same work as one for a
 * name that does: the same cache look-up, then a bcrypt comparison against a
 * dummy hash of the cost most real users' hashes have (re-derived whenever
 * the users change). Otherwise the time of a 401 tells which names exist.
 */
import { createHash, randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import bcrypt from "bcryptjs";
import type { Logger } from "pino";
import { bcryptCost, DEFAULT_BCRYPT_COST, typicalCost } from "./bcrypt-cost.js";
import type { AuthConfig } from "./config.js";
import { readHtpasswd } from "./htpasswd.js";

const RELOAD_CHECK_MS = 2_000;
const VERIFIED_TTL_MS = 60_000;
const VERIFIED_MAX = 10_000;

/** One dummy hash per cost for the whole process: generating one at cost 12 takes a few hundred ms. */
const dummies = new Map<number, Promise<string>>();
function dummyHash(cost: number): Promise<string> {
  let hash = dummies.get(cost);
  if (!hash) dummies.set(cost, (hash = bcrypt.hash(randomBytes(16).toString("hex"), cost)));
  return hash;
}

export interface UserDirectoryOptions {
  /** How often refresh() looks at the htpasswd file's mtime. */
  reloadCheckMs?: number;
}

export class UserDirectory {
  private htpasswdUsers = new Map<string, string>();
  private htpasswdMtime = 0;
  private lastCheck = 0;
  private readonly groupsByUser = new Map<string, Set<string>>();
  /** sha256(user, password, stored hash) → expiry of a successful check; Map order is oldest first. */
  private readonly verified = new Map<string, number>();
  private dummy: { cost: number; hash: string } | undefined;
  private readonly reloadCheckMs: number;

  constructor(
    private readonly config: Pick<AuthConfig, "htpasswd" | "users" | "groups">,
    private readonly logger: Logger,
    options: UserDirectoryOptions = {},
  ) {
    this.reloadCheckMs = options.reloadCheckMs ?? RELOAD_CHECK_MS;
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

  /** Reads the htpasswd file (throws HtpasswdError naming the line at start-up) and prepares the dummy hash. */
  async load(): Promise<void> {
    const file = this.config.htpasswd;
    if (file) {
      const { mtimeMs } = await stat(file).catch(() => ({ mtimeMs: 0 }));
      this.htpasswdUsers = await readHtpasswd(file);
      this.htpasswdMtime = mtimeMs;
      this.lastCheck = Date.now();
    }
    await this.prepareDummy();
  }

  /** Picks up edits to the htpasswd file (`ferry user add` on a running registry); keeps the old users if the new file is bad. */
  async refresh(): Promise<void> {
    const file = this.config.htpasswd;
    if (!file || Date.now() - this.lastCheck < this.reloadCheckMs) return;
    this.lastCheck = Date.now();
    try {
      const { mtimeMs } = await stat(file);
      if (mtimeMs === this.htpasswdMtime) return;
      this.htpasswdUsers = await readHtpasswd(file);
      this.htpasswdMtime = mtimeMs;
      this.verified.clear();
      await this.prepareDummy();
      this.logger.info({ file, users: this.htpasswdUsers.size }, "htpasswd file reloaded");
    } catch (error) {
      this.logger.error({ file, err: (error as Error).message }, "htpasswd file not reloaded; keeping the previous users");
    }
  }

  /** The bcrypt cost of the hash unknown names are checked against (the most common cost among the users). */
  get dummyCost(): number {
    return this.dummy?.cost ?? this.derivedCost();
  }

  private derivedCost(): number {
    const configHashes = Object.values(this.config.users).flatMap((entry) => (entry.passwordHash ? [entry.passwordHash] : []));
    return typicalCost([...configHashes, ...this.htpasswdUsers.values()]) ?? DEFAULT_BCRYPT_COST;
  }

  private async prepareDummy(): Promise<{ cost: number; hash: string }> {
    const cost = this.derivedCost();
    if (this.dummy?.cost !== cost) this.dummy = { cost, hash: await dummyHash(cost) };
    return this.dummy;
  }

  private hashOf(user: string): string | undefined {
    // hasOwn: a name like "__proto__" or "constructor" must not reach Object.prototype.
    const configured = Object.hasOwn(this.config.users, user) ? this.config.users[user]!.passwordHash : undefined;
    return configured ?? this.htpasswdUsers.get(user);
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

  /**
   * Checks a password. `gate` bounds the bcrypt work (see check-gate.ts); a
   * password verified within the last minutes is answered from memory
   * without passing through it.
   */
  async verify(user: string, password: string, gate: <T>(work: () => Promise<T>) => Promise<T> = (work) => work()): Promise<boolean> {
    const dummy = this.dummy ?? (await this.prepareDummy());
    const stored = this.hashOf(user);
    // Only bcrypt hashes are ever loaded (htpasswd.ts and the config schema refuse others); should
    // another kind slip in, it is checked like an unknown name: same cost, and never a match.
    const real = stored !== undefined && bcryptCost(stored) !== undefined;
    const hash = real ? stored : dummy.hash;
    const key = createHash("sha256").update(user).update("\0").update(password).update("\0").update(hash).digest("base64");
    const now = Date.now();
    const until = this.verified.get(key);
    if (until !== undefined && until > now && real) return true;
    const matches = await gate(() => bcrypt.compare(password, hash));
    if (!matches || !real) return false;
    this.remember(key, now + VERIFIED_TTL_MS);
    return true;
  }

  /**
   * Whether verify() would answer from memory that the password is right:
   * such an attempt cannot fail, so it needs no claim against the login limit
   * (a client sending Basic credentials on every request pays no write for it).
   */
  knownGood(user: string, password: string): boolean {
    const stored = this.hashOf(user);
    if (stored === undefined || bcryptCost(stored) === undefined) return false;
    const key = createHash("sha256").update(user).update("\0").update(password).update("\0").update(stored).digest("base64");
    const until = this.verified.get(key);
    return until !== undefined && until > Date.now();
  }

  private remember(key: string, until: number): void {
    this.verified.delete(key);
    // Drop the oldest entries rather than the whole cache: clearing it would make every client pay bcrypt again at once.
    while (this.verified.size >= VERIFIED_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(key, until);
  }
}
