// Mixed traffic for a fixed time: 75% pulls (manifest GETs and 1 MiB blob
// GETs, half each) and 25% pushes of small fresh blobs, from concurrent
// clients, while the server's memory is watched.
import { UniqueBlobFactory, type BlobData } from '../content.js';
import type { FixturePlan } from '../fixtures.js';
import { untilDeadline } from '../concurrency.js';
import { MiB, type Profile } from '../options.js';
import { getManifest, pullBlob, pushMonolithic } from '../oci.js';
import { LatencyRecorder } from '../stats.js';
import type { BenchCase } from './case.js';

type Op = 'manifest' | 'blob' | 'push';
/** 8-step cycle: 3 manifest GETs, 3 blob GETs, 2 pushes = 75% / 25%. */
const CYCLE: readonly Op[] = ['manifest', 'blob', 'manifest', 'push', 'blob', 'manifest', 'blob', 'push'];

/**
 * Upper bound on pushes per second we expect, for sizing the pool of
 * precomputed blobs. Running out is harmless (digests are then computed
 * inline and the report says so) but slightly taxes the load generator.
 */
const MAX_PUSHES_PER_SECOND = 2500;

export function mixCase(profile: Profile, plan: FixturePlan): BenchCase {
  const blob = plan.pull.layers.find((l) => l.size === 1 * MiB);
  if (!blob) throw new Error('mix needs the 1 MiB pull fixture');
  const factory = new UniqueBlobFactory(profile.mixPushSize);
  const { repo: imageRepo, tag } = plan.image;
  const pushKiB = profile.mixPushSize / 1024;
  const title = `mix 75% pull / 25% push (${pushKiB} KiB), ${profile.mixConcurrency} clients`;

  return {
    group: 'mix',
    title,
    metrics: [
      { id: 'mix.ops', label: title, unit: 'ops/s', better: 'higher' },
      { id: 'mix.manifest.p99', label: '  mix manifest GET p99', unit: 'ms', better: 'lower' },
      { id: 'mix.blob.p99', label: '  mix 1MiB blob GET p99', unit: 'ms', better: 'lower' },
      { id: 'mix.push.p99', label: `  mix ${pushKiB}KiB push p99`, unit: 'ms', better: 'lower' },
      { id: 'rss.mix.peak', label: 'peak RSS during mix', unit: 'MiB', better: 'lower' },
    ],
    async run(reg, ctx) {
      const pool: BlobData[] = factory.many(Math.ceil(profile.mixSeconds * MAX_PUSHES_PER_SECOND));
      let inline = 0;
      const lat: Record<Op, LatencyRecorder> = {
        manifest: new LatencyRecorder(),
        blob: new LatencyRecorder(),
        push: new LatencyRecorder(),
      };
      let ops = 0;
      const memWindow = reg.memory.window();
      const seconds = await untilDeadline(profile.mixSeconds, profile.mixConcurrency, async (worker, i) => {
        // Offset by worker so the clients are not all in the same phase of the cycle.
        const op = CYCLE[(worker + i) % CYCLE.length];
        let fresh: BlobData | undefined;
        if (op === 'push') {
          fresh = pool.pop();
          if (!fresh) {
            inline++;
            fresh = factory.next();
          }
        }
        const t0 = performance.now();
        if (op === 'manifest') await getManifest(reg.http, imageRepo, tag);
        else if (op === 'blob') await pullBlob(reg.http, plan.pull.repo, blob.digest, blob.size);
        else if (fresh) await pushMonolithic(reg.http, plan.mixRepo, fresh);
        lat[op].record(performance.now() - t0);
        ops++;
      });
      const peak = memWindow.end();
      if (inline > 0) ctx.note(`mix on ${reg.name}: ${inline} push digests computed inside the timed region (pool exhausted)`);
      const p99 = (op: Op): number => lat[op].percentiles(0.99)[0];
      return {
        'mix.ops': ops / seconds,
        'mix.manifest.p99': p99('manifest'),
        'mix.blob.p99': p99('blob'),
        'mix.push.p99': p99('push'),
        'rss.mix.peak': peak / MiB,
      };
    },
  };
}
