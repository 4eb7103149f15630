/**
 * Scheduled sync (config `sync`): every `interval`, the tags of a mirrored
 * repository that match the patterns are copied from the upstream with the
 * client library's streaming copy (src/client/copy.ts) into this registry's
 * store (MirrorDestination): manifests byte for byte (never re-serialised),
 * every child of an index, every blob not held yet (streamed from the
 * upstream through a digest check into the store). Foreign layers stay
 * foreign. Each run is recorded (GET /ferry/v1/mirrors, the log).
 *
 * With several worker processes, one runs each sync at a time (a lease in the
 * metadata store); the others skip that round.
 */
import type { Logger } from "pino";
import { copyImage } from "../client/copy.js";
import { RegistrySource } from "../client/registry-image.js";
import { MirrorDestination } from "./destination.js";
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
    const run: SyncRun = { startedAt: Date.now(), finishedAt: 0, tagsMatched: 0, tagsUpdated: [], blobsFetched: 0, bytesFetched: 0, errors: [] };
    const patterns = this.config.tags.map(globToRegExp);
    const upstreamName = this.mirror.upstreamName(from);
    const client = this.mirror.upstream.client;
    let tags: string[] = [];
    try {
      tags = (await client.listTags(upstreamName)).filter((tag) => patterns.some((p) => p.test(tag))).sort();
      this.mirror.upstream.health.success();
    } catch (error) {
      this.mirror.upstream.health.failure(error instanceof Error ? error.message : String(error));
      run.errors.push({ tag: "*", error: error instanceof Error ? error.message : String(error) });
    }
    run.tagsMatched = tags.length;
    const { meta, manifests } = this.service.store;
    for (const tag of tags.slice(0, MAX_TAGS_PER_RUN)) {
      try {
        const before = (await meta.getTaggedManifest(from, tag))?.digest ?? null;
        // The client library's streaming copy: blobs stream upstream -> digest check -> store, manifests go byte for byte.
        const destination = new MirrorDestination(from, tag, meta, manifests, (repository, digest, size, stream) => this.service.storeBlob(repository, digest, size, stream));
        const source = new RegistrySource(client, { registry: client.registry, repository: upstreamName, tag });
        const result = await copyImage(source, destination, { jobs: 2 });
        this.mirror.markFresh(from, tag);
        this.mirror.upstream.health.success();
        if (before !== result.digest) run.tagsUpdated.push(tag);
        run.blobsFetched += result.blobs.copied;
        run.bytesFetched += destination.bytesStored;
        this.mirror.counters.bytesFetched += destination.bytesStored;
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
