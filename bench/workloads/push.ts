// Blob push throughput, monolithic and chunked, with fresh content per push.
//
// Ferry answers a push once the blob is on disk (fsync, the default); the
// reference answers once it is in the page cache, and the kernel writes it
// out later (the untimed `sync` before each run). So the 100 MiB rows are
// also measured "until on disk", with that `sync` inside the timed region,
// and the run notes what the disk takes at most when writes must be durable:
// no registry that fsyncs can push faster (docs/benchmarks-history.md, "Speed round 10").
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
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
  let ceilingNoted = false;
  for (const mode of ['mono', 'chunked'] as const) {
    for (const size of profile.pushSizes) {
      for (const conc of profile.pushConcurrency) {
        for (const untilOnDisk of mode === 'mono' && size >= 100 * MiB ? [false, true] : [false]) {
          const count = pushesPerRun(profile, size, conc);
          const id = `push.${mode}.${sizeLabel(size)}.c${conc}${untilOnDisk ? '.durable' : ''}.mibps`;
          const how = mode === 'mono' ? 'monolithic' : `chunked ${sizeLabel(Math.min(profile.chunkSize, size))}`;
          const title = `push ${how} ${sizeLabel(size)}, ${conc} client${conc > 1 ? 's' : ''}${untilOnDisk ? ', until on disk' : ''}`;
          out.push({
            group: 'push',
            title,
            metrics: [{ id, label: title, unit: 'MiB/s', better: 'higher' }],
            async run(reg, ctx) {
              if (untilOnDisk && !ceilingNoted) {
                ceilingNoted = true;
                const dir = dirname(reg.dataDir);
                ctx.note(
                  `this disk takes durable writes (dd oflag=direct conv=fdatasync, 100 MiB per writer) at ${durableWriteMiBps(dir, 1).toFixed(0)} MiB/s with 1 writer, ` +
                    `${durableWriteMiBps(dir, 8).toFixed(0)} MiB/s with 8: the most any push that is on disk when answered can reach`,
                );
              }
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
              // What the registry left in the page cache goes to disk inside the measurement.
              if (untilOnDisk) spawnSync('sync');
              const seconds = (performance.now() - start) / 1000;
              return { [id]: (count * size) / MiB / seconds };
            },
          });
        }
      }
    }
  }
  return out;
}

/**
 * `writers` concurrent dd processes each writing 100 MiB of random bytes with
 * O_DIRECT and one fdatasync at the end, into `dir`: their total MiB/s.
 */
export function durableWriteMiBps(dir: string, writers: number): number {
  const work = mkdtempSync(join(dir, 'disk-ceiling-'));
  try {
    const source = join(work, 'source');
    writeFileSync(source, randomBytes(100 * MiB));
    spawnSync('sync');
    const script = `for i in $(seq ${writers}); do dd if=source of=out$i bs=1M oflag=direct conv=fdatasync status=none & done; wait`;
    const start = performance.now();
    const result = spawnSync('sh', ['-c', script], { cwd: work });
    const seconds = (performance.now() - start) / 1000;
    if (result.status !== 0) throw new Error(`dd failed: ${result.stderr.toString().trim()}`);
    return (writers * 100) / seconds;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
