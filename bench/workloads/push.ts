// Blob push throughput, monolithic and chunked, with fresh content per push.
import { spawnSync } from 'node:child_process';
import { UniqueBlobFactory } from '../content.js';
import type { FixturePlan } from '../fixtures.js';
import { forEachIndex } from '../concurrency.js';
import { MiB, type Profile } from '../options.js';
import { pushChunked, pushMonolithic } from '../oci.js';
import type { BenchCase } from './case.js';
import { sizeLabel } from './pull.js';

export type PushMode = 'mono' | 'chunked';

/** Enough pushes to move pushBytesPerRun, at least one per client, a whole number per client. */
export function pushesPerRun(profile: Profile, size: number, conc: number): number {
  const wanted = Math.max(conc, Math.ceil(profile.pushBytesPerRun / size));
  return Math.ceil(wanted / conc) * conc;
}

export function pushCases(profile: Profile, plan: FixturePlan): BenchCase[] {
  const factories = new Map<number, UniqueBlobFactory>();
  const factory = (size: number): UniqueBlobFactory => {
    let f = factories.get(size);
    if (!f) factories.set(size, (f = new UniqueBlobFactory(size)));
    return f;
  };

  const out: BenchCase[] = [];
  for (const mode of ['mono', 'chunked'] as const) {
    for (const size of profile.pushSizes) {
      for (const conc of profile.pushConcurrency) {
        const count = pushesPerRun(profile, size, conc);
        const id = `push.${mode}.${sizeLabel(size)}.c${conc}.mibps`;
        const how = mode === 'mono' ? 'monolithic' : `chunked ${sizeLabel(Math.min(profile.chunkSize, size))}`;
        const title = `push ${how} ${sizeLabel(size)}, ${conc} client${conc > 1 ? 's' : ''}`;
        out.push({
          group: 'push',
          title,
          metrics: [{ id, label: title, unit: 'MiB/s', better: 'higher' }],
          async run(reg) {
            // Untimed: fresh content and digests, then flush dirty pages left by
            // the previous run (possibly the other registry's) so its writeback
            // does not land inside this measurement.
            const blobs = factory(size).many(count);
            spawnSync('sync');
            const start = performance.now();
            await forEachIndex(count, conc, async (i) => {
              if (mode === 'mono') await pushMonolithic(reg.http, plan.pushRepo, blobs[i]);
              else await pushChunked(reg.http, plan.pushRepo, blobs[i], profile.chunkSize);
            });
            const seconds = (performance.now() - start) / 1000;
            return { [id]: (count * size) / MiB / seconds };
          },
        });
      }
    }
  }
  return out;
}
