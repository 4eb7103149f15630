/**
 * Several real `ferry serve` replicas behind haproxy, as docs/deployment.md
 * lays them out: every replica has its own port and the same configuration
 * (shared metadata, shared blob store, the same auth files), and haproxy
 * balances round-robin with no stickiness, health-checks `/healthz`, and
 * retries and redispatches a request whose connection to a replica failed.
 *
 * Used by the HA tests (test/ha/) and by scripts/replicas.mjs (a person's
 * way to run the same layout). Loopback only; haproxy's configuration goes
 * into a temp directory and haproxy is stopped by its PID.
 *
 * Metadata: PostgreSQL when `postgresUrl` is given, else SQLite in the shared
 * data directory (WAL works across processes on one host; this is also the
 * layout for a shared directory where S3 is not available). Blobs: the same
 * shared directory, or an S3 bucket when `s3` is given (the RGW of
 * test/helpers/s3-rgw.ts).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startServeProcess, type ServeProcess } from "./serve-process.js";
import { skipUnless } from "./tools.js";

export interface ReplicaS3 {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface ReplicaSetOptions {
  /** How many replicas (default 3). */
  replicas?: number;
  /** The shared data directory (default: a fresh temp directory, removed by close()). */
  data?: string;
  /** Blobs in this bucket instead of the shared directory. */
  s3?: ReplicaS3;
  /** Metadata in this PostgreSQL database (metadata.driver postgres) instead of SQLite in the shared directory. */
  postgresUrl?: string;
  /** YAML every replica reads with --config (written into the shared directory). */
  config?: string;
  /** Extra environment for every replica. */
  env?: Record<string, string>;
  /** Extra environment for replica i (tests that break one replica's view of a store). */
  replicaEnv?: Array<Record<string, string> | undefined>;
  /**
   * Every replica gets a data directory of its own (`<data>/replica-<i>`), as
   * replicas on different hosts would: they share only the metadata database
   * (give `postgresUrl`) and the blob store (`s3`, or `<data>/blobs` through
   * storage.filesystem.path). Nothing may then be shared through a data directory.
   */
  separateData?: boolean;
  /** haproxy's health-check interval in ms (default 500: tests want a dead replica noticed fast). */
  checkIntervalMs?: number;
}

export interface Haproxy {
  pid: number;
  configFile: string;
  stop(): Promise<void>;
}

export interface ReplicaSet {
  /** The load balancer's URL: what clients use. */
  url: string;
  /** host:port of the load balancer, for skopeo and podman. */
  host: string;
  /** The shared data directory. */
  data: string;
  replicas: ServeProcess[];
  haproxy: Haproxy;
  /** SIGKILL of replica `i`, as a crash would. */
  kill(i: number): Promise<void>;
  /** Starts replica `i` again on its port (after kill or stop). */
  restart(i: number): Promise<void>;
  close(): Promise<void>;
}

/** Skip reason for tests that need haproxy (throws under REQUIRE_E2E_TOOLS=1). */
export function skipUnlessHaproxy(): string | false {
  return skipUnless("haproxy");
}

/** The environment that points a replica at the shared blob store. */
export function storageEnv(s3: ReplicaS3 | undefined): Record<string, string> {
  if (!s3) return {};
  return {
    FERRY_STORAGE__DRIVER: "s3",
    FERRY_STORAGE__S3__ENDPOINT: s3.endpoint,
    FERRY_STORAGE__S3__BUCKET: s3.bucket,
    FERRY_STORAGE__S3__ACCESS_KEY_ID: s3.accessKeyId,
    FERRY_STORAGE__S3__SECRET_ACCESS_KEY: s3.secretAccessKey,
  };
}

export async function startReplicaSet(options: ReplicaSetOptions = {}): Promise<ReplicaSet> {
  const count = options.replicas ?? 3;
  const ownData = options.data === undefined;
  const data = options.data ?? (await mkdtemp(join(tmpdir(), "ferry-replicas-")));
  const runDir = await mkdtemp(join(tmpdir(), "ferry-haproxy-"));
  const args: string[] = [];
  if (options.config !== undefined) {
    const configFile = join(data, "ferry.yaml");
    await writeFile(configFile, options.config);
    args.push("--config", configFile);
  }
  const env = {
    ...storageEnv(options.s3),
    ...(options.postgresUrl ? { FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: options.postgresUrl } : {}),
    ...options.env,
  };
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freePort());
  const replicas: ServeProcess[] = [];
  if (options.separateData && !options.s3) Object.assign(env, { FERRY_STORAGE__FILESYSTEM__PATH: join(data, "blobs") });
  const replicaData = (i: number) => (options.separateData ? join(data, `replica-${i}`) : data);
  const start = (i: number) => startServeProcess({ data: replicaData(i), port: ports[i], env: { ...env, ...options.replicaEnv?.[i] }, args });
  let haproxy: Haproxy | undefined;
  const close = async () => {
    await haproxy?.stop();
    await Promise.all(replicas.map((r) => r.stop()));
    await rm(runDir, { recursive: true, force: true });
    if (ownData) await rm(data, { recursive: true, force: true });
  };
  try {
    // One at a time: the first creates the database and the schema, which others then find.
    for (let i = 0; i < count; i++) replicas.push(await start(i));
    const lbPort = await freePort();
    haproxy = await startHaproxy({ runDir, listenPort: lbPort, servers: ports, checkIntervalMs: options.checkIntervalMs ?? 500 });
    await waitForServers(`http://127.0.0.1:${lbPort}`, count);
    return {
      url: `http://127.0.0.1:${lbPort}`,
      host: `127.0.0.1:${lbPort}`,
      data,
      replicas,
      haproxy,
      kill: (i) => replicas[i]!.kill(),
      async restart(i) {
        replicas[i] = await start(i);
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Until every replica has answered a request through the balancer (health checks have marked all of them up). */
async function waitForServers(url: string, count: number): Promise<void> {
  const seen = new Set<string>();
  const deadline = Date.now() + 20_000;
  while (seen.size < count) {
    if (Date.now() > deadline) throw new Error(`haproxy routed to only ${seen.size} of ${count} replicas`);
    const served = await fetch(`${url}/healthz`).then((r) => r.headers.get("x-ferry-replica"), () => null);
    if (served) seen.add(served);
    else await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface HaproxyConfigOptions {
  /** Address haproxy listens on (host:port). */
  bind: string;
  /** Replica addresses (host:port). */
  servers: string[];
  checkIntervalMs: number;
  pidFile?: string;
}

/**
 * A production-style haproxy configuration for Ferry replicas (docs/deployment.md
 * explains each line). Tests differ only in the check interval.
 */
export function haproxyConfig(options: HaproxyConfigOptions): string {
  const servers = options.servers.map((address, i) => `  server r${i + 1} ${address} check`).join("\n");
  return `global
  maxconn 4096
  # A manifest PUT with ?tag= parameters (up to 100) answers one OCI-Tag header per tag:
  # more headers (101) and bytes (16 KiB) than haproxy's defaults, which would answer 502.
  tune.bufsize 65536
  tune.http.maxhdr 256
${options.pidFile ? `  pidfile ${options.pidFile}\n` : ""}
defaults
  mode http
  option httplog
  # Pushes stream for as long as their body moves; Ferry has its own idle timeouts.
  timeout connect 2s
  timeout client 10m
  timeout server 10m
  timeout http-request 30s
  timeout http-keep-alive 30s
  timeout queue 30s
  # /healthz answers within 1.5 s even when a store hangs; a check slower than this counts as failed.
  timeout check 3s
  # A request whose connection to a replica failed (refused, reset before an answer)
  # is sent again, to another replica: it never reached the dead one.
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response

frontend registry
  bind ${options.bind}
  # Ferry reads X-Forwarded-For only from trusted proxies (trustedProxies in its config).
  option forwardfor
  default_backend ferry

backend ferry
  balance roundrobin
  option httpchk
  http-check send meth GET uri /healthz
  http-check expect status 200
  default-server inter ${options.checkIntervalMs} fall 2 rise 2
  # Which replica answered (tests assert that requests really spread over replicas).
  http-response set-header X-Ferry-Replica %s
${servers}
`;
}

async function startHaproxy(options: { runDir: string; listenPort: number; servers: number[]; checkIntervalMs: number }): Promise<Haproxy> {
  const configFile = join(options.runDir, "haproxy.cfg");
  await writeFile(
    configFile,
    haproxyConfig({
      bind: `127.0.0.1:${options.listenPort}`,
      servers: options.servers.map((port) => `127.0.0.1:${port}`),
      checkIntervalMs: options.checkIntervalMs,
    }),
  );
  const check = spawnSync("haproxy", ["-c", "-q", "-f", configFile], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`haproxy refused its configuration: ${check.stderr || check.stdout}`);
  // -db: foreground, so this process owns it and stops it by PID.
  const child: ChildProcess = spawn("haproxy", ["-db", "-f", configFile], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let i = 0; ; i++) {
    const up = await fetch(`http://127.0.0.1:${options.listenPort}/healthz`).then(() => true, () => false);
    if (up) break;
    if (child.exitCode !== null || i > 100) {
      child.kill("SIGKILL");
      throw new Error(`haproxy did not start: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    pid: child.pid!,
    configFile,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGTERM");
      await exited;
    },
  };
}

/**
 * Three replicas behind haproxy in the shape the client e2e tests take
 * (test/helpers/s3-serve.ts RunningRegistry): blobs in an RGW bucket when
 * FERRY_TEST_S3_ENDPOINT names one (CI), else in the shared directory.
 */
export async function startReplicasBehindHaproxy(): Promise<{ host: string; url: string; close(): Promise<void> }> {
  let dropBucket: (() => Promise<void>) | undefined;
  let s3: ReplicaS3 | undefined;
  if (process.env.FERRY_TEST_S3_ENDPOINT) {
    const { createTestBucket, startS3Server } = await import("./s3-rgw.js");
    const server = await startS3Server();
    const bucket = await createTestBucket(server);
    dropBucket = () => bucket.drop();
    s3 = { endpoint: server.endpoint, bucket: bucket.bucket, accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
  }
  const metadata = await sharedMetadata();
  try {
    const set = await startReplicaSet({ s3, postgresUrl: metadata?.url });
    return {
      host: set.host,
      url: set.url,
      async close() {
        await set.close();
        await dropBucket?.();
        await metadata?.drop();
      },
    };
  } catch (error) {
    await dropBucket?.();
    await metadata?.drop();
    throw error;
  }
}

/**
 * A fresh PostgreSQL schema for the replicas' metadata when PostgreSQL can be had
 * (CI: always, a missing server fails there), else undefined: SQLite in the shared directory.
 */
export async function sharedMetadata(): Promise<{ url: string; drop(): Promise<void> } | undefined> {
  const { freshDatabaseUrl, skipUnlessPostgres } = await import("./postgres.js");
  if (skipUnlessPostgres()) return undefined;
  return freshDatabaseUrl();
}
