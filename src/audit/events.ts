/**
 * Which requests the audit log records, and what it says about them: pushes,
 * deletions, tag moves, logins and failed logins, admin API writes
 * (docs/observability.md).
 * Built from what the dispatcher knows once a request is over (principal,
 * route, status, error) plus the few facts handlers leave in `ctx.audit`.
 * Pulls are not audited (that is the access log's job). Nothing secret is
 * ever written: no password, token or Authorization header, only user names.
 */
import type { RequestObserver, RequestSummary } from "../http/app.js";
import { matchRoute } from "../http/routes.js";
import { loginFailureOf } from "./login-failure.js";
import type { Logger } from "pino";
import type { AuditLog, AuditRecord } from "./audit-log.js";

/** User names are the caller's text: long ones are cut (JSON escaping already keeps each record on one line). */
const MAX_USER = 100;

export class AuditObserver implements RequestObserver {
  constructor(
    private readonly log: Pick<AuditLog, "append">,
    private readonly logger: Logger,
  ) {}

  requestDone(summary: RequestSummary): void {
    try {
      for (const record of auditRecords(summary)) this.log.append(record);
    } catch (error) {
      // Runs on the response's event: a bug here must not take the server down.
      this.logger.error({ err: error, requestId: summary.requestId }, "audit record failed");
    }
  }
}

export function auditRecords(summary: RequestSummary): AuditRecord[] {
  const { ctx, method, res } = summary;
  // Framing errors never identified anyone or changed anything.
  if (!ctx) return [];
  // An answer that began before the connection closed still means the change happened.
  if (!summary.completed && !res.headersSent) return [];
  // The common case, a pull that did not fail a login, returns here before anything is allocated.
  if ((method === "GET" || method === "HEAD") && summary.routeKind !== "base" && summary.routeKind !== "extension" && summary.error === undefined) return [];
  // GET /v2/ is audited only as a Basic login (below); every other answer to it returns here, also before allocating:
  // building the record first was 3.7% of the dispatcher's floor under wrk (docs/benchmarks-history.md, "Speed round 4").
  if (summary.routeKind === "base" && summary.error === undefined && !(summary.status >= 200 && summary.status < 300 && ctx.principal.via === "basic")) return [];
  const base: AuditRecord = {
    time: new Date().toISOString(),
    action: "",
    user: cut(ctx.principal.user),
    client: ctx.clientAddress,
    requestId: summary.requestId,
  };
  const failure = loginFailureOf(summary.error);
  if (failure) return [{ ...base, action: "login.failed", user: cut(failure.user), reason: failure.reason, status: summary.status }];

  const status = summary.status;
  const ok = status >= 200 && status < 300;
  const denied = status === 403;
  if (summary.routeKind === "extension") {
    if (ok && /^\/token\/?$/.test(summary.path) && ctx.audit?.tokenUser) {
      return [{ ...base, action: "login", user: cut(ctx.audit.tokenUser), grant: ctx.audit.grant }];
    }
    // Admin API calls that may change something (verification, garbage collection, …), done or refused.
    if ((ok || denied) && summary.path.startsWith("/ferry/v1/") && method !== "GET" && method !== "HEAD") {
      return [{ ...base, action: "admin", outcome: ok ? "ok" : "denied", method, path: summary.path.slice(0, 300) }];
    }
    return [];
  }
  if (summary.routeKind === "base") {
    // What `docker login` does against a registry without a token service: GET /v2/ with Basic credentials.
    return ok && ctx.principal.via === "basic" ? [{ ...base, action: "login", grant: "basic" }] : [];
  }
  if (!ok && !denied) return [];
  const outcome = ok ? "ok" : "denied";
  const route = matchRoute(summary.path);
  if (route?.kind === "manifest" && method === "PUT") {
    const digest = ok ? ctx.audit?.digest : undefined;
    const tag = route.reference.includes(":") ? undefined : route.reference;
    const push: AuditRecord = { ...base, action: "push", outcome, repository: route.name, tag, digest: digest ?? (tag ? undefined : route.reference) };
    const previous = ctx.audit?.previousDigest;
    if (!ok || !tag || !previous || previous === digest) return [push];
    return [push, { ...base, action: "tag.move", repository: route.name, tag, from: previous, to: digest }];
  }
  if (route?.kind === "manifest" && method === "DELETE") {
    const byDigest = route.reference.includes(":");
    return [{ ...base, action: byDigest ? "delete.manifest" : "delete.tag", outcome, repository: route.name, [byDigest ? "digest" : "tag"]: route.reference }];
  }
  if (route?.kind === "blob" && method === "DELETE") {
    return [{ ...base, action: "delete.blob", outcome, repository: route.name, digest: route.digest }];
  }
  return [];
}

function cut(user: string | null | undefined): string | null {
  if (user === null || user === undefined) return null;
  return user.length > MAX_USER ? `${user.slice(0, MAX_USER)}…` : user;
}
