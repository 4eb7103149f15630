/**
 * Scheduled sync (config `sync`): every `interval`, the tags of a mirrored
 * repository that match the patterns are revalidated against the upstream
 * and everything they need is stored: manifests byte for byte (never
 * re-serialised), every child of an index, every blob (streamed from the
 * upstream into the store through the mirror's single-flight fetch, so a sync
 * and a client's pull of one blob share one fetch). Foreign layers stay
 * foreign. Each run is recorded (GET /ferry/v1/mirrors, the log).
 *
 * With several worker processes, one runs each sync at a time (a lease in the
 * metadata store); the others skip that round.
 */
import type { Logger } from "pino";
import { parseManifest } from "../oci/manifest.js";
import { isManifestMediaType } from "../oci/media-types.js";
import { parseManifestReference } from "../oci/reference.js";
import type { MetaStore } from "../metadata/meta-store.js";
import { LeaseLocks } from "../registry/leases.js";
import type { SyncConfig } from "./config.js";
import type { Mirror } from "./mirror.js";
import type { MirrorService } from "./service.js";

export interface SyncRun {
  startedAt: number;
  finishedAt: number;
  tagsMatched: number;
  /** Tags whose manifest changed (or was new) and was stored. */
  tagsUpdated: string[];
  manifestsFetched: number;
  blobsFetched: number;
  bytesFetched: number;
  /** What failed, per tag (the run goes on with the next tag). */
  errors: Array<{ tag: string; error: string }>;
}

export interface SyncStatus {
  from: string;
  tags: string[];
  intervalSeconds: number;
  running: boolean;
  lastRun: SyncRun | null;
  /** When the next run is due (epoch ms). */
  nextRunAt: number | null;
}

/** At most this many tags per run: a mirrored repository with a million tags must not hold a sync for ever. */
const MAX_TAGS_PER_RUN = 1000;

export class SyncJob {
  private running = false;
  private lastRun: SyncRun | null = null;
  private nextRunAt: number | null = null;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly config: SyncConfig,
    private readonly mirror: Mirror,
    private readonly service: MirrorService,
    private readonly leases: LeaseLocks,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const schedule = (delay: number) => {
      this.nextRunAt = Date.now() + delay;
      this.timer = setTimeout(() => {
        this.runOnce()
          .catch((error: unknown) => this.logger.error({ err: error, from: this.config.from }, "mirror sync failed"))
          .finally(() => schedule(this.config.interval));
      }, delay);
      this.timer.unref();
    };
    // The first run soon after start-up, not an interval later.
    schedule(Math.min(this.config.interval, 5_000));
  }

  stop(): void {
    clearTimeout(this.timer);
    this.nextRunAt = null;
  }

  status(): SyncStatus {
    return {
      from: this.config.from,
      tags: this.config.tags,
      intervalSeconds: this.config.interval / 1000,
      running: this.running,
      lastRun: this.lastRun,
      nextRunAt: this.nextRunAt,
    };
  }

  /** One run now (also what the schedule calls); undefined when another process or run holds this sync. */
  async runOnce(): Promise<SyncRun | undefined> {
    if (this.running) return undefined;
    this.running = true;
    try {
      return await this.leases.tryRun(`mirror-sync:${this.config.from}`, () => this.sync());
    } finally {
      this.running = false;
    }
  }

  private async sync(): Promise<SyncRun> {
    const { from } = this.config;
    const run: SyncRun = { startedAt: Date.now(), finishedAt: 0, tagsMatched: 0, tagsUpdated: [], manifestsFetched: 0, blobsFetched: 0, bytesFetched: 0, errors: [] };
    const patterns = this.config.tags.map(globToRegExp);
    let tags: string[] = [];
    try {
      tags = (await this.mirror.upstream.client.listTags(this.mirror.upstreamName(from))).filter((tag) => patterns.some((p) => p.test(tag))).sort();
    } catch (error) {
      run.errors.push({ tag: "*", error: error instanceof Error ? error.message : String(error) });
    }
    run.tagsMatched = tags.length;
    for (const tag of tags.slice(0, MAX_TAGS_PER_RUN)) {
      try {
        const outcome = await this.service.ensureManifest(this.mirror, from, { kind: "tag", tag }, { revalidate: true });
        if (outcome.kind === "stale") throw new Error(outcome.warning);
        if (outcome.kind === "fetched") {
          run.tagsUpdated.push(tag);
          run.manifestsFetched++;
        }
        await this.complete(from, outcome.digest, run, 0);
      } catch (error) {
        run.errors.push({ tag, error: error instanceof Error ? error.message : String(error) });
      }
    }
    run.finishedAt = Date.now();
    this.lastRun = run;
    const line = { from, tagsMatched: run.tagsMatched, tagsUpdated: run.tagsUpdated, blobsFetched: run.blobsFetched, bytesFetched: run.bytesFetched, errors: run.errors.length };
    if (run.errors.length > 0) this.logger.warn({ ...line, firstError: run.errors[0] }, "mirror sync finished with errors");
    else this.logger.info(line, "mirror sync finished");
    return run;
  }

  /** Stores what a stored manifest references: children of an index (recursively), blobs of an image. */
  private async complete(name: string, digest: string, run: SyncRun, depth: number): Promise<void> {
    const record = await this.service.manifestRecord(name, digest);
    if (!record || depth > 4) return;
    const manifest = parseManifest(record.content, record.mediaType);
    for (const child of manifest.manifests) {
      if (isManifestMediaType(child.mediaType)) {
        const outcome = await this.service.ensureManifest(this.mirror, name, parseManifestReference(child.digest));
        if (outcome.kind === "fetched") run.manifestsFetched++;
        await this.complete(name, child.digest, run, depth + 1);
      }
    }
    const blobs = [...(manifest.config ? [manifest.config] : []), ...manifest.layers];
    for (const blob of blobs) {
      // Foreign layers stay where their urls say; federation answers them.
      if (blob.urls && blob.urls.length > 0) continue;
      const bytes = await this.service.ensureBlob(this.mirror, name, blob.digest);
      if (bytes > 0) {
        run.blobsFetched++;
        run.bytesFetched += bytes;
      }
    }
  }
}

/** `*` any run of characters, `?` one; everything else literal; the whole tag must match. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

export function startSyncJobs(configs: readonly SyncConfig[], service: MirrorService, meta: MetaStore, logger: Logger): SyncJob[] {
  const leases = new LeaseLocks(meta, { ttlMs: 60_000, waitMs: 0 });
  const jobs: SyncJob[] = [];
  for (const config of configs) {
    const mirror = service.set.match(config.from);
    if (!mirror) throw new Error(`sync from ${config.from}: the repository is under no mirror's prefix (mirrors[].prefix)`);
    const job = new SyncJob(config, mirror, service, leases, logger);
    job.start();
    jobs.push(job);
  }
  return jobs;
}
