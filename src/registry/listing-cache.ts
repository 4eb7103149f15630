/**
 * A bounded LRU whose entries are valid for one metadata change token
 * (MetaStore.changeToken). Seeing a different token empties it: the token is
 * global to the store, so any write anywhere — this process or another one on
 * the same database — invalidates every listing at once. That is coarse but
 * exact, and listings are read far more often than they change.
 *
 * Callers read the token BEFORE the query whose result they store: a write
 * that lands between the two changes the token, so the (possibly newer)
 * result is filed under the old token and never served again.
 */
export class TokenCache<V> {
  private token: string | undefined;
  private readonly entries = new Map<string, { value: V; bytes: number }>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** The entry stored under `key` for this token, if any (and marks it recently used). */
  get(key: string, token: string): V | undefined {
    if (token !== this.token) {
      this.clear();
      this.token = token;
      return undefined;
    }
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.value;
  }

  /**
   * Stores `value` if `token` is still the newest one this cache has seen
   * (a result computed before a write another request already observed is dropped).
   */
  set(key: string, token: string, value: V, bytes: number): void {
    if (token !== this.token || bytes > this.maxBytes / 4) return;
    const previous = this.entries.get(key);
    if (previous !== undefined) {
      this.bytes -= previous.bytes;
      this.entries.delete(key);
    }
    this.entries.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.bytes;
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
    this.bytes = 0;
  }
}
