// CPU budget of a mirror cold pull (docs/mirrors.md "Speed"): per pull of
// one blob, the CPU (utime+stime from /proc, load-independent) of
//   C: the client (this process, undici like the bench's pulls),
//   U: the upstream (CNCF distribution 2.8 on the filesystem),
//   M: a fresh Ferry mirror (`ferry serve`), split by thread,
// for a direct pull from the upstream and for a cold pull through the mirror,
// alternated round by round so drifts of the shared machine hit both alike.
// With --warm, one mirror process serves every round, each a cold pull of a
// blob it has not seen, after one untimed cold pull: what a mirror that has
// been running pays, without the first pull's compilation of the code path.
//   node dist/bench/mirror-cpu.js [--rounds N] [--mib N] [--warm] [--ferry-cli PATH]
//        [--node-args "--cpu-prof --cpu-prof-dir=/tmp/prof"] [--keep]
// Wall times are printed too, but on a shared 2-core machine only the CPU
// columns repeat.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RegistryHttp } from './http.js';
import { pullBlob } from './oci.js';
import { waitForRegistry } from './ready.js';
import { freePort, spawnServer } from './server-process.js';
import { startReference } from './servers/reference.js';
import { launcherNodeFlags } from './servers/launcher-flags.js';
import { runCleanup } from './cleanup.js';
import { MIRROR_SETTLE_MS } from './workloads/mirror.js';

const TICK_MS = 1000 / 100; // USER_HZ

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : fallback;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const rounds = Number(arg('rounds', '3'));
const mib = Number(arg('mib', '100'));
const ferryCli = path.resolve(arg('ferry-cli', path.join(repoRoot, 'dist/src/cli/main.js')));
const nodeArgs = arg('node-args', '').split(/\s+/).filter(Boolean);
const keep = process.argv.includes('--keep');
const warm = process.argv.includes('--warm');

/** utime+stime in ms of a process, or of each of its threads by name. */
function processCpu(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      const key = tid === String(pid) ? 'main' : name;
      out.set(key, (out.get(key) ?? 0) + (Number(fields[11]) + Number(fields[12])) * TICK_MS);
    } catch {
      // the thread ended
    }
  }
  return out;
}

function selfCpu(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (xs: number[]) => `median ${median(xs).toFixed(0)} ms  (${xs.map((x) => x.toFixed(0)).join(', ')})`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'mirror-cpu-'));
try {
  const upstream = await startReference('/usr/bin/docker-registry', path.join(work, 'upstream'));
  const upstreamHttp = new RegistryHttp(upstream.baseUrl);
  const size = mib * 1024 * 1024;
  /** A blob of fresh bytes pushed to the upstream: its digest. */
  const pushFresh = async (): Promise<string> => {
    const blob = randomBytes(size);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const started = await upstreamHttp.send('POST', '/v2/bench/blobs/uploads/');
    await started.body.dump();
    const location = new URL(String(started.headers['location']), upstream.baseUrl);
    location.searchParams.set('digest', digest);
    const put = await upstreamHttp.send('PUT', location.toString(), { 'content-type': 'application/octet-stream' }, [blob]);
    await put.body.dump();
    if (put.status !== 201) throw new Error(`push to the upstream: HTTP ${put.status}`);
    return digest;
  };
  const digest = await pushFresh();

  /** A `ferry serve` mirror of the upstream, ready and settled. */
  const startMirror = async (name: string) => {
    const dir = path.join(work, name);
    await fs.mkdir(path.join(dir, 'data'), { recursive: true });
    const port = await freePort();
    await fs.writeFile(path.join(dir, 'ferry.yml'), ['log:', '  level: error', '  accessLog: false', 'mirrors:', '  - prefix: m/', `    upstream: ${upstream.baseUrl}`, ''].join('\n'));
    const server = spawnServer(
      process.execPath,
      [...launcherNodeFlags(ferryCli), ...nodeArgs, ferryCli, 'serve', '--config', path.join(dir, 'ferry.yml'), '--listen', `127.0.0.1:${port}`, '--data', path.join(dir, 'data')],
      path.join(dir, 'server.log'),
      dir,
    );
    const http = new RegistryHttp(`http://127.0.0.1:${port}`);
    const stop = async () => {
      await http.close();
      await server.stop();
    };
    try {
      await waitForRegistry('mirror', `http://127.0.0.1:${port}`, server);
    } catch (error) {
      await stop();
      throw error;
    }
    await sleep(300);
    return { server, http, stop };
  };
  const kept = warm ? await startMirror('mirror-warm') : null;
  if (kept) {
    await pullBlob(kept.http, 'm/bench', await pushFresh(), size);
    await sleep(MIRROR_SETTLE_MS);
  }

  const direct = { wall: [] as number[], client: [] as number[], upstream: [] as number[] };
  const cold = { wall: [] as number[], client: [] as number[], upstream: [] as number[], mirror: [] as number[], start: [] as number[], firstByte: [] as number[] };
  const threads = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    // Direct: the bench's reference column.
    {
      const u0 = processCpu(upstream.server.pid);
      const c0 = selfCpu();
      const t0 = performance.now();
      await pullBlob(upstreamHttp, 'bench', digest, size);
      direct.wall.push(performance.now() - t0);
      direct.client.push(selfCpu() - c0);
      await sleep(200);
      direct.upstream.push(processCpu(upstream.server.pid) - u0);
    }
    // Cold: the bench's ferry column (a fresh mirror), or a blob new to the kept one (--warm).
    {
      const wanted = kept ? await pushFresh() : digest;
      const mirror = kept ?? (await startMirror(`mirror-${round}`));
      const { server, http } = mirror;
      try {
        const m0 = processCpu(server.pid);
        const th0 = threadCpu(server.pid);
        const u0 = processCpu(upstream.server.pid);
        const c0 = selfCpu();
        const t0 = performance.now();
        const res = await http.send('GET', `/v2/m/bench/blobs/${wanted}`);
        cold.firstByte.push(performance.now() - t0);
        let n = 0;
        for await (const chunk of res.body) n += (chunk as Buffer).length;
        if (n !== size) throw new Error(`mirror pull: ${n} bytes`);
        cold.wall.push(performance.now() - t0);
        cold.client.push(selfCpu() - c0);
        await sleep(MIRROR_SETTLE_MS);
        cold.mirror.push(processCpu(server.pid) - m0);
        cold.upstream.push(processCpu(upstream.server.pid) - u0);
        const th1 = threadCpu(server.pid);
        for (const [name, ms] of th1) {
          const list = threads.get(name) ?? [];
          list.push(ms - (th0.get(name) ?? 0));
          threads.set(name, list);
        }
      } finally {
        if (!kept) await mirror.stop();
      }
    }
  }
  await kept?.stop();
  const perMib = (xs: number[]) => `${((median(xs) / mib) * 100).toFixed(0)} ms per 100 MiB`;
  console.log(`blob ${mib} MiB, ${rounds} rounds, ${kept ? 'one warm mirror, a new blob each round' : 'a fresh mirror each round'}, ${ferryCli} ${nodeArgs.join(' ')}`);
  console.log(`direct  wall      ${fmt(direct.wall)}`);
  console.log(`direct  C client  ${fmt(direct.client)}  ${perMib(direct.client)}`);
  console.log(`direct  U upstream${fmt(direct.upstream)}  ${perMib(direct.upstream)}`);
  console.log(`cold    wall      ${fmt(cold.wall)}`);
  console.log(`cold    1st byte  ${fmt(cold.firstByte)}`);
  console.log(`cold    C client  ${fmt(cold.client)}  ${perMib(cold.client)}`);
  console.log(`cold    U upstream${fmt(cold.upstream)}  ${perMib(cold.upstream)}`);
  console.log(`cold    M mirror  ${fmt(cold.mirror)}  ${perMib(cold.mirror)}`);
  for (const [name, list] of [...threads].sort((a, b) => median(b[1]) - median(a[1]))) {
    if (median(list) > 0 || list.some((x) => x > 0)) console.log(`          thread ${name.padEnd(16)} ${fmt(list)}`);
  }
} finally {
  await runCleanup();
  if (!keep) await fs.rm(work, { recursive: true, force: true });
  else console.log(`kept ${work}`);
}
