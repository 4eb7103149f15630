/**
 * Online garbage collection. The metadata store decides what is unreferenced
 * (in one transaction); bytes are deleted afterwards, each under its digest
 * lock (held across processes and replicas) and only if the blob is still
 * unlinked, so an upload that lands the same digest meanwhile keeps it. The
 * grace period protects blobs uploaded moments ago whose manifest has not
 * arrived yet.
 *
 * Then it reconciles storage with the metadata: bytes under a digest that no
 * record names (a crash between a commit's move and its link) are deleted
 * once older than the grace period, unless a session is committing to them.
 */
import type { RegistryDeps } from "./context.js";
import { LeaseLocks } from "./leases.js";

export interface GcReport {
  manifestsDeleted: number;
  linksDeleted: number;
  blobsDeleted: number;
  /** Bytes left behind by crashes (no metadata record), removed. */
  untrackedDeleted: number;
  /** True when another process was collecting already, so this run did nothing. */
  skipped: boolean;
}

const SWEEP_BATCH = 500;

/**
 * One collector at a time across processes and replicas (scheduled runs in
 * every worker, `ferry gc` beside a running server): a second one returns at
 * once with `skipped`. Concurrent runs would be safe, only wasted work.
 */
export async function collectGarbage(deps: RegistryDeps, options: { gracePeriodMs: number; untagged: boolean }): Promise<GcReport> {
  const report = await new LeaseLocks(deps.meta, { ttlMs: 60_000, waitMs: 0 }).tryRun("gc", () => collect(deps, options));
  return report ?? { manifestsDeleted: 0, linksDeleted: 0, blobsDeleted: 0, untrackedDeleted: 0, skipped: true };
}

async function collect(deps: RegistryDeps, options: { gracePeriodMs: number; untagged: boolean }): Promise<GcReport> {
  const olderThan = Date.now() - options.gracePeriodMs;
  const plan = await deps.meta.collectGarbage({ olderThan, untagged: options.untagged });
  let blobsDeleted = 0;
  for (const digest of plan.orphanBlobs) {
    await deps.digestLocks.run(digest, async () => {
      const forgotten = await deps.meta.forgetBlobs([digest]);
      if (forgotten.length === 0) return; // linked again meanwhile
      await deps.blobs.delete(digest);
      blobsDeleted++;
    });
  }
  const untrackedDeleted = await sweepUntracked(deps, olderThan);
  return { manifestsDeleted: plan.manifestsDeleted, linksDeleted: plan.linksDeleted, blobsDeleted, untrackedDeleted, skipped: false };
}

async function sweepUntracked(deps: RegistryDeps, olderThan: number): Promise<number> {
  let deleted = 0;
  let batch: string[] = [];
  const flush = async () => {
    const candidates = await deps.meta.untrackedBlobs(batch);
    batch = [];
    for (const digest of candidates) {
      await deps.digestLocks.run(digest, async () => {
        // Re-check under the lock: a commit may have linked it since.
        if ((await deps.meta.untrackedBlobs([digest])).length === 0) return;
        await deps.blobs.delete(digest);
        deps.logger.info({ digest }, "removed blob bytes that no metadata record names");
        deleted++;
      });
    }
  };
  for await (const blob of deps.blobs.listBlobs()) {
    if (blob.modifiedAt >= olderThan) continue;
    batch.push(blob.digest);
    if (batch.length >= SWEEP_BATCH) await flush();
  }
  if (batch.length > 0) await flush();
  return deleted;
}
