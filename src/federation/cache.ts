/**
 * The proxy cache: verified foreign blobs kept in a blob store namespace of
 * their own (a `BlobStore` rooted apart from pushed blobs: evicting a cached
 * layer can never delete a blob someone pushed, and garbage collection of
 * pushed blobs never sees the cache). Bytes arrive through the store's
 * upload-session → commit path and are committed only after their digest was
 * verified, so no reader ever sees a partial or wrong blob.
 *
 * The index (size, fetch time, last access, pin) lives in the metadata store,
 * so every process and replica that shares the metadata and the blob store
 * shares one cache and one byte budget. Eviction picks its victims in one
 * metadata transaction and deletes bytes under a per-digest lease, after
 * checking that no commit brought the entry back meanwhile. Pinned entries
 * never expire and are never evicted; they are outside the byte budget.
 *
 * Who may read a cached blob is not decided here: the proxy serves cached
 * bytes to a repository only when that repository holds a proof for the
 * layer (see proxy.ts and docs/federation.md "Who may read cached bytes").
 */
import { randomUUID } from "node:crypto";
import { PassThrough, type Readable } from "node:stream";
import type { Logger } from "pino";
import type { BlobStore, ByteRange } from "../storage/blob-store.js";
import { BlobNotFoundError } from "../storage/blob-store.js";
import type { ForeignCacheEntry, MetaStore } from "../metadata/meta-store.js";

export interface CacheStats {
  entries: number;
  /** Bytes of unpinned entries (what `cacheMaxBytes` bounds). */
  bytes: number;
  maxBytes: number;
  pinnedEntries: number;
  pinnedBytes: number;
}

export interface ProxyCacheOptions {
  store: BlobStore;
  meta: MetaStore;
  ttlMs: number;
  maxBytes: number;
  logger: Logger;
  now?: () => number;
  /**
   * A cache hit records its time at most this often per entry (each record
   * is a metadata write). Default 0: every hit, which keeps LRU exact and
   * costs one small write per blob served from the cache.
   */
  touchIntervalMs?: number;
}

/** Sessions untouched this long are left over from a crash; a live fill keeps writing. */
const STALE_SESSION_MS = 3_600_000;
const LEASE_MS = 60_000;
const LEASE_KEY = (digest: string) => `federation-cache:${digest}`;

export class ProxyCache {
  readonly maxBytes: number;
  private readonly store: BlobStore;
  private readonly meta: MetaStore;
  private readonly ttlMs: number;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly touchIntervalMs: number;
  /** Identifies this process in leases. */
  private readonly holder = `cache-${randomUUID()}`;
  /** Last index read, for the synchronous admin view (refreshed after every change here and before admin listings). */
  private snapshot = new Map<string, ForeignCacheEntry>();

  constructor(options: ProxyCacheOptions) {
    this.store = options.store;
    this.meta = options.meta;
    this.ttlMs = options.ttlMs;
    this.maxBytes = options.maxBytes;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.touchIntervalMs = options.touchIntervalMs ?? 0;
  }

  /** `cleanup` false (a serving thread whose main thread has just cleaned up): only reads the index, never the store. */
  async init(cleanup = true): Promise<void> {
    if (!cleanup) return this.refresh();
    const cutoff = this.now() - STALE_SESSION_MS;
    for (const session of await this.store.listUploads()) {
      if (session.modifiedAt < cutoff) await this.store.abortUpload(session.id).catch(() => undefined);
    }
    await this.evict();
  }

  async refresh(): Promise<void> {
    this.snapshot = new Map((await this.meta.listForeignCache()).map((entry) => [entry.digest, entry]));
  }

  /** From the last snapshot: the blob is cached and fresh (or pinned). */
  has(digest: string): boolean {
    const entry = this.snapshot.get(digest);
    return entry !== undefined && this.fresh(entry);
  }

  pinned(digest: string): boolean {
    return this.snapshot.get(digest)?.pinned ?? false;
  }

  stats(): CacheStats {
    let entries = 0;
    let bytes = 0;
    let pinnedEntries = 0;
    let pinnedBytes = 0;
    for (const entry of this.snapshot.values()) {
      if (entry.pinned) {
        pinnedEntries++;
        pinnedBytes += entry.size;
      } else {
        entries++;
        bytes += entry.size;
      }
    }
    return { entries, bytes, maxBytes: this.maxBytes, pinnedEntries, pinnedBytes };
  }

  /** True when a blob of this size may be kept (pinned blobs always may). */
  fits(size: number, pinned: boolean): boolean {
    return pinned || size <= this.maxBytes;
  }

  /** The cached blob (or a range of it) when fresh or pinned; null on a miss. The caller checked the repository's proof. */
  async open(digest: string, range?: ByteRange): Promise<Readable | null> {
    const entry = await this.meta.getForeignCacheEntry(digest);
    if (!entry || !this.fresh(entry)) return null;
    let body: Readable;
    try {
      body = await this.store.read(digest, range);
    } catch (error) {
      if (!(error instanceof BlobNotFoundError)) throw error;
      // Evicted between the index read and the open (another process): a miss.
      return null;
    }
    const at = this.now();
    if (at - entry.lastAccess >= this.touchIntervalMs || this.touchIntervalMs === 0) await this.meta.touchForeignCacheEntry(digest, at);
    return body;
  }

  /** A new session that receives bytes being fetched; they become the cached blob only through `commit`. */
  async begin(digest: string, size: number): Promise<CacheSession> {
    const id = randomUUID();
    await this.store.startUpload(id);
    return new CacheSession(this, this.store, id, digest, size);
  }

  /**
   * Makes the session's verified bytes the cached blob and indexes them.
   * False when another process holds the digest's lease (it is committing or
   * evicting the same blob); the session is then left to the caller.
   */
  async commit(session: CacheSession, pinned: boolean): Promise<boolean> {
    const key = LEASE_KEY(session.digest);
    if (!(await this.acquire(key))) return false;
    try {
      await this.store.commitUpload(session.id, session.digest);
      await this.meta.putForeignCacheEntry({ digest: session.digest, size: session.size, fetchedAt: this.now(), pinned });
    } finally {
      await this.meta.releaseLease(key, this.holder);
    }
    await this.evict();
    return true;
  }

  /** Drops expired and least recently used unpinned entries beyond the budget, across processes. */
  async evict(): Promise<void> {
    const victims = await this.meta.evictForeignCache(this.maxBytes, this.now() - this.ttlMs);
    for (const digest of victims) {
      const key = LEASE_KEY(digest);
      // Someone is committing this digest right now: its bytes are theirs, and they index them.
      if (!(await this.meta.acquireLease(key, this.holder, LEASE_MS))) continue;
      try {
        if ((await this.meta.getForeignCacheEntry(digest)) !== null) continue;
        await this.store.delete(digest);
        this.logger.debug({ digest }, "evicted foreign layer from the proxy cache");
      } finally {
        await this.meta.releaseLease(key, this.holder);
      }
    }
    await this.refresh();
  }

  private fresh(entry: ForeignCacheEntry): boolean {
    return entry.pinned || this.now() - entry.fetchedAt < this.ttlMs;
  }

  /** Waits briefly for a lease another process holds for a moment (commit or eviction of one blob). */
  private async acquire(key: string): Promise<boolean> {
    for (let attempt = 0; attempt < 20; attempt++) {
      if (await this.meta.acquireLease(key, this.holder, LEASE_MS)) return true;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return false;
  }
}

/**
 * Bytes on their way into the cache: an upload session in the cache's blob
 * store. `fill` streams a (verifying) source into it; afterwards the session
 * is committed into the cache, read once for a store-and-forward answer, or
 * aborted. Every path ends in `commit` or `abort`.
 */
export class CacheSession {
  private ended = false;

  constructor(
    private readonly cache: ProxyCache,
    private readonly store: BlobStore,
    readonly id: string,
    readonly digest: string,
    readonly size: number,
  ) {}

  /** Writes `source` (which must fail on wrong bytes) into the session; rejects with its error. */
  async fill(source: Readable): Promise<void> {
    await this.store.appendUpload(this.id, source, { offset: 0, exactBytes: this.size });
  }

  /**
   * A writable end for bytes that also go elsewhere (a client): write
   * chunks, then `end()` and await `done`.
   */
  open(): { sink: PassThrough; done: Promise<void> } {
    const sink = new PassThrough({ highWaterMark: 1024 * 1024 });
    const done = this.fill(sink);
    done.catch(() => sink.destroy());
    return { sink, done };
  }

  async commit(pinned: boolean): Promise<boolean> {
    const committed = await this.cache.commit(this, pinned);
    if (committed) this.ended = true;
    return committed;
  }

  /** The session's bytes (already verified), for a store-and-forward answer that is not cached. */
  read(): Promise<Readable> {
    return this.store.readUpload(this.id);
  }

  async abort(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.store.abortUpload(this.id).catch(() => undefined);
  }
}
