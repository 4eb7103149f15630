/**
 * A bounded LRU whose entries are valid for one metadata change token
 * (MetaStore.changeToken) of their scope: a repository, the catalog, or ""
 * (a store-wide token). Seeing a different token for a scope drops that
 * scope's entries. SQLite's token is global to the store, so any write
 * anywhere invalidates every scope as it is next read; PostgreSQL with a live
 * LISTEN connection moves only the scopes a write named. Coarse or fine, it is
 * exact, and listings are read far more often than they change.
 *
 * Callers read the token BEFORE the query whose result they store: a write
 * that lands between the two changes the token, so the (possibly newer)
 * result is filed under the old token and never served again.
 */

/** Scopes remembered with no entries (tokens seen for them): past this, the oldest are forgotten. */
const MAX_EMPTY_SCOPES = 10_000;

interface Scope {
  token: string;
  keys: Set<string>;
}

export class TokenCache<V> {
  private readonly scopes = new Map<string, Scope>();
  private readonly entries = new Map<string, { value: V; bytes: number; scope: Scope }>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** The entry stored under `key` for this token of `scope`, if any (and marks it recently used). */
  get(key: string, token: string, scope = ""): V | undefined {
    const current = this.scopes.get(scope);
    if (current === undefined || current.token !== token) {
      if (current !== undefined) this.dropScope(current);
      this.scopes.delete(scope);
      this.scopes.set(scope, { token, keys: new Set() });
      if (this.scopes.size > MAX_EMPTY_SCOPES) this.forgetEmptyScopes();
      return undefined;
    }
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.value;
  }

  /**
   * Stores `value` if `token` is still the newest one this cache has seen for
   * `scope` (a result computed before a write another request already observed is dropped).
   */
  set(key: string, token: string, value: V, bytes: number, scope = ""): void {
    const current = this.scopes.get(scope);
    if (current === undefined || token !== current.token || bytes > this.maxBytes / 4) return;
    this.remove(key);
    this.entries.set(key, { value, bytes, scope: current });
    current.keys.add(key);
    this.bytes += bytes;
    for (const oldest of this.entries.keys()) {
      if (this.bytes <= this.maxBytes) break;
      this.remove(oldest);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  clear(): void {
    this.entries.clear();
    this.scopes.clear();
    this.bytes = 0;
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    entry.scope.keys.delete(key);
    this.bytes -= entry.bytes;
  }

  private dropScope(scope: Scope): void {
    for (const key of scope.keys) {
      const entry = this.entries.get(key);
      if (entry === undefined) continue;
      this.entries.delete(key);
      this.bytes -= entry.bytes;
    }
    scope.keys.clear();
  }

  /** Forgets scopes holding nothing; a result computed under a forgotten token is then not stored (never wrong). */
  private forgetEmptyScopes(): void {
    for (const [name, scope] of this.scopes) if (scope.keys.size === 0) this.scopes.delete(name);
  }
}
