// A running registry under test, as seen by the workloads.
import { existsSync } from 'node:fs';
import type { RegistryHttp } from './http.js';
import type { MemorySampler } from './memory.js';
import type { ServerProcess } from './server-process.js';
import type { RegistryName } from './types.js';

export interface Registry {
  name: RegistryName;
  baseUrl: string;
  dataDir: string;
  http: RegistryHttp;
  server: ServerProcess;
  memory: MemorySampler;
  /** Set when the registry failed in a way that makes further runs pointless. */
  broken?: string;
}

/**
 * Throws if the server process has died (with its log tail) or its data
 * directory has vanished (something outside the harness cleaned /tmp): either
 * way every later request would fail with confusing 404s or resets.
 */
export function assertAlive(reg: Registry): void {
  const status = reg.server.exitStatus();
  if (status !== undefined) {
    throw new Error(`${reg.name} server exited (${status}). Log tail:\n${reg.server.logTail()}`);
  }
  if (!existsSync(reg.dataDir)) {
    throw new Error(`${reg.name} data directory ${reg.dataDir} was deleted by something outside the harness`);
  }
}
