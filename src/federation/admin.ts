/**
 * The federation admin API (admin access only):
 *   GET  /ferry/v1/foreign/layers[?repository=R]   foreign-layer marks and how each URL is served now
 *   GET  /ferry/v1/foreign/sources                 health per URL host
 *   POST /ferry/v1/foreign/verify?repository=R&reference=TAG|DIGEST[&mode=head|fetch]
 *        verifies the foreign layers of one image now and records the outcome
 */
import type { Extension } from "../http/app.js";
import { sendJson } from "../http/respond.js";
import { RegistryError } from "../oci/errors.js";
import { parseManifest } from "../oci/manifest.js";
import { isManifestMediaType } from "../oci/media-types.js";
import { assertRepositoryName, parseManifestReference } from "../oci/reference.js";
import type { FederationService } from "./service.js";
import type { VerifyMode } from "./verifier.js";

const ADMIN = [{ type: "admin" as const }];

export function adminExtensions(federation: FederationService): Extension[] {
  return [
    {
      method: "GET",
      path: /^\/ferry\/v1\/foreign\/layers$/,
      access: ADMIN,
      async handle(ctx) {
        const repository = ctx.query.get("repository") || undefined;
        if (repository !== undefined) assertRepositoryName(repository);
        const marks = await federation.listMarks(repository);
        sendJson(ctx.res, 200, { layers: marks.map((mark) => federation.describeMark(mark)), cache: federation.cache.stats() });
      },
    },
    {
      method: "GET",
      path: /^\/ferry\/v1\/foreign\/sources$/,
      access: ADMIN,
      async handle(ctx) {
        sendJson(ctx.res, 200, { sources: await federation.health.list() });
      },
    },
    {
      method: "POST",
      path: /^\/ferry\/v1\/foreign\/verify$/,
      access: ADMIN,
      async handle(ctx) {
        const repository = required(ctx.query, "repository");
        assertRepositoryName(repository);
        const reference = parseManifestReference(required(ctx.query, "reference"));
        const mode = verifyModeOf(ctx.query.get("mode"), federation.verifyMode);
        const record = await ctx.services.manifests.get(repository, reference);
        const manifests = new Set([record.digest]);
        const parsed = parseManifest(record.content, record.mediaType);
        for (const child of parsed.manifests) if (isManifestMediaType(child.mediaType)) manifests.add(child.digest);
        const marks = (await federation.listMarks(repository)).filter((m) => m.manifests.some((d) => manifests.has(d)));
        const layers = [];
        for (const mark of marks) {
          const verification = await federation.verifyMark(mark, mode);
          layers.push({ digest: mark.digest, size: mark.size, urls: mark.urls, verified: verification.ok, attempts: verification.attempts });
        }
        sendJson(ctx.res, 200, { repository, manifest: record.digest, mode, ok: layers.every((l) => l.verified), layers });
      },
    },
  ];
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
