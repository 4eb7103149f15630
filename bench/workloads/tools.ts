// External load generators (Debian packages): wrk for request rates, curl for
// multi-client pulls. A Node client is the bottleneck past a few thousand
// req/s or a few hundred MiB/s on two cores; these are C.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

export const WRK = '/usr/bin/wrk';
export const CURL = '/usr/bin/curl';

/** What to install when a tool is missing (the bench refuses to guess numbers without it). */
export function missingTools(): string[] {
  return [WRK, CURL].filter((bin) => !existsSync(bin));
}

export interface ToolRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a tool to completion; a run that outlives `timeoutMs` is killed (a hung server must not hang the bench). */
export function runTool(bin: string, args: string[], timeoutMs: number): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface WrkResult {
  /** Requests completed in the run (wrk's "N requests in ..."). */
  requests: number;
  requestsPerSecond: number;
  p50: number;
  p99: number;
}

/** wrk --latency prints "50%  312.00us"; converts to milliseconds. */
function latencyMs(out: string, pct: string): number {
  const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
  if (!m) throw new Error(`wrk output has no ${pct}% latency:\n${out}`);
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

/**
 * One wrk run: 1 thread, `connections` connections, `seconds` long. Any
 * non-2xx answer or socket error fails the run (as autocannon runs do).
 */
export async function wrk(url: string, headers: Record<string, string>, connections: number, seconds: number): Promise<WrkResult> {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '--timeout', '10s'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const run = await runTool(WRK, args, (seconds + 30) * 1000);
  if (run.code !== 0) throw new Error(`wrk ${url} exited ${run.code}: ${run.stderr.trim() || run.stdout.trim()}`);
  const out = run.stdout;
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const sock = /Socket errors: (.*)/.exec(out);
  if (bad || sock) throw new Error(`wrk ${url}: ${bad ? `${bad[1]} non-2xx answers` : ''} ${sock ? `socket errors ${sock[1]}` : ''}`.trim());
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !total) throw new Error(`wrk output has no request count:\n${out}`);
  return { requests: Number(total[1]), requestsPerSecond: Number(rps[1]), p50: latencyMs(out, '50'), p99: latencyMs(out, '99') };
}

/**
 * One curl process fetching `url` `times` times over one keep-alive
 * connection (redirects followed, as a client would); returns the bytes of
 * each fetch, which the caller checks.
 */
export async function curlRepeat(url: string, times: number, timeoutMs: number): Promise<number[]> {
  // Each URL needs its own -o; curl reuses the connection between them.
  const expanded: string[] = ['-s', '-L', '--fail', '-w', '%{http_code} %{size_download}\\n'];
  for (let i = 0; i < times; i++) expanded.push('-o', '/dev/null', url);
  const run = await runTool(CURL, expanded, timeoutMs);
  if (run.code !== 0) throw new Error(`curl ${url} exited ${run.code}: ${run.stderr.trim()}`);
  const sizes: number[] = [];
  for (const line of run.stdout.trim().split('\n')) {
    const [status, size] = line.split(' ');
    if (status !== '200') throw new Error(`curl ${url}: status ${status}`);
    sizes.push(Number(size));
  }
  if (sizes.length !== times) throw new Error(`curl ${url}: ${sizes.length} answers for ${times} fetches`);
  return sizes;
}
