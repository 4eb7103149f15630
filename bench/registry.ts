// A running registry under test, as seen by the workloads.
import type { RegistryHttp } from './http.js';
import type { MemorySampler } from './memory.js';
import type { ServerProcess } from './server-process.js';
import type { RegistryName } from './types.js';

export interface Registry {
  name: RegistryName;
  baseUrl: string;
  http: RegistryHttp;
  server: ServerProcess;
  memory: MemorySampler;
  /** Set when the registry failed in a way that makes further runs pointless. */
  broken?: string;
}

/** Throws if the server process has died, with its log tail for context. */
export function assertAlive(reg: Registry): void {
  const status = reg.server.exitStatus();
  if (status !== undefined) {
    throw new Error(`${reg.name} server exited (${status}). Log tail:\n${reg.server.logTail()}`);
  }
}
