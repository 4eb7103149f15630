/** Tag list, catalog and referrers (distribution-spec "Content Discovery"). */
import { parseDigest } from "../../oci/digest.js";
import { OCI_INDEX } from "../../oci/media-types.js";
import type { RequestContext } from "../context.js";
import { API_VERSION_HEADER, safeHeaders, sendJson, sendPrepared, type Headers } from "../respond.js";
import { parseLimit } from "../request.js";
import { TokenCache } from "../../registry/listing-cache.js";
import { CATALOG_SCOPE } from "../../metadata/meta-store.js";
import type { ListingService } from "../../registry/listing.js";

/** Without `n`, the whole tag list comes back (what clients expect); with it, pages of at most this many. */
const MAX_PAGE = 10_000;
const UNBOUNDED = 1_000_000_000;
const CATALOG_DEFAULT_PAGE = 100;

/**
 * Rendered tag-list and catalog responses, per registry (one ListingService
 * each), valid for one metadata change token. Serializing 10,000 tags and
 * reading them from SQLite cost milliseconds; a hit is a map lookup.
 */
const RESPONSE_CACHE_BYTES = 16 * 1024 * 1024;

interface RenderedList {
  body: Buffer;
  /** Complete and header-safe (API version, Content-Length included): built once, sent as is on every hit. */
  headers: Headers;
}

const responseCaches = new WeakMap<ListingService, TokenCache<RenderedList>>();

function responseCache(listing: ListingService): TokenCache<RenderedList> {
  let cache = responseCaches.get(listing);
  if (cache === undefined) {
    cache = new TokenCache<RenderedList>(RESPONSE_CACHE_BYTES);
    responseCaches.set(listing, cache);
  }
  return cache;
}

function nextLink(path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
}

function render(value: unknown, path: string, limit: number, next: string | null): RenderedList {
  const body = Buffer.from(JSON.stringify(value));
  const headers: Headers = { ...API_VERSION_HEADER, "Content-Length": body.length, "Content-Type": "application/json" };
  if (next !== null) headers.Link = nextLink(path, limit, next);
  return { body, headers: safeHeaders(headers) };
}

/**
 * Sends the response for `key`: from the cache when it was rendered under the
 * current change token, else rendered now (and cached). `key` null: the
 * response depends on the caller and is never cached.
 */
async function sendListing(ctx: RequestContext, scope: string, key: string | null, produce: () => Promise<RenderedList>): Promise<void> {
  const rendered = key === null ? await produce() : await cachedListing(ctx.services.listing, scope, key, produce);
  sendPrepared(ctx.res, 200, rendered.headers, rendered.body);
}

async function cachedListing(listing: ListingService, scope: string, key: string, produce: () => Promise<RenderedList>): Promise<RenderedList> {
  // Read before the query: a write racing it files the result under a token that is already stale.
  const token = await listing.changeToken(scope);
  if (token === null) return produce();
  const cache = responseCache(listing);
  const hit = cache.get(key, token, scope);
  if (hit !== undefined) return hit;
  const rendered = await produce();
  cache.set(key, token, rendered, rendered.body.length + key.length + 256, scope);
  return rendered;
}

export async function listTags(ctx: RequestContext, name: string): Promise<void> {
  const { query } = ctx;
  const requested = query.get("n");
  const limit = parseLimit(requested, UNBOUNDED, requested === null ? UNBOUNDED : MAX_PAGE);
  const last = query.get("last") ?? undefined;
  // Repository names cannot hold a newline and limit is a number, so the key is unambiguous.
  await sendListing(ctx, name, `${name}\n${limit}\n${last ?? ""}`, async () => {
    const page = await ctx.services.listing.tags(name, limit, last);
    return render({ name, tags: page.items }, `/v2/${name}/tags/list`, limit, page.next);
  });
}

export async function listCatalog(ctx: RequestContext): Promise<void> {
  const { query } = ctx;
  const limit = parseLimit(query.get("n"), CATALOG_DEFAULT_PAGE, MAX_PAGE);
  const last = query.get("last") ?? undefined;
  // A filtered catalog depends on the caller: only the open one is cached whole
  // (the service caches the unfiltered batches a filtered one is cut from).
  const key = ctx.services.access.open ? `/_catalog\n${limit}\n${last ?? ""}` : null;
  await sendListing(ctx, CATALOG_SCOPE, key, async () => {
    const page = await ctx.services.listing.catalog(ctx.principal, limit, last);
    return render({ repositories: page.items }, "/v2/_catalog", limit, page.next);
  });
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
