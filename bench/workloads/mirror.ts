// Pull-through mirror rows (docs/mirrors.md): a Ferry mirror whose upstream
// is the reference registry, pulling the largest pull fixture.
//
// These rows compare two setups, not Ferry against the reference, so their
// two columns mean:
//   cold: ferry column = first pull through a fresh mirror (fetched from the
//         upstream while streamed); reference column = the same pull directly
//         from the upstream (the reference). Target: >= 0.9x.
//   warm: ferry column = pulls through the mirror once it holds the blob;
//         reference column = the same pulls from Ferry's own storage (the
//         Ferry under test). Target: >= 0.9x.
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { onCleanup } from '../cleanup.js';
import { untilDeadline } from '../concurrency.js';
import type { FixturePlan } from '../fixtures.js';
import { RegistryHttp } from '../http.js';
import { pullBlob } from '../oci.js';
import { MiB, type Options } from '../options.js';
import { waitForRegistry } from '../ready.js';
import type { Registry } from '../registry.js';
import { freePort, spawnServer, type ServerProcess } from '../server-process.js';
import type { BenchCase } from './case.js';
import { STREAMING_QUIET_MS } from '../../src/memory/streaming-heap.js';
import { sizeLabel } from './pull.js';

/**
 * How long a cold pull's mirror CPU is still counted after its last byte:
 * the store's tail and the commit trail it, and the mirror's fetches go
 * quiet (src/memory/streaming-heap.ts). Also bench/mirror-cpu.ts.
 */
export const MIRROR_SETTLE_MS = STREAMING_QUIET_MS + 1500;

interface MirrorServer {
  http: RegistryHttp;
  server: ServerProcess;
  stop(): Promise<void>;
}

let counter = 0;

/** utime+stime of a process in ms (/proc, Linux): load-independent, unlike wall time on a shared machine. */
function processCpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10; // clock ticks of 10 ms
  } catch {
    return Number.NaN;
  }
}

function selfCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/** Starts a Ferry mirror (prefix m/) of `upstreamUrl` with fresh storage under `workspace`. */
async function startMirror(options: Options, workspace: string, upstreamUrl: string): Promise<MirrorServer> {
  const dir = path.join(workspace, `mirror-${++counter}`);
  await fs.mkdir(path.join(dir, 'data'), { recursive: true });
  const port = await freePort();
  const config = path.join(dir, 'ferry.yml');
  await fs.writeFile(config, ['log:', '  level: error', '  accessLog: false', 'mirrors:', '  - prefix: m/', `    upstream: ${upstreamUrl}`, ''].join('\n'));
  const server = spawnServer(process.execPath, [options.ferryCli, 'serve', '--config', config, '--listen', `127.0.0.1:${port}`, '--data', path.join(dir, 'data'), ...options.ferryArgs], path.join(dir, 'server.log'), dir);
  const baseUrl = `http://127.0.0.1:${port}`;
  const http = new RegistryHttp(baseUrl);
  const stop = async () => {
    await http.close();
    await server.stop();
    await fs.rm(dir, { recursive: true, force: true });
  };
  onCleanup(stop);
  await waitForRegistry('mirror', baseUrl, server);
  return { http, server, stop };
}

export function mirrorCases(options: Options, plan: FixturePlan, registries: () => readonly Registry[], workspace: () => string): BenchCase[] {
  const profile = options.profile;
  const size = Math.max(...profile.pullSizes);
  const blob = plan.pull.layers.find((l) => l.size === size);
  if (!blob) throw new Error(`no pull fixture of ${size} bytes`);
  const repo = plan.pull.repo;
  const need = (name: 'ferry' | 'reference'): Registry => {
    const reg = registries().find((r) => r.name === name);
    if (!reg) throw new Error('the mirror rows need both registries (the reference is the upstream; drop --only)');
    return reg;
  };
  const label = sizeLabel(size);
  const coldId = `mirror.cold.${label}.mibps`;
  const coldTitle = `mirror cold pull ${label} (ferry: via mirror; ref: from the upstream)`;
  // Informative, no target: CPU (ms) per cold pull, the budget the cold row's wall time is bound by (docs/mirrors.md "Speed").
  const cpuTotalId = 'mirror.cpu.cold.all.ms';
  const cpuTotalTitle = `mirror cold pull ${label} CPU, all processes (ferry: client+upstream+mirror; ref: client+upstream)`;
  const cpuMirrorId = 'mirror.cpu.cold.serving.ms';
  const cpuMirrorTitle = `mirror cold pull ${label} CPU, serving side (ferry: the mirror; ref: the upstream)`;
  const warmId = `mirror.warm.${label}.c1.mibps`;
  const warmTitle = `mirror warm pull ${label} (ferry: via mirror; ref: Ferry's own storage)`;
  let warm: MirrorServer | undefined;

  return [
    {
      group: 'mirror',
      title: coldTitle,
      metrics: [
        { id: coldId, label: coldTitle, unit: 'MiB/s', better: 'higher' },
        { id: cpuTotalId, label: cpuTotalTitle, unit: 'ms', better: 'lower' },
        { id: cpuMirrorId, label: cpuMirrorTitle, unit: 'ms', better: 'lower' },
      ],
      async run(reg) {
        const upstream = need('reference');
        if (reg.name === 'reference') {
          const u0 = processCpuMs(upstream.server.pid);
          const c0 = selfCpuMs();
          const started = process.hrtime.bigint();
          await pullBlob(upstream.http, repo, blob.digest, blob.size);
          const seconds = Number(process.hrtime.bigint() - started) / 1e9;
          const client = selfCpuMs() - c0;
          const served = processCpuMs(upstream.server.pid) - u0;
          return { [coldId]: size / MiB / seconds, [cpuTotalId]: client + served, [cpuMirrorId]: served };
        }
        // A fresh mirror every run: the pull is cold (nothing cached, nothing in its page cache).
        const mirror = await startMirror(options, workspace(), upstream.baseUrl);
        try {
          const m0 = processCpuMs(mirror.server.pid);
          const u0 = processCpuMs(upstream.server.pid);
          const c0 = selfCpuMs();
          const started = process.hrtime.bigint();
          await pullBlob(mirror.http, `m/${repo}`, blob.digest, blob.size);
          const seconds = Number(process.hrtime.bigint() - started) / 1e9;
          const client = selfCpuMs() - c0;
          // What trails the last byte sent is counted too (outside the timed part).
          await new Promise((resolve) => setTimeout(resolve, MIRROR_SETTLE_MS));
          const mirrored = processCpuMs(mirror.server.pid) - m0;
          const served = processCpuMs(upstream.server.pid) - u0;
          return { [coldId]: size / MiB / seconds, [cpuTotalId]: client + served + mirrored, [cpuMirrorId]: mirrored };
        } finally {
          await mirror.stop();
        }
      },
    },
    {
      group: 'mirror',
      title: warmTitle,
      metrics: [{ id: warmId, label: warmTitle, unit: 'MiB/s', better: 'higher' }],
      async warmup(reg) {
        if (reg.name === 'ferry') {
          warm ??= await startMirror(options, workspace(), need('reference').baseUrl);
          await pullBlob(warm.http, `m/${repo}`, blob.digest, blob.size);
          // The fetch is committed a moment after its last byte went out; wait until the mirror serves it from its store.
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
        await pullBlob(need('ferry').http, repo, blob.digest, blob.size);
      },
      async run(reg) {
        const http = reg.name === 'ferry' ? warm!.http : need('ferry').http;
        const path = reg.name === 'ferry' ? `m/${repo}` : repo;
        let bytes = 0;
        const seconds = await untilDeadline(profile.pullSeconds, 1, async () => {
          const n = await pullBlob(http, path, blob.digest, blob.size);
          bytes += n;
        });
        return { [warmId]: bytes / MiB / seconds };
      },
    },
  ];
}
