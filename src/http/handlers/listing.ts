/** Tag list, catalog and referrers (distribution-spec "Content Discovery"). */
import { parseDigest } from "../../oci/digest.js";
import { OCI_INDEX } from "../../oci/media-types.js";
import type { RequestContext } from "../context.js";
import { sendJson, type Headers } from "../respond.js";
import { parseLimit } from "../request.js";

/** Without `n`, the whole tag list comes back (what clients expect); with it, pages of at most this many. */
const MAX_PAGE = 10_000;
const UNBOUNDED = 1_000_000_000;
const CATALOG_DEFAULT_PAGE = 100;

function nextLink(path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
}

export async function listTags(ctx: RequestContext, name: string): Promise<void> {
  const { query } = ctx;
  const requested = query.get("n");
  const limit = parseLimit(requested, UNBOUNDED, requested === null ? UNBOUNDED : MAX_PAGE);
  const page = await ctx.services.listing.tags(name, limit, query.get("last") ?? undefined);
  const headers: Headers = {};
  if (page.next !== null) headers.Link = nextLink(`/v2/${name}/tags/list`, limit, page.next);
  sendJson(ctx.res, 200, { name, tags: page.items }, headers);
}

export async function listCatalog(ctx: RequestContext): Promise<void> {
  const { query } = ctx;
  const limit = parseLimit(query.get("n"), CATALOG_DEFAULT_PAGE, MAX_PAGE);
  const page = await ctx.services.listing.catalog(ctx.principal, limit, query.get("last") ?? undefined);
  const headers: Headers = {};
  if (page.next !== null) headers.Link = nextLink("/v2/_catalog", limit, page.next);
  sendJson(ctx.res, 200, { repositories: page.items }, headers);
}

export async function listReferrers(ctx: RequestContext, name: string, rawDigest: string): Promise<void> {
  const { digest } = parseDigest(rawDigest);
  const artifactType = ctx.query.get("artifactType") ?? undefined;
  const referrers = await ctx.services.listing.referrers(name, digest, artifactType);
  const manifests = referrers.map((r) => {
    const descriptor: Record<string, unknown> = { mediaType: r.mediaType, digest: r.digest, size: r.size };
    if (r.artifactType) descriptor.artifactType = r.artifactType;
    if (r.annotations) descriptor.annotations = r.annotations;
    return descriptor;
  });
  const headers: Headers = { "Content-Type": OCI_INDEX };
  if (artifactType !== undefined) headers["OCI-Filters-Applied"] = "artifactType";
  sendJson(ctx.res, 200, { schemaVersion: 2, mediaType: OCI_INDEX, manifests }, headers);
}
