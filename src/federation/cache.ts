/**
 * The proxy cache (FEDERATION.md §4.5): verified foreign blobs kept on disk
 * under <data>/federation-cache/<algorithm>/<hex>, apart from the blob store
 * so that evicting a cached foreign layer can never delete a blob someone
 * pushed. Entries expire `ttlMs` after they were fetched; beyond `maxBytes`
 * the least recently used go first. Files appear by rename only after the
 * digest was verified, so a half-written blob is never served. Several
 * worker processes may share the directory; each keeps its own index.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { ByteRange } from "../storage/blob-store.js";

interface Entry {
  size: number;
  fetchedAt: number;
  lastAccess: number;
}

export interface CacheWriter {
  file: WriteStream;
  /** Makes the verified bytes visible under the digest. */
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export interface CacheStats {
  entries: number;
  bytes: number;
  maxBytes: number;
}

export class ProxyCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(
    private readonly root: string,
    private readonly ttlMs: number,
    readonly maxBytes: number,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  async init(): Promise<void> {
    await rm(join(this.root, "tmp"), { recursive: true, force: true });
    await mkdir(join(this.root, "tmp"), { recursive: true });
    for (const algorithm of await readdir(this.root)) {
      if (algorithm === "tmp") continue;
      for (const hex of await readdir(join(this.root, algorithm)).catch(() => [] as string[])) {
        const info = await stat(join(this.root, algorithm, hex)).catch(() => null);
        if (!info?.isFile()) continue;
        const fetchedAt = info.mtimeMs;
        this.entries.set(`${algorithm}:${hex}`, { size: info.size, fetchedAt, lastAccess: info.atimeMs });
        this.bytes += info.size;
      }
    }
    await this.evict();
  }

  has(digest: string): boolean {
    const entry = this.entries.get(digest);
    return entry !== undefined && this.now() - entry.fetchedAt < this.ttlMs;
  }

  /** Opens a fresh cached blob (or a range of it); null on a miss or an expired entry. */
  async open(digest: string, range?: ByteRange): Promise<Readable | null> {
    const entry = this.entries.get(digest);
    if (!entry) return null;
    if (this.now() - entry.fetchedAt >= this.ttlMs) {
      await this.remove(digest);
      return null;
    }
    // Open the descriptor first: an eviction after this point cannot pull the file away.
    const handle = await open(this.pathOf(digest), "r").catch(() => null);
    if (!handle) {
      this.forget(digest);
      return null;
    }
    entry.lastAccess = this.now();
    // Large reads, as the filesystem blob store does: fewer syscalls and chunks per response.
    return handle.createReadStream({ start: range?.start, end: range?.end, highWaterMark: 1024 * 1024 });
  }

  /** Starts writing a blob that will become visible on commit (null when it can never fit). */
  async beginWrite(digest: string, size: number): Promise<CacheWriter | null> {
    if (size > this.maxBytes) return null;
    const temp = join(this.root, "tmp", randomUUID());
    const file = createWriteStream(temp, { flags: "wx" });
    const finalPath = this.pathOf(digest);
    return {
      file,
      commit: async () => {
        await mkdir(join(this.root, digest.split(":")[0]!), { recursive: true });
        await rename(temp, finalPath);
        const at = this.now();
        // Re-fetched after expiry: the file's mtime is what init() reads back after a restart.
        await utimes(finalPath, at / 1000, at / 1000).catch(() => undefined);
        const previous = this.entries.get(digest);
        if (previous) this.bytes -= previous.size;
        this.entries.set(digest, { size, fetchedAt: at, lastAccess: at });
        this.bytes += size;
        await this.evict();
      },
      abort: async () => {
        file.destroy();
        await rm(temp, { force: true });
      },
    };
  }

  stats(): CacheStats {
    return { entries: this.entries.size, bytes: this.bytes, maxBytes: this.maxBytes };
  }

  private async evict(): Promise<void> {
    if (this.bytes <= this.maxBytes) return;
    const byAge = [...this.entries.entries()].sort((a, b) => a[1].lastAccess - b[1].lastAccess);
    for (const [digest] of byAge) {
      if (this.bytes <= this.maxBytes) break;
      await this.remove(digest);
      this.logger.debug({ digest }, "evicted foreign layer from the proxy cache");
    }
  }

  private async remove(digest: string): Promise<void> {
    this.forget(digest);
    await rm(this.pathOf(digest), { force: true });
  }

  private forget(digest: string): void {
    const entry = this.entries.get(digest);
    if (!entry) return;
    this.entries.delete(digest);
    this.bytes -= entry.size;
  }

  private pathOf(digest: string): string {
    const [algorithm, hex] = digest.split(":", 2) as [string, string];
    return join(this.root, algorithm, hex);
  }
}
