/**
 * PolicyAccess: the AccessController used when `auth` is configured.
 *
 * Callers authenticate with Basic credentials (checked against the user
 * directory, rate limited) or a Bearer token (ours or a trusted issuer's).
 * Callers without credentials are anonymous: they may pull public
 * repositories and nothing else; everything else answers 401 with a
 * challenge, including `GET /v2/` — as CNCF distribution does, because
 * docker, podman and skopeo probe /v2/ first and learn the token realm from
 * that 401 (distribution: registry/handlers/app.go authorized(), which
 * challenges the base route with an empty access list).
 *
 * 401 vs 403: a caller who is anonymous, or whose token merely lacks a scope
 * the policy would grant, gets 401 with a challenge naming the scope so the
 * client fetches a better token; an identified user the policy refuses gets
 * 403 DENIED.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Logger } from "pino";
import { RegistryError } from "../oci/errors.js";
import type { Extension } from "../http/app.js";
import type { AccessController, AccessRequest, Principal, RepositoryAction } from "./access.js";
import type { AuthConfig } from "./config.js";
import type { Policy } from "./policy.js";
import type { LoginClaim, LoginLimiter } from "./rate-limit.js";
import { formatScope, type Scope } from "./scope.js";
import { TokenError, type TokenService } from "./tokens.js";
import type { UserDirectory } from "./users.js";
import { CheckGate } from "./check-gate.js";
import { loginFailed } from "../audit/login-failure.js";

export interface PolicyAccessDeps {
  config: AuthConfig;
  users: UserDirectory;
  policy: Policy;
  tokens: TokenService;
  limiter: LoginLimiter;
  logger: Logger;
}

export class PolicyAccess implements AccessController {
  readonly open = false;
  extensions?: Extension[];
  close?: () => Promise<void>;

  /** Bounds the CPU password checks may take, per address and in total. */
  private readonly checks = new CheckGate();

  constructor(private readonly deps: PolicyAccessDeps) {}

  get users(): UserDirectory {
    return this.deps.users;
  }
  get policy(): Policy {
    return this.deps.policy;
  }
  get tokens(): TokenService {
    return this.deps.tokens;
  }
  get limiter(): LoginLimiter {
    return this.deps.limiter;
  }

  /** Whether 401s carry a Bearer challenge (a token service exists) or a Basic one. */
  private get bearer(): boolean {
    return this.deps.config.token.enabled || this.deps.config.token.realm !== undefined;
  }

  realmFor(headers: IncomingHttpHeaders): string | undefined {
    if (this.deps.config.token.realm) return this.deps.config.token.realm;
    if (!this.deps.config.token.enabled) return undefined;
    const forwardedHost = firstValue(headers["x-forwarded-host"]);
    const host = forwardedHost ?? headers.host ?? "localhost";
    const proto = firstValue(headers["x-forwarded-proto"]) === "https" ? "https" : "http";
    // The realm goes back only to the caller that sent the header; still, keep it a plain host[:port].
    const safeHost = /^[A-Za-z0-9.\-:[\]]{1,255}$/.test(host) ? host : "localhost";
    return `${proto}://${safeHost}/token`;
  }

  async authenticate(headers: IncomingHttpHeaders, remoteAddress: string): Promise<Principal> {
    await this.deps.users.refresh();
    const realm = this.realmFor(headers);
    const authorization = headers.authorization;
    if (!authorization) return { user: null, realm };
    const space = authorization.indexOf(" ");
    const scheme = (space === -1 ? authorization : authorization.slice(0, space)).toLowerCase();
    const credentials = space === -1 ? "" : authorization.slice(space + 1).trim();
    if (scheme === "basic") {
      const { user, password } = decodeBasic(credentials, this.challenge(realm, []));
      await this.login(user, password, remoteAddress, realm);
      return { user, via: "basic", realm };
    }
    if (scheme === "bearer") {
      try {
        const verified = await this.deps.tokens.verifyAccess(credentials);
        return { user: verified.subject, via: "token", grants: verified.access, localToken: verified.local, realm };
      } catch (error) {
        if (!(error instanceof TokenError)) throw error;
        throw loginFailed(
          new RegistryError("UNAUTHORIZED", `token rejected: ${error.message}`, {
            headers: { "WWW-Authenticate": this.challenge(realm, [], "invalid_token") },
            detail: { reason: error.message },
          }),
          "token-rejected",
        );
      }
    }
    throw loginFailed(
      new RegistryError("UNAUTHORIZED", `authorization scheme "${scheme.slice(0, 20)}" is not supported; use Basic or Bearer`, {
        headers: { "WWW-Authenticate": this.challenge(realm, []) },
      }),
      "malformed",
    );
  }

  /**
   * Checks a user's password under the failed-login limits (rate-limit.ts);
   * throws 401 or 429. Shared by Basic auth on the API and by the token
   * endpoint. `remoteAddress` is the client address as the HTTP layer
   * resolved it (X-Forwarded-For only from trusted proxies).
   */
  async login(user: string, password: string, remoteAddress: string, realm: string | undefined): Promise<void> {
    const { limiter, users, logger } = this.deps;
    let claim: LoginClaim | undefined;
    try {
      // A password verified moments ago cannot fail: no claim (and no write) for it.
      claim = await limiter.admitShared(remoteAddress, user, !users.knownGood(user, password));
    } catch (error) {
      throw loginFailed(error, "rate-limited", user);
    }
    if (await users.verify(user, password, (work) => this.checks.run(remoteAddress, work))) {
      await limiter.succeeded(claim);
      return;
    }
    const outcome = await limiter.failedShared(remoteAddress, user, claim);
    const who = { user: user.slice(0, 100), address: remoteAddress };
    logger.info(who, "failed login");
    for (const kind of outcome.reached) {
      logger.warn({ ...who, limit: kind, window: limiter.limits.windowMs }, `failed-login limit reached for this ${kind === "user" ? "user name" : "address"}`);
    }
    // The same words for a wrong password and an unknown name: the answer must not tell which names exist.
    const refusal = outcome.error ?? new RegistryError("UNAUTHORIZED", "invalid user name or password", { headers: { "WWW-Authenticate": this.challenge(realm, []) } });
    throw loginFailed(refusal, "bad-credentials", user);
  }

  challenge(realm: string | undefined, scopes: Scope[], error?: "invalid_token" | "insufficient_scope"): string {
    if (!this.bearer || realm === undefined) return `Basic realm="Ferry registry",charset="UTF-8"`;
    let value = `Bearer realm="${realm}",service="${this.deps.config.token.service}"`;
    if (scopes.length > 0) value += `,scope="${scopes.map(formatScope).join(" ")}"`;
    if (error) value += `,error="${error}"`;
    return value;
  }

  private groups(user: string | null): string[] {
    return user === null ? [] : this.deps.users.groupsOf(user);
  }

  /** Repository actions the caller holds right now (token grants for token callers, the policy otherwise). */
  private held(principal: Principal, repository: string): Set<RepositoryAction> {
    if (principal.via !== "token") return this.deps.policy.allowed(principal.user, this.groups(principal.user), repository);
    const held = new Set<RepositoryAction>();
    if (this.deps.policy.isPublic(repository)) held.add("pull");
    for (const grant of principal.grants ?? []) {
      if (grant.type !== "repository" || grant.name !== repository) continue;
      for (const action of grant.actions) {
        if (action === "*") ["pull", "push", "delete"].forEach((a) => held.add(a as RepositoryAction));
        else if (action === "pull" || action === "push" || action === "delete") held.add(action);
      }
    }
    return held;
  }

  private isAdmin(principal: Principal): boolean {
    return principal.via !== undefined && this.deps.policy.isAdmin(principal.user, this.groups(principal.user));
  }

  private granted(principal: Principal, request: AccessRequest): boolean {
    switch (request.type) {
      case "repository": {
        const held = this.held(principal, request.name);
        return request.actions.every((action) => held.has(action));
      }
      case "registry":
        // The catalog is filtered per caller, so any identified caller may list it;
        // token callers need it in their token, as distribution requires.
        if (principal.via === "token") {
          return (principal.grants ?? []).some((g) => g.type === "registry" && g.name === "catalog" && g.actions.includes("*"));
        }
        return principal.via === "basic";
      case "admin":
        return this.isAdmin(principal);
    }
  }

  /** Whether the policy (not the token) would let this caller have `request`: decides 401 vs 403 for local tokens. */
  private policyWouldGrant(principal: Principal, request: AccessRequest): boolean {
    if (request.type === "repository") {
      const allowed = this.deps.policy.allowed(principal.user, this.groups(principal.user), request.name);
      return request.actions.every((a) => allowed.has(a));
    }
    if (request.type === "registry") return true;
    return this.isAdmin(principal);
  }

  async authorize(principal: Principal, access: AccessRequest[]): Promise<void> {
    const scopes = access.map(toScope).filter((s): s is Scope => s !== null);
    if (principal.via === undefined && access.every((r) => r.type === "repository") && access.length > 0) {
      if (access.every((r) => this.granted(principal, r))) return; // anonymous pull of a public repository
    }
    if (principal.via === undefined) {
      throw new RegistryError("UNAUTHORIZED", "authentication required", {
        headers: { "WWW-Authenticate": this.challenge(principal.realm, scopes) },
        detail: scopes.length > 0 ? { scope: scopes.map(formatScope) } : undefined,
      });
    }
    const missing = access.filter((r) => !this.granted(principal, r));
    if (missing.length === 0) return;
    const missingScopes = missing.map(toScope).filter((s): s is Scope => s !== null).map(formatScope);
    const tokenCouldCover =
      principal.via === "token" && (principal.user === null || !principal.localToken || missing.every((r) => this.policyWouldGrant(principal, r)));
    if (tokenCouldCover) {
      throw new RegistryError("UNAUTHORIZED", "the token does not grant this access; request a token with the scope named in the challenge", {
        headers: { "WWW-Authenticate": this.challenge(principal.realm, scopes, "insufficient_scope") },
        detail: { scope: missingScopes },
      });
    }
    if (principal.user === null) {
      throw new RegistryError("UNAUTHORIZED", "authentication required", {
        headers: { "WWW-Authenticate": this.challenge(principal.realm, scopes) },
        detail: { scope: missingScopes },
      });
    }
    throw new RegistryError("DENIED", `user "${principal.user}" may not ${describe(missing)}`, {
      detail: { scope: missingScopes, user: principal.user },
    });
  }

  can(principal: Principal, repository: string, action: RepositoryAction): boolean {
    if (this.held(principal, repository).has(action)) return true;
    // Our own tokens name one of our users: the policy applies to them too (catalog filtering, mount sources).
    return principal.via === "token" && principal.localToken === true && this.deps.policy.allowed(principal.user, this.groups(principal.user), repository).has(action);
  }

  isAnonymousReadable(repository: string): boolean {
    return this.deps.policy.isPublic(repository);
  }

  /** The access a token request may have: each requested scope cut down to what the policy allows. */
  grantScopes(user: string | null, requested: Scope[]): Scope[] {
    const groups = this.groups(user);
    const out: Scope[] = [];
    for (const scope of requested) {
      if (scope.type === "repository") {
        const allowed = this.deps.policy.allowed(user, groups, scope.name);
        const actions = scope.actions.filter((a) =>
          a === "*" ? allowed.size === 3 : a === "pull" || a === "push" || a === "delete" ? allowed.has(a) : false,
        );
        if (actions.length > 0) out.push({ type: "repository", name: scope.name, actions: [...new Set(actions)] });
      } else if (scope.type === "registry" && scope.name === "catalog" && scope.actions.includes("*")) {
        out.push({ type: "registry", name: "catalog", actions: ["*"] });
      }
    }
    return out;
  }
}

function toScope(request: AccessRequest): Scope | null {
  if (request.type === "repository") return { type: "repository", name: request.name, actions: [...request.actions] };
  if (request.type === "registry") return { type: "registry", name: "catalog", actions: ["*"] };
  return null;
}

function describe(missing: AccessRequest[]): string {
  return missing
    .map((r) =>
      r.type === "repository"
        ? `${r.actions.join("+")} repository "${r.name}"`
        : r.type === "registry"
          ? "list the catalog"
          : "use the admin API",
    )
    .join(", ");
}

function firstValue(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  return value?.split(",")[0]?.trim() || undefined;
}

/** Base64 Basic credentials longer than this are refused unread: no real user name and password need 3 KiB. */
export const MAX_BASIC_CREDENTIALS = 4096;

export function decodeBasic(credentials: string, challenge: string): { user: string; password: string } {
  if (credentials.length > MAX_BASIC_CREDENTIALS) {
    throw loginFailed(new RegistryError("UNAUTHORIZED", "Basic credentials too long", { headers: { "WWW-Authenticate": challenge } }), "malformed");
  }
  const decoded = Buffer.from(credentials, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) {
    throw loginFailed(new RegistryError("UNAUTHORIZED", "malformed Basic credentials", { headers: { "WWW-Authenticate": challenge } }), "malformed");
  }
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
