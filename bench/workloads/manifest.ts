// Warm manifest GET and HEAD, by tag and by digest, at N connections (autocannon).
import { OCI_MANIFEST } from '../content.js';
import type { FixturePlan } from '../fixtures.js';
import type { Profile } from '../options.js';
import type { Registry } from '../registry.js';
import { hammer } from './autocannon-run.js';
import type { BenchCase } from './case.js';

export function manifestCases(profile: Profile, plan: FixturePlan): BenchCase[] {
  const { repo, tag, digest } = plan.image;
  const out: BenchCase[] = [];
  for (const method of ['GET', 'HEAD'] as const) {
    for (const by of ['tag', 'digest'] as const) {
      const ref = by === 'tag' ? tag : digest;
      const id = `manifest.${method.toLowerCase()}.${by}`;
      const title = `manifest ${method} by ${by}, ${profile.manifestConnections} conn`;
      const run = (reg: Registry, seconds: number) =>
        hammer({
          url: `${reg.baseUrl}/v2/${repo}/manifests/${ref}`,
          method,
          // Without an OCI Accept header distribution 2.8 answers 404 for OCI manifests.
          headers: { accept: OCI_MANIFEST },
          connections: profile.manifestConnections,
          seconds,
        });
      out.push({
        group: 'manifest',
        title,
        metrics: [
          { id: `${id}.rps`, label: title, unit: 'req/s', better: 'higher' },
          { id: `${id}.p50`, label: `  ${method} by ${by} p50`, unit: 'ms', better: 'lower' },
          { id: `${id}.p99`, label: `  ${method} by ${by} p99`, unit: 'ms', better: 'lower' },
        ],
        warmup:
          profile.manifestWarmupSeconds > 0
            ? async (reg) => {
                await run(reg, profile.manifestWarmupSeconds);
              }
            : undefined,
        async run(reg) {
          const r = await run(reg, profile.manifestSeconds);
          return { [`${id}.rps`]: r.requestsPerSecond, [`${id}.p50`]: r.p50, [`${id}.p99`]: r.p99 };
        },
      });
    }
  }
  return out;
}
