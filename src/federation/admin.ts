/**
 * The federation admin API (admin access only):
 *   GET  /ferry/v1/foreign/layers[?repository=R[&reference=TAG|DIGEST]]
 *        foreign-layer marks and how each URL is served now
 *   GET  /ferry/v1/foreign/sources[?repository=R[&reference=TAG|DIGEST]]
 *        health per URL (every referenced URL, and every URL with a record),
 *        and the re-check schedule
 *   POST /ferry/v1/foreign/verify?repository=R&reference=TAG|DIGEST[&mode=head|fetch]
 *        verifies the foreign layers of one image now and records the outcome
 */
import type { SourceRow as UiSourceRow } from "../browse/wire.js";
import type { Extension } from "../http/app.js";
import type { RequestContext } from "../http/context.js";
import { sendJson } from "../http/respond.js";
import type { ForeignLayerMark } from "../metadata/meta-store.js";
import { RegistryError } from "../oci/errors.js";
import { parseManifest } from "../oci/manifest.js";
import { isManifestMediaType } from "../oci/media-types.js";
import { assertRepositoryName, parseManifestReference } from "../oci/reference.js";
import type { SourceView } from "./health.js";
import type { FederationService } from "./service.js";
import { refuseCrossSite } from "../http/same-origin.js";
import type { VerifyMode } from "./verifier.js";

const ADMIN = [{ type: "admin" as const }];
/** Admin answers (sources, URLs, cache state) are never kept by a browser or proxy cache. */
const NO_STORE = { "Cache-Control": "no-store" };

/** A row of GET /ferry/v1/foreign/sources. */
export type SourceRow = SourceView & {
  /** A foreign layer references the URL (records of unreferenced URLs go at the next re-check round). */
  referenced: boolean;
  /** Not failing: routing prefers it (the same meaning as `healthy` in /layers). */
  healthy: boolean;
  policy: { allowed: true; rule: string } | { allowed: false; rule: string; reason: string };
};

export function adminExtensions(federation: FederationService): Extension[] {
  return [
    {
      method: "GET",
      path: /^\/ferry\/v1\/foreign\/layers$/,
      access: ADMIN,
      async handle(ctx) {
        const { marks } = await selectedMarks(ctx, federation, false);
        sendJson(ctx.res, 200, { layers: marks.map((mark) => federation.describeMark(mark)), cache: federation.cache.stats() }, NO_STORE);
      },
    },
    {
      method: "GET",
      path: /^\/ferry\/v1\/foreign\/sources$/,
      access: ADMIN,
      async handle(ctx) {
        const filtered = ctx.query.get("repository") !== null && ctx.query.get("repository") !== "";
        const { marks } = await selectedMarks(ctx, federation, false);
        const referenced = new Set(marks.flatMap((mark) => mark.urls));
        const views = new Map<string, SourceView>();
        for (const view of await federation.health.list()) if (!filtered || referenced.has(view.url)) views.set(view.url, view);
        for (const url of referenced) if (!views.has(url)) views.set(url, federation.health.viewOf(url));
        const sources: SourceRow[] = [...views.values()]
          .sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0))
          .map((view) => ({ ...view, referenced: referenced.has(view.url), healthy: view.state !== "failing", policy: policyOf(federation, view.url) }));
        const round = await federation.health.lastRecheckRound();
        sendJson(ctx.res, 200, {
          sources: sources satisfies UiSourceRow[],
          recheck: {
            ...(federation.health.recheckSettings ?? { interval: 0 }),
            lastRound: round && { startedAt: round.startedAt, finishedAt: round.finishedAt, checked: round.checked },
          },
        }, NO_STORE);
      },
    },
    {
      method: "POST",
      path: /^\/ferry\/v1\/foreign\/verify$/,
      access: ADMIN,
      async handle(ctx) {
        // Makes the registry fetch from every source of an image: not for a form posted from another site.
        refuseCrossSite(ctx);
        const mode = verifyModeOf(ctx.query.get("mode"), federation.verifyMode);
        const { marks, repository, manifest } = await selectedMarks(ctx, federation, true);
        const layers = [];
        for (const mark of marks) {
          const verification = await federation.verifyMark(mark, mode);
          layers.push({ digest: mark.digest, size: mark.size, urls: mark.urls, verified: verification.ok, attempts: verification.attempts });
        }
        sendJson(ctx.res, 200, { repository, manifest, mode, ok: layers.every((l) => l.verified), layers }, NO_STORE);
      },
    },
  ];
}

/**
 * The marks the query asks for: all, one repository's, or one image's (the
 * manifest and, for an index, its child manifests). `needImage` requires
 * repository and reference (verify).
 */
async function selectedMarks(
  ctx: RequestContext,
  federation: FederationService,
  needImage: boolean,
): Promise<{ marks: ForeignLayerMark[]; repository?: string; manifest?: string }> {
  const repository = needImage ? required(ctx.query, "repository") : ctx.query.get("repository") || undefined;
  if (repository !== undefined) assertRepositoryName(repository);
  const referenceText = needImage ? required(ctx.query, "reference") : ctx.query.get("reference") || undefined;
  if (referenceText !== undefined && repository === undefined) {
    throw new RegistryError("UNSUPPORTED", `the query parameter "reference" needs "repository"`, { status: 400, detail: { parameter: "repository" } });
  }
  const marks = await federation.listMarks(repository);
  if (referenceText === undefined) return { marks, repository };
  const record = await ctx.services.manifests.get(repository!, parseManifestReference(referenceText));
  const manifests = new Set([record.digest]);
  const parsed = parseManifest(record.content, record.mediaType);
  for (const child of parsed.manifests) if (isManifestMediaType(child.mediaType)) manifests.add(child.digest);
  return { marks: marks.filter((mark) => mark.manifests.some((digest) => manifests.has(digest))), repository, manifest: record.digest };
}

function policyOf(federation: FederationService, url: string): SourceRow["policy"] {
  const decision = federation.policy.decide(url);
  return decision.allowed ? { allowed: true, rule: decision.rule } : { allowed: false, rule: decision.rule, reason: decision.reason };
}

function required(query: URLSearchParams, name: string): string {
  const value = query.get(name);
  if (!value) throw new RegistryError("UNSUPPORTED", `the query parameter "${name}" is required`, { status: 400, detail: { parameter: name } });
  return value;
}

function verifyModeOf(value: string | null, configured: string): VerifyMode {
  if (value === null || value === "") return configured === "head" ? "head" : "fetch";
  if (value === "head" || value === "fetch") return value;
  throw new RegistryError("UNSUPPORTED", `mode must be "head" or "fetch", not "${value.slice(0, 20)}"`, { status: 400, detail: { parameter: "mode" } });
}
