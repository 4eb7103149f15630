/**
 * Online garbage collection. The metadata store decides what is unreferenced
 * (in one transaction); bytes are deleted afterwards, each under its digest
 * lock and only if the blob is still unlinked, so an upload that lands the
 * same digest meanwhile keeps it. The grace period protects blobs uploaded
 * moments ago whose manifest has not arrived yet.
 */
import type { RegistryDeps } from "./context.js";

export interface GcReport {
  manifestsDeleted: number;
  linksDeleted: number;
  blobsDeleted: number;
}

export async function collectGarbage(deps: RegistryDeps, options: { gracePeriodMs: number; untagged: boolean }): Promise<GcReport> {
  const plan = await deps.meta.collectGarbage({ olderThan: Date.now() - options.gracePeriodMs, untagged: options.untagged });
  let blobsDeleted = 0;
  for (const digest of plan.orphanBlobs) {
    await deps.digestLocks.run(digest, async () => {
      const forgotten = await deps.meta.forgetBlobs([digest]);
      if (forgotten.length === 0) return; // linked again meanwhile
      await deps.blobs.delete(digest);
      blobsDeleted++;
    });
  }
  return { manifestsDeleted: plan.manifestsDeleted, linksDeleted: plan.linksDeleted, blobsDeleted };
}
