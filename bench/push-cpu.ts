// Server CPU and wall time per 100 MiB monolithic push, for registries you
// started yourself, interleaved so slow drifts of the machine hit all alike:
//   node dist/bench/push-cpu.js [--clients N] [--gap MS] ROUNDS name=PORT:PID [name=PORT:PID ...]
// CPU is utime+stime of PID from /proc (Linux), read after each push settles.
// --clients N pushes N blobs at once per round (CPU is then per push);
// --gap MS waits before each round's pushes (a server that releases memory
// when pushes go quiet then pushes from its released state).
// --threads also splits each server's CPU by thread (/proc/PID/task): its main
// thread, its busiest other thread (Ferry's hashing thread; one of the Go
// runtime's for the reference) and all the others.
// Dirty pages are flushed (sync, untimed) before each round, as `npm run bench`
// does, so one server's writeback does not land in another's timing.
// Each push is POST /v2/r/blobs/uploads/ then one PUT ?digest= written on a
// raw socket, so the client costs as little as possible.
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import net from 'node:net';

interface Target {
  name: string;
  port: number;
  pid: number;
  cpuMs: number[];
  wallMs: number[];
  /** Per push, per round (--threads): main thread, busiest other thread, all other threads. */
  split: Array<[number, number, number]>;
}

function statCpuMs(path: string): number {
  const fields = readFileSync(path, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // clock ticks of 10 ms
}

function cpuMs(pid: number): number {
  return statCpuMs(`/proc/${pid}/stat`);
}

/** CPU of each of the process's threads, by thread id (threads that exit meanwhile are left out). */
function threadCpuMs(pid: number): Map<number, number> {
  const byThread = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      byThread.set(Number(tid), statCpuMs(`/proc/${pid}/task/${tid}/stat`));
    } catch {
      // exited between the listing and the read
    }
  }
  return byThread;
}

/** Main thread, busiest other thread, the rest: CPU between two snapshots, divided by `per`. */
function splitByThread(pid: number, before: Map<number, number>, after: Map<number, number>, per: number): [number, number, number] {
  let main = 0;
  const others: number[] = [];
  for (const [tid, end] of after) {
    const used = end - (before.get(tid) ?? 0);
    if (tid === pid) main = used;
    else others.push(used);
  }
  others.sort((a, b) => b - a);
  const busiest = others[0] ?? 0;
  const rest = others.slice(1).reduce((sum, x) => sum + x, 0);
  return [main / per, busiest / per, rest / per];
}

function request(port: number, method: string, path: string, body?: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const head = `${method} ${path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body?.length ?? 0}\r\n\r\n`;
    socket.write(head);
    if (body) socket.write(body);
    let reply = '';
    socket.on('data', (d) => (reply += d.toString('latin1')));
    socket.on('end', () => resolve(reply));
    socket.on('error', reject);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const args = process.argv.slice(2);
// --clients N: N pushes at once per round (each of its own content); CPU is then per push.
const clientsAt = args.indexOf('--clients');
const clients = clientsAt >= 0 ? Number(args.splice(clientsAt, 2)[1]) : 1;
// --gap MS: wait that long before each push (after its untimed preparation), e.g. to push after the server went quiet.
const gapAt = args.indexOf('--gap');
const gapMs = gapAt >= 0 ? Number(args.splice(gapAt, 2)[1]) : 0;
const threadsAt = args.indexOf('--threads');
const byThreads = threadsAt >= 0 && args.splice(threadsAt, 1).length > 0;
const [roundsArg, ...specs] = args;
const rounds = Number(roundsArg);
if (!Number.isInteger(rounds) || rounds < 1 || specs.length === 0 || !Number.isInteger(clients) || clients < 1) {
  console.error('usage: node dist/bench/push-cpu.js [--clients N] [--gap MS] [--threads] ROUNDS name=PORT:PID [name=PORT:PID ...]');
  process.exit(2);
}
const targets: Target[] = specs.map((spec) => {
  const [name, rest] = spec.split('=');
  const [port, pid] = (rest ?? '').split(':').map(Number);
  return { name, port, pid, cpuMs: [], wallMs: [], split: [] };
});
const bodies = Array.from({ length: clients }, () => randomBytes(100 * 1024 * 1024));

/** Fresh content in `body` (so nothing dedups), its digest and an upload session: the PUT's URL. */
async function prepare(target: Target, body: Buffer): Promise<{ url: URL; body: Buffer }> {
  randomFillSync(body, 0, 4096);
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const started = await request(target.port, 'POST', '/v2/r/blobs/uploads/');
  const location = /\r\nlocation: ([^\r]+)/i.exec(started)?.[1];
  if (!location) throw new Error(`${target.name}: no Location in ${started.slice(0, 120)}`);
  const url = new URL(location, 'http://bench');
  url.searchParams.set('digest', digest);
  return { url, body };
}

for (let round = 0; round < rounds; round++) {
  for (const target of [...targets].sort(() => Math.random() - 0.5)) {
    // Sessions and digests first (untimed), then all PUTs at once.
    const prepared = await Promise.all(bodies.map((body) => prepare(target, body)));
    spawnSync('sync');
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    const threads0 = byThreads ? threadCpuMs(target.pid) : null;
    const cpu0 = cpuMs(target.pid);
    const t0 = performance.now();
    const replies = await Promise.all(prepared.map(({ url, body }) => request(target.port, 'PUT', url.pathname + url.search, body)));
    target.wallMs.push(performance.now() - t0);
    for (const reply of replies) if (!reply.startsWith('HTTP/1.1 201')) throw new Error(`${target.name}: ${reply.slice(0, 200)}`);
    await new Promise((r) => setTimeout(r, 50)); // let the server finish its bookkeeping
    target.cpuMs.push((cpuMs(target.pid) - cpu0) / clients);
    if (threads0) target.split.push(splitByThread(target.pid, threads0, threadCpuMs(target.pid), clients));
  }
}
for (const t of targets) {
  const wall = median(t.wallMs);
  console.log(
    `${t.name}: median CPU ${median(t.cpuMs).toFixed(0)} ms per 100 MiB push, wall ${wall.toFixed(0)} ms per round of ${clients} (${((clients * 100) / (wall / 1000)).toFixed(0)} MiB/s; ${rounds} rounds)`,
  );
  if (byThreads) {
    const column = (i: number) => median(t.split.map((s) => s[i])).toFixed(0);
    console.log(`  per push, median: main thread ${column(0)} ms, busiest other thread ${column(1)} ms, all other threads ${column(2)} ms`);
  }
}
