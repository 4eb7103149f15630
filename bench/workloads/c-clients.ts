// The request-rate rows measured with wrk (1 thread, 32 connections, an
// OCI+Docker Accept header) and 8-client blob pulls with 8 curl processes:
// the same questions as the autocannon and Node-client rows, asked by C
// clients that are not themselves the bottleneck.
import { OCI_MANIFEST } from '../content.js';
import type { FixturePlan } from '../fixtures.js';
import { MiB, type Profile } from '../options.js';
import type { Registry } from '../registry.js';
import type { BenchCase } from './case.js';
import { sizeLabel } from './pull.js';
import { curlRepeat, wrk } from './tools.js';
import { treeCpuSeconds } from '../cpu.js';

const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
/** What docker and containerd send: both manifest kinds. */
const ACCEPT = { accept: `${OCI_MANIFEST}, ${DOCKER_MANIFEST}` };
const WRK_CONNECTIONS = 32;
/**
 * wrk rows are measured at least this often per registry, alternating, with
 * a warm-up before the first (fast mode too): one cold 1 s sample gave the
 * same code 13x-29x on the manifest row (docs/benchmarks-history.md, "Speed round 4").
 */
const WRK_MIN_REPEATS = 3;
const WRK_WARMUP_SECONDS = 1;
const CURL_CLIENTS = 8;

interface Target {
  id: string;
  title: string;
  path: (plan: FixturePlan) => string;
}

export function wrkCases(profile: Profile, plan: FixturePlan, withTags: boolean): BenchCase[] {
  const targets: Target[] = [
    { id: 'wrk.base', title: 'wrk GET /v2/', path: () => '/v2/' },
    { id: 'wrk.manifest.tag', title: 'wrk manifest GET by tag', path: (p) => `/v2/${p.image.repo}/manifests/${p.image.tag}` },
  ];
  // The tag repository exists only when the list group loaded it.
  if (withTags) targets.push({ id: 'wrk.tags', title: `wrk tag list, ${plan.tags.count} tags`, path: (p) => `/v2/${p.tags.repo}/tags/list` });
  return targets.map((t) => {
    const title = `${t.title}, ${WRK_CONNECTIONS} conn`;
    const run = (reg: Registry, seconds: number) => wrk(`${reg.baseUrl}${t.path(plan)}`, ACCEPT, WRK_CONNECTIONS, seconds);
    return {
      group: 'wrk' as const,
      title,
      metrics: [
        { id: `${t.id}.rps`, label: title, unit: 'req/s', better: 'higher' as const },
        { id: `${t.id}.p50`, label: `  ${t.title} p50`, unit: 'ms', better: 'lower' as const },
        { id: `${t.id}.p99`, label: `  ${t.title} p99`, unit: 'ms', better: 'lower' as const },
        // Server CPU (all threads and processes) per request: the load-independent view of the same run.
        { id: `${t.id}.cpu`, label: `  ${t.title} server CPU/req`, unit: 'µs', better: 'lower' as const },
      ],
      minRepeats: WRK_MIN_REPEATS,
      warmup: async (reg: Registry) => void (await run(reg, Math.max(WRK_WARMUP_SECONDS, profile.manifestWarmupSeconds))),
      async run(reg: Registry) {
        const cpu0 = treeCpuSeconds(reg.server.pid);
        const r = await run(reg, Math.max(1, Math.round(profile.manifestSeconds)));
        const cpu = treeCpuSeconds(reg.server.pid) - cpu0;
        return { [`${t.id}.rps`]: r.requestsPerSecond, [`${t.id}.p50`]: r.p50, [`${t.id}.p99`]: r.p99, [`${t.id}.cpu`]: (cpu / r.requests) * 1e6 };
      },
    };
  });
}

/** 8 curl processes pull the same blob in a loop until the deadline; every byte count is checked. */
export function curlPullCases(profile: Profile, plan: FixturePlan): BenchCase[] {
  return profile.pullSizes.map((size) => {
    const blob = plan.pull.layers.find((l) => l.size === size);
    if (!blob) throw new Error(`no pull fixture of ${size} bytes`);
    const id = `curl.pull.${sizeLabel(size)}.c${CURL_CLIENTS}.mibps`;
    const title = `blob pull ${sizeLabel(size)}, ${CURL_CLIENTS} curl processes`;
    // Enough fetches per curl process that its start-up is noise next to the transfer.
    const perProcess = Math.max(1, Math.floor((16 * MiB) / size));
    return {
      group: 'pull' as const,
      title,
      metrics: [{ id, label: title, unit: 'MiB/s', better: 'higher' as const }],
      async run(reg: Registry) {
        const url = `${reg.baseUrl}/v2/${plan.pull.repo}/blobs/${blob.digest}`;
        const started = process.hrtime.bigint();
        const deadline = Date.now() + profile.pullSeconds * 1000;
        let bytes = 0;
        await Promise.all(
          Array.from({ length: CURL_CLIENTS }, async () => {
            do {
              const sizes = await curlRepeat(url, perProcess, 300_000);
              for (const n of sizes) if (n !== size) throw new Error(`curl pull ${url}: ${n} bytes, expected ${size}`);
              bytes += sizes.length * size;
            } while (Date.now() < deadline);
          }),
        );
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        return { [id]: bytes / MiB / seconds };
      },
    };
  });
}
