// Waits until a freshly spawned registry answers the API version check.
import { request } from 'undici';
import type { ServerProcess } from './server-process.js';

const API_HEADER = 'docker-distribution-api-version';

export async function waitForRegistry(
  name: string,
  baseUrl: string,
  server: ServerProcess,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastProblem = 'no answer yet';
  while (Date.now() < deadline) {
    const status = server.exitStatus();
    if (status !== undefined) {
      throw new Error(`${name} exited during startup (${status}). Log tail:\n${server.logTail()}`);
    }
    try {
      const res = await request(`${baseUrl}/v2/`, { method: 'GET', headersTimeout: 2000, bodyTimeout: 2000 });
      await res.body.dump();
      const version = res.headers[API_HEADER];
      if (res.statusCode === 200 && version === 'registry/2.0') return;
      lastProblem = `GET /v2/ answered ${res.statusCode}, ${API_HEADER}: ${String(version)}`;
      // An auth challenge will not go away by waiting; fail fast with a hint.
      if (res.statusCode === 401) {
        throw new Error(`${name}: ${lastProblem}; the benchmark needs anonymous push/pull (authentication enabled?)`);
      }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith(`${name}:`)) throw err;
      lastProblem = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} not ready after ${timeoutMs} ms (${lastProblem}). Log tail:\n${server.logTail()}`);
}
