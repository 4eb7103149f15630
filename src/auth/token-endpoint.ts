/**
 * The built-in token service (Docker registry token auth spec):
 *   GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...][&offline_token=true&client_id=C]
 *        with Basic credentials, or none for an anonymous token;
 *   POST /token (OAuth2 form, "Docker Registry v2 authentication via OAuth2"):
 *        grant_type=password (username, password[, access_type=offline]) or
 *        grant_type=refresh_token (refresh_token), plus service, client_id, scope.
 * Tokens grant each requested scope cut down to what the policy allows;
 * refusing part of a scope is not an error (the registry answers 403 later).
 * GET /token/jwks serves the public signing key for services that trust us.
 */
import type { IncomingMessage } from "node:http";
import { RegistryError } from "../oci/errors.js";
import type { Extension } from "../http/app.js";
import type { RequestContext } from "../http/context.js";
import { sendJson } from "../http/respond.js";
import { decodeBasic, type PolicyAccess } from "./controller.js";
import { formatScope, parseScopes, type Scope } from "./scope.js";
import { TokenError } from "./tokens.js";
import { loginFailed, loginFailureOf } from "../audit/login-failure.js";

const FORM_LIMIT = 16 * 1024;
const NO_STORE = { "Cache-Control": "no-store", Pragma: "no-cache" };

export function tokenExtensions(access: PolicyAccess): Extension[] {
  return [
    { method: "GET", path: /^\/token$/, access: null, handle: (ctx) => getToken(access, ctx) },
    { method: "POST", path: /^\/token$/, access: null, handle: (ctx) => postToken(access, ctx) },
    {
      method: "GET",
      path: /^\/token\/jwks$/,
      access: null,
      async handle(ctx) {
        sendJson(ctx.res, 200, await access.tokens.freshPublicJwks());
      },
    },
  ];
}

function remote(ctx: RequestContext): string {
  return ctx.clientAddress;
}

function checkService(access: PolicyAccess, service: string | null): void {
  if (service !== null && service !== "" && service !== access.tokens.service) {
    throw new RegistryError("DENIED", `this token service issues tokens for service "${access.tokens.service}", not "${service.slice(0, 100)}"`, {
      status: 400,
      detail: { service: access.tokens.service },
    });
  }
}

async function getToken(access: PolicyAccess, ctx: RequestContext): Promise<void> {
  const { query, req } = ctx;
  await access.users.refresh();
  checkService(access, query.get("service"));
  const scopes = parseScopes(query.getAll("scope"));
  const realm = access.realmFor(req.headers);
  let user: string | null = null;
  const authorization = req.headers.authorization;
  if (authorization) {
    if (!/^basic /i.test(authorization)) {
      throw new RegistryError("UNAUTHORIZED", "the token endpoint takes Basic credentials or none", {
        headers: { "WWW-Authenticate": `Basic realm="Ferry token service",charset="UTF-8"` },
      });
    }
    const credentials = decodeBasic(authorization.slice(6).trim(), access.challenge(realm, []));
    await access.login(credentials.user, credentials.password, remote(ctx), realm).catch((error: unknown) => {
      // Clients asking /token need a Basic challenge here, not a Bearer one pointing back at us.
      if (error instanceof RegistryError && error.code === "UNAUTHORIZED") {
        const failure = loginFailureOf(error);
        const answer = new RegistryError("UNAUTHORIZED", error.message, { headers: { "WWW-Authenticate": `Basic realm="Ferry token service",charset="UTF-8"` } });
        throw loginFailed(answer, failure?.reason ?? "bad-credentials", failure?.user ?? credentials.user);
      }
      throw error;
    });
    user = credentials.user;
  }
  ctx.audit = { tokenUser: user, grant: user === null ? "anonymous" : "basic" };
  const offline = query.get("offline_token") === "true";
  await respond(access, ctx, user, scopes, offline && user !== null ? "new" : null);
}

async function postToken(access: PolicyAccess, ctx: RequestContext): Promise<void> {
  const form = await readForm(ctx.req);
  await access.users.refresh();
  checkService(access, form.get("service"));
  const scopes = parseScopes(form.getAll("scope"));
  const grantType = form.get("grant_type");
  const realm = access.realmFor(ctx.req.headers);
  if (grantType === "password") {
    const user = form.get("username") ?? "";
    const password = form.get("password") ?? "";
    if (user === "") throw new RegistryError("UNAUTHORIZED", "grant_type=password needs username and password", { status: 400 });
    await access.login(user, password, remote(ctx), realm);
    ctx.audit = { tokenUser: user, grant: "password" };
    await respond(access, ctx, user, scopes, form.get("access_type") === "offline" ? "new" : null, true);
    return;
  }
  if (grantType === "refresh_token") {
    const refreshToken = form.get("refresh_token") ?? "";
    const subject = await checkRefresh(access, refreshToken, remote(ctx));
    ctx.audit = { tokenUser: subject, grant: "refresh_token" };
    await respond(access, ctx, subject, scopes, refreshToken, true);
    return;
  }
  throw new RegistryError("UNSUPPORTED", `grant_type "${(grantType ?? "").slice(0, 40)}" is not supported; use password or refresh_token`, {
    status: 400,
  });
}

/** Refresh tokens are signed, so not guessable; failures still count against the address, like bad passwords. */
async function checkRefresh(access: PolicyAccess, refreshToken: string, address: string): Promise<string> {
  try {
    const { subject, fingerprint } = await access.tokens.verifyRefresh(refreshToken);
    if (access.users.credentialFingerprint(subject) !== fingerprint) throw new TokenError("revoked (the user or their password changed)");
    return subject;
  } catch (error) {
    if (!(error instanceof TokenError)) throw error;
    const { error: limited } = await access.limiter.failedShared(address, null);
    throw loginFailed(limited ?? new RegistryError("UNAUTHORIZED", `refresh token rejected: ${error.message}`, { detail: { reason: error.message } }), "refresh-rejected");
  }
}

/** `refresh`: "new" issues one, a string echoes the one the client refreshed with, null: none. */
async function respond(
  access: PolicyAccess,
  ctx: RequestContext,
  user: string | null,
  requested: Scope[],
  refresh: "new" | string | null,
  oauth = false,
): Promise<void> {
  const granted = access.grantScopes(user, requested);
  const issued = await access.tokens.issueAccess(user, granted);
  const body: Record<string, unknown> = {
    token: issued.token,
    access_token: issued.token,
    expires_in: issued.expiresIn,
    issued_at: issued.issuedAt,
  };
  if (oauth) body.scope = granted.map(formatScope).join(" ");
  if (refresh !== null && user !== null && access.tokens.refreshEnabled) {
    if (refresh === "new") {
      const fingerprint = access.users.credentialFingerprint(user);
      if (fingerprint !== undefined) body.refresh_token = (await access.tokens.issueRefresh(user, fingerprint)).token;
    } else {
      body.refresh_token = refresh;
    }
  }
  sendJson(ctx.res, 200, body, NO_STORE);
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    throw new RegistryError("UNSUPPORTED", "POST /token takes an application/x-www-form-urlencoded body", { status: 415 });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > FORM_LIMIT) throw new RegistryError("SIZE_INVALID", "token request body too large", { status: 413 });
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}
