/**
 * Hot manifests, kept in memory for one metadata change token (see
 * MetaStore.changeToken and TokenCache). A manifest GET by tag is a join and a
 * copy of the manifest bytes out of SQLite; reading the token is one pragma.
 * Any write anywhere (this process, another --workers process on the same
 * database, `ferry gc`) changes the token and so empties the cache: a client
 * that pushed through one worker and pulls through another sees its push.
 */
import type { ManifestRecord, MetaStore } from "../metadata/meta-store.js";
import type { ManifestReference } from "../oci/reference.js";
import { TokenCache } from "./listing-cache.js";

/** Enough for the hot set (manifests are a few KiB) without weighing on the heap. */
const MANIFEST_CACHE_BYTES = 8 * 1024 * 1024;
/** Rough per-entry heap cost besides the bytes themselves (record object, key, map slot). */
const ENTRY_OVERHEAD = 400;

export class ManifestCache {
  private readonly cache: TokenCache<ManifestRecord | null>;

  constructor(
    private readonly meta: MetaStore,
    maxBytes = MANIFEST_CACHE_BYTES,
  ) {
    this.cache = new TokenCache(maxBytes);
  }

  /** The record for `reference`, or null when there is none; from memory while nothing was written. */
  async get(repository: string, reference: ManifestReference): Promise<ManifestRecord | null> {
    // Scoped to the repository: a write to another one leaves these entries alone where the store can tell (PostgreSQL).
    const token = this.meta.changeToken ? await this.meta.changeToken(repository) : null;
    if (token === null) return this.read(repository, reference);
    const key = cacheKey(repository, reference);
    const cached = this.cache.get(key, token, repository);
    if (cached !== undefined) return cached;
    // Read after the token: a write in between files this result under the stale token, never served.
    const record = await this.read(repository, reference);
    // Misses are cached too: a client polling for a tag that does not exist yet costs no query either.
    this.cache.set(key, token, record, ENTRY_OVERHEAD + key.length * 2 + (record?.content.length ?? 0), repository);
    return record;
  }

  private read(repository: string, reference: ManifestReference): Promise<ManifestRecord | null> {
    return reference.kind === "tag"
      ? this.meta.getTaggedManifest(repository, reference.tag)
      : this.meta.getManifest(repository, reference.digest.digest);
  }
}

/** Tags and digests cannot be confused: a tag never contains ':' and a digest always does. */
function cacheKey(repository: string, reference: ManifestReference): string {
  return `${repository}\n${reference.kind === "tag" ? reference.tag : reference.digest.digest}`;
}
