/**
 * A real S3 server for tests: a loopback Ceph RGW started with the project's
 * scripts/s3-service.sh (data in a temp dir, stopped by PID), or one already
 * running named by FERRY_TEST_S3_ENDPOINT (+ FERRY_TEST_S3_ACCESS_KEY /
 * FERRY_TEST_S3_SECRET_KEY), which .ci/run starts once for the whole suite.
 *
 * Without the Ceph packages the tests are skipped with the apt-get line;
 * with REQUIRE_E2E_TOOLS=1 (CI) that is a failure instead.
 */
import { before, after } from "node:test";
import { execFile, spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { createS3Client } from "../../src/storage/s3-client.js";
import type { S3StoreOptions } from "../../src/storage/s3.js";

const run = promisify(execFile);
const SCRIPT = resolve(process.cwd(), "scripts/s3-service.sh");
export const APT_LINE = "apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl";

export interface S3TestServer {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Present when this process started the server (so it may stop it). */
  gateway?: { stop(): Promise<void>; start(): Promise<void> };
  close(): Promise<void>;
}

/** A skip reason when no S3 server can be had, false otherwise (throws under REQUIRE_E2E_TOOLS=1). */
export function skipUnlessS3(options: { ownServer?: boolean } = {}): string | false {
  if (process.env.FERRY_TEST_S3_ENDPOINT && !options.ownServer) return false;
  if (spawnSync(SCRIPT, ["check"], { stdio: "ignore" }).status === 0) return false;
  if (process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`Ceph RGW packages missing (.ci/run installs them: ${APT_LINE})`);
  return `needs a local Ceph RGW (install: ${APT_LINE})`;
}

/** Whether nothing listens on 127.0.0.1:`port` right now. */
async function canListen(port: number): Promise<boolean> {
  return new Promise((resolveFree) => {
    const server = createServer();
    server.once("error", () => resolveFree(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolveFree(true)));
  });
}

/** A free port in [from, from + span), below the kernel's ephemeral range (32768-60999 on Linux). */
async function freePortBelowEphemeral(from: number, span: number): Promise<number> {
  for (;;) {
    const port = from + Math.floor(Math.random() * span);
    if (await canListen(port)) return port;
  }
}

/** The shared server when one is named (and `ownServer` is not asked), else a fresh one of our own. */
export async function startS3Server(options: { ownServer?: boolean } = {}): Promise<S3TestServer> {
  const shared = process.env.FERRY_TEST_S3_ENDPOINT;
  if (shared && !options.ownServer) {
    return {
      endpoint: shared,
      accessKeyId: process.env.FERRY_TEST_S3_ACCESS_KEY ?? "ferrytestaccess",
      secretAccessKey: process.env.FERRY_TEST_S3_SECRET_KEY ?? "ferrytestsecret",
      region: "us-east-1",
      async close() {},
    };
  }
  const dir = await mkdtemp(join(tmpdir(), "ferry-rgw-"));
  // Both ports are drawn below the kernel's ephemeral range (32768-60999 on Linux), where neither a busy
  // machine's outgoing connections nor the servers other tests start on port 0 can take them: the S3 port
  // must stay free while the fault tests have the gateway stopped, so that it can start again on it (in one
  // CI run an ephemeral one was found busy at the restart). The monitor's neighbours serve the OSD, which
  // scans a range.
  // A start that still loses a port race is retried on other ports.
  let s3Port = 0;
  let env: NodeJS.ProcessEnv = {};
  for (let attempt = 1; ; attempt++) {
    s3Port = await freePortBelowEphemeral(12_000, 8_000);
    const monPort = 20_000 + Math.floor(Math.random() * 12_000);
    env = { ...process.env, RGW_DIR: dir, S3_PORT: String(s3Port), MON_PORT: String(monPort) };
    try {
      await run(SCRIPT, ["start"], { env, timeout: 60_000 });
      break;
    } catch (error) {
      await run(SCRIPT, ["stop", "--purge"], { env }).catch(() => undefined);
      const stderr = (error as { stderr?: string }).stderr ?? "";
      if (attempt < 3) continue;
      throw new Error(`could not start Ceph RGW: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
    }
  }
  return {
    endpoint: `http://127.0.0.1:${s3Port}`,
    accessKeyId: "ferrytestaccess",
    secretAccessKey: "ferrytestsecret",
    region: "us-east-1",
    gateway: {
      stop: async () => void (await run(SCRIPT, ["gateway-stop"], { env })),
      start: async () => {
        try {
          await run(SCRIPT, ["gateway-start"], { env, timeout: 60_000 });
        } catch (error) {
          // The gateway's own log says why; the directory is gone after close().
          const log = await readFile(join(dir, "log", "client.rgw.a.log"), "utf8").catch(() => "");
          throw new Error(`${(error as Error).message}\nradosgw log tail:\n${log.split("\n").slice(-15).join("\n")}`);
        }
      },
    },
    async close() {
      await run(SCRIPT, ["stop"], { env }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function clientFor(server: S3TestServer): S3Client {
  return createS3Client({
    endpoint: server.endpoint,
    region: server.region,
    bucket: "",
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
  });
}

/** A new, empty bucket with a unique name; `drop` empties and removes it. */
export async function createTestBucket(server: S3TestServer): Promise<{ bucket: string; drop(): Promise<void> }> {
  const client = clientFor(server);
  const bucket = `ferry-test-${randomBytes(6).toString("hex")}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  return {
    bucket,
    async drop() {
      try {
        for (;;) {
          const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
          const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
          if (keys.length === 0) break;
          await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
        }
        await client.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => undefined);
      } finally {
        client.destroy();
      }
    },
  };
}

export interface S3Fixture {
  server: S3TestServer;
  /** A bucket of this test file's own. */
  bucket: string;
  /** A plain SDK client, to look at what the registry left in the bucket. */
  raw: S3Client;
}

/**
 * Registers before/after hooks for a test file: the shared RGW, a fresh
 * bucket and a raw client, filled in before the first test and dropped after
 * the last. Nothing is started when the file is skipped.
 */
export function useS3Bucket(skip: string | false): S3Fixture {
  const fixture = {} as S3Fixture;
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    if (skip) return;
    fixture.server = await startS3Server();
    const created = await createTestBucket(fixture.server);
    fixture.bucket = created.bucket;
    drop = created.drop;
    fixture.raw = clientFor(fixture.server);
  });
  after(async () => {
    fixture.raw?.destroy();
    await drop?.().catch(() => undefined);
    await fixture.server?.close();
  });
  return fixture;
}

/** Driver options for a store under `prefix` in the fixture's bucket (5 MiB parts: the smallest S3 allows, so tests cross part boundaries cheaply). */
export function s3StoreOptions(s3: S3Fixture, prefix: string, extra: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return {
    endpoint: s3.server.endpoint,
    region: s3.server.region,
    bucket: s3.bucket,
    accessKeyId: s3.server.accessKeyId,
    secretAccessKey: s3.server.secretAccessKey,
    prefix,
    partSize: 5 * 1024 * 1024,
    ...extra,
  };
}
