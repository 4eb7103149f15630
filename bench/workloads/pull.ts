// Blob pull throughput: C clients stream the same blob in a loop for a fixed
// time, discarding the bytes but checking the count.
import type { FixturePlan } from '../fixtures.js';
import { untilDeadline } from '../concurrency.js';
import { MiB, type Profile } from '../options.js';
import { pullBlob } from '../oci.js';
import type { BenchCase } from './case.js';

export function sizeLabel(bytes: number): string {
  return bytes >= MiB ? `${bytes / MiB}MiB` : `${bytes / 1024}KiB`;
}

export function pullCases(profile: Profile, plan: FixturePlan): BenchCase[] {
  const out: BenchCase[] = [];
  for (const size of profile.pullSizes) {
    const blob = plan.pull.layers.find((l) => l.size === size);
    if (!blob) throw new Error(`no pull fixture of ${size} bytes`);
    for (const conc of profile.pullConcurrency) {
      const id = `pull.${sizeLabel(size)}.c${conc}.mibps`;
      const title = `blob pull ${sizeLabel(size)}, ${conc} client${conc > 1 ? 's' : ''}`;
      out.push({
        group: 'pull',
        title,
        metrics: [{ id, label: title, unit: 'MiB/s', better: 'higher' }],
        // One untimed pull warms the page cache for the blob file on both sides.
        async warmup(reg) {
          await pullBlob(reg.http, plan.pull.repo, blob.digest, blob.size);
        },
        async run(reg) {
          let bytes = 0;
          const seconds = await untilDeadline(profile.pullSeconds, conc, async () => {
            // Not `bytes += await ...`: that reads `bytes` before awaiting and
            // loses the other clients' increments.
            const n = await pullBlob(reg.http, plan.pull.repo, blob.digest, blob.size);
            bytes += n;
          });
          return { [id]: bytes / MiB / seconds };
        },
      });
    }
  }
  return out;
}
