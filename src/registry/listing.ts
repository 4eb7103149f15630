/** Tag lists, the catalog and referrers (distribution-spec 1.1 "Content Discovery"). */
import { RegistryError } from "../oci/errors.js";
import { CATALOG_SCOPE, type ReferrerRecord } from "../metadata/meta-store.js";
import type { RegistryDeps } from "./context.js";
import type { Principal } from "../auth/access.js";
import { TokenCache } from "./listing-cache.js";

/** Unfiltered catalog batches kept for filtered (per-caller) catalogs. */
const CATALOG_BATCH_CACHE_BYTES = 8 * 1024 * 1024;

export interface ListPage {
  items: string[];
  /** The last item when more may follow (for the `Link` header). */
  next: string | null;
}

export class ListingService {
  private readonly catalogBatches = new TokenCache<string[]>(CATALOG_BATCH_CACHE_BYTES);

  constructor(private readonly deps: RegistryDeps) {}

  /**
   * The metadata store's change token (see MetaStore.changeToken): listings
   * read under one token stay valid while it is unchanged. Null when the store
   * cannot tell, and then nothing may be cached. `scope`: a repository, or
   * CATALOG_SCOPE.
   */
  changeToken(scope?: string): Promise<string | null> {
    // Not async: the store's own promise is handed on (an async function returning it would cost two more microtask hops per cached listing).
    const { meta } = this.deps;
    return meta.changeToken ? meta.changeToken(scope) : Promise.resolve(null);
  }

  async tags(repository: string, limit: number, after: string | undefined): Promise<ListPage> {
    if (!(await this.deps.meta.repositoryExists(repository))) {
      throw new RegistryError("NAME_UNKNOWN", `repository ${repository} is not known to this registry`, { detail: { name: repository } });
    }
    if (limit === 0) return { items: [], next: null };
    const rows = await this.deps.meta.listTags(repository, { limit: limit + 1, after });
    return toPage(rows, limit);
  }

  /** The catalog lists only repositories the caller may pull from. */
  async catalog(principal: Principal, limit: number, after: string | undefined): Promise<ListPage> {
    if (limit === 0) return { items: [], next: null };
    const { meta, access } = this.deps;
    if (access.open) return toPage(await meta.listRepositories({ limit: limit + 1, after }), limit);
    const visible: string[] = [];
    let cursor = after;
    const token = await this.changeToken(CATALOG_SCOPE);
    // Filtered pages may come back short; keep reading until the page is full or the list ends.
    // The unfiltered batches are the same for every caller, so they are cached; filtering is not.
    for (;;) {
      const batch = await this.repositoryBatch(token, Math.max(limit + 1, 100), cursor);
      for (const name of batch) if (access.can(principal, name, "pull")) visible.push(name);
      if (visible.length > limit || batch.length === 0) break;
      cursor = batch[batch.length - 1];
      if (batch.length < Math.max(limit + 1, 100)) break;
    }
    return toPage(visible, limit);
  }

  private async repositoryBatch(token: string | null, limit: number, after: string | undefined): Promise<string[]> {
    const key = `${limit}\n${after ?? ""}`;
    const cached = token === null ? undefined : this.catalogBatches.get(key, token, CATALOG_SCOPE);
    if (cached !== undefined) return cached;
    const batch = await this.deps.meta.listRepositories({ limit, after });
    if (token !== null) this.catalogBatches.set(key, token, batch, estimateBytes(batch), CATALOG_SCOPE);
    return batch;
  }

  async referrers(repository: string, subject: string, artifactType: string | undefined): Promise<ReferrerRecord[]> {
    const all = await this.deps.meta.listReferrers(repository, subject);
    return artifactType === undefined ? all : all.filter((r) => r.artifactType === artifactType);
  }
}

/** Rough heap cost of a list of short strings. */
function estimateBytes(items: string[]): number {
  let bytes = 64;
  for (const item of items) bytes += 32 + item.length * 2;
  return bytes;
}

function toPage(rows: string[], limit: number): ListPage {
  if (rows.length <= limit) return { items: rows, next: null };
  const items = rows.slice(0, limit);
  return { items, next: items[items.length - 1]! };
}
