/**
 * Starts a real Ferry registry for a test: free loopback port, fresh data
 * directory, silent logs. Always `await close()` (use t.after / after()).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry, type RunningRegistry } from "../../src/server.js";
import { startReplicasBehindHaproxy } from "./replicas.js";

export interface TestRegistry {
  url: string;
  /** host:port, for clients that take a registry without scheme (skopeo, podman). */
  host: string;
  dataDir: string;
  registry: RunningRegistry;
  close(): Promise<void>;
}

export async function startTestRegistry(config: Record<string, unknown> = {}, dataDir?: string): Promise<TestRegistry> {
  // test/ha/spec-through-lb.test.ts runs the spec tests against three replicas behind haproxy.
  if (process.env.FERRY_TEST_THROUGH_LB === "1" && Object.keys(config).length === 0 && dataDir === undefined) return startThroughLoadBalancer();
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), "ferry-test-")));
  const loaded = loadConfig({
    env: {},
    overrides: { listen: "127.0.0.1:0", data: dir, log: { level: "silent", accessLog: false }, ...config },
  });
  const registry = await startRegistry(loaded);
  return {
    url: registry.url,
    host: registry.url.replace(/^http:\/\//, ""),
    dataDir: dir,
    registry,
    async close() {
      await registry.close();
      // A background write finishing after close (a mirror fetch committing) can refill a directory mid-removal: retry.
      if (!dataDir) await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
}

/**
 * Three `ferry serve` replicas behind haproxy in the TestRegistry shape, on PostgreSQL and RGW when
 * the suite has them (tests that reach into `registry` or the data directory cannot run so).
 */
async function startThroughLoadBalancer(): Promise<TestRegistry> {
  const set = await startReplicasBehindHaproxy();
  return {
    url: set.url,
    host: set.host,
    dataDir: "",
    get registry(): RunningRegistry {
      throw new Error("this test reaches into the registry process; it cannot run through the load balancer");
    },
    close: () => set.close(),
  };
}
