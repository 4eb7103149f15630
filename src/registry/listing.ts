/** Tag lists, the catalog and referrers (distribution-spec 1.1 "Content Discovery"). */
import { RegistryError } from "../oci/errors.js";
import type { ReferrerRecord } from "../metadata/meta-store.js";
import type { RegistryDeps } from "./context.js";
import type { Principal } from "../auth/access.js";

export interface ListPage {
  items: string[];
  /** The last item when more may follow (for the `Link` header). */
  next: string | null;
}

export class ListingService {
  constructor(private readonly deps: RegistryDeps) {}

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
    // Filtered pages may come back short; keep reading until the page is full or the list ends.
    for (;;) {
      const batch = await meta.listRepositories({ limit: Math.max(limit + 1, 100), after: cursor });
      for (const name of batch) if (access.can(principal, name, "pull")) visible.push(name);
      if (visible.length > limit || batch.length === 0) break;
      cursor = batch[batch.length - 1];
      if (batch.length < Math.max(limit + 1, 100)) break;
    }
    return toPage(visible, limit);
  }

  async referrers(repository: string, subject: string, artifactType: string | undefined): Promise<ReferrerRecord[]> {
    const all = await this.deps.meta.listReferrers(repository, subject);
    return artifactType === undefined ? all : all.filter((r) => r.artifactType === artifactType);
  }
}

function toPage(rows: string[], limit: number): ListPage {
  if (rows.length <= limit) return { items: rows, next: null };
  const items = rows.slice(0, limit);
  return { items, next: items[items.length - 1]! };
}
