// A fixed-duration autocannon run against one URL, with exact latencies.
//
// autocannon's own latency histogram stores whole milliseconds, too coarse for
// sub-millisecond manifest GETs, so latencies are taken from its per-response
// event (float ms from process.hrtime) instead.
import autocannon from 'autocannon';
import { LatencyRecorder } from '../stats.js';

export interface HammerOptions {
  url: string;
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
  connections: number;
  seconds: number;
}

export interface HammerResult {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  requests: number;
}

/** Index of the headers-complete callback in http-parser-js (HTTPParser.kOnHeadersComplete). */
const K_ON_HEADERS_COMPLETE = 2;

/**
 * autocannon parses responses with http-parser-js and never tells it that a
 * request was HEAD, so the parser waits for Content-Length bytes of body that
 * never come and every HEAD times out. Returning true from the
 * headers-complete callback is the parser's "skip body" signal. autocannon
 * installs that callback after setupClient runs, so intercept the assignment.
 */
function skipBodies(client: autocannon.Client): void {
  const parser = (client as unknown as { parser?: Record<number, unknown> }).parser;
  if (!parser) throw new Error('autocannon internals changed: client.parser missing (HEAD workaround)');
  let handler: ((...args: unknown[]) => unknown) | undefined;
  Object.defineProperty(parser, K_ON_HEADERS_COMPLETE, {
    configurable: true,
    get: () =>
      function (this: unknown, ...args: unknown[]): boolean {
        handler?.apply(this, args);
        return true;
      },
    set: (fn: (...args: unknown[]) => unknown) => {
      handler = fn;
    },
  });
}

export function hammer(opts: HammerOptions): Promise<HammerResult> {
  const latencies = new LatencyRecorder();
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: opts.url,
        method: opts.method,
        headers: opts.headers,
        connections: opts.connections,
        duration: opts.seconds,
        timeout: 10,
        ...(opts.method === 'HEAD' ? { setupClient: skipBodies } : {}),
      },
      (err: unknown, result: autocannon.Result) => {
        if (err) return reject(err instanceof Error ? err : new Error(String(err)));
        if (result.errors > 0 || result.non2xx > 0 || result['2xx'] === 0) {
          const codes = JSON.stringify(result.statusCodeStats ?? {});
          return reject(
            new Error(
              `${opts.method} ${opts.url}: ${result.errors} errors (${result.timeouts} timeouts), ` +
                `${result.non2xx} non-2xx, ${result['2xx']} ok; status counts ${codes}`,
            ),
          );
        }
        const [p50, p99] = latencies.percentiles(0.5, 0.99);
        resolve({ requestsPerSecond: result.requests.total / result.duration, p50, p99, requests: result.requests.total });
      },
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.record(responseTime);
    });
  });
}
