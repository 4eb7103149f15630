/**
 * /healthz says whether this replica can reach its metadata and blob store,
 * and answers 503 within 2 s (each probe times out after 1.5 s) when one is
 * gone or hangs, naming the part without paths or endpoints; haproxy then
 * routes around the replica.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rename, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process.js";
import { skipUnlessHaproxy, startReplicaSet, type ReplicaSet } from "../helpers/replicas.js";
import { createTestBucket, skipUnlessS3, startS3Server, type S3TestServer } from "../helpers/s3-rgw.js";
import { freshDatabaseUrl, skipUnlessPostgres } from "../helpers/postgres.js";

/** The bound this test holds /healthz to when a store is gone or silent. */
const ANSWER_WITHIN_MS = 2000;

interface Health {
  status: number;
  ms: number;
  body: { status: string; checks: Record<string, { ok: boolean; error?: string }> };
  text: string;
}

async function health(url: string): Promise<Health> {
  const started = performance.now();
  const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  return { status: response.status, ms: performance.now() - started, body: JSON.parse(text) as Health["body"], text };
}

/** Until /healthz answers `status` (results are reused for 0.5 s). */
async function healthBecomes(url: string, status: number): Promise<Health> {
  for (let i = 0; ; i++) {
    const answer = await health(url);
    if (answer.status === status || i > 20) return answer;
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
}

describe("/healthz on one replica (shared directory layout)", () => {
  let data: string;
  let serve: ServeProcess;

  before(async () => {
    data = await mkdtemp(join(tmpdir(), "ferry-health-"));
    serve = await startServeProcess({ data });
  });
  after(async () => {
    await serve?.stop();
    await rm(data, { recursive: true, force: true });
  });

  it("answers 200 naming both stores when they answer", async () => {
    const answer = await health(serve.url);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.status, "ok");
    assert.equal(answer.body.checks.metadata?.ok, true);
    assert.equal(answer.body.checks.blobs?.ok, true);
  });

  it("answers 503 naming the blob store when its directory is gone, quickly, without the path; 200 once it is back", async () => {
    await rename(join(data, "uploads"), join(data, "uploads.gone"));
    try {
      const answer = await healthBecomes(serve.url, 503);
      assert.equal(answer.status, 503);
      assert.ok(answer.ms < ANSWER_WITHIN_MS, `answered in ${answer.ms} ms`);
      assert.equal(answer.body.status, "unavailable");
      assert.equal(answer.body.checks.blobs?.ok, false);
      assert.equal(answer.body.checks.blobs?.error, "ENOENT");
      assert.equal(answer.body.checks.metadata?.ok, true);
      assert.ok(!answer.text.includes(data), "no path in the answer");
    } finally {
      await rename(join(data, "uploads.gone"), join(data, "uploads"));
    }
    assert.equal((await healthBecomes(serve.url, 200)).status, 200);
  });

  it("answers 503 naming the metadata store when its database file is gone; 200 once it is back", async () => {
    await rename(join(data, "metadata.db"), join(data, "metadata.db.gone"));
    try {
      const answer = await healthBecomes(serve.url, 503);
      assert.equal(answer.status, 503);
      assert.ok(answer.ms < ANSWER_WITHIN_MS, `answered in ${answer.ms} ms`);
      assert.equal(answer.body.checks.metadata?.ok, false);
      assert.equal(answer.body.checks.blobs?.ok, true);
      assert.ok(!answer.text.includes(data), "no path in the answer");
    } finally {
      await rename(join(data, "metadata.db.gone"), join(data, "metadata.db"));
    }
    assert.equal((await healthBecomes(serve.url, 200)).status, 200);
  });
});

/**
 * A TCP relay to the S3 server that can turn into a black hole: it keeps
 * accepting connections and never answers, the way a partitioned or frozen
 * object store looks to a client (worse than a refused connection).
 */
async function relay(target: URL): Promise<{ endpoint: string; blackhole(on: boolean): void; close(): Promise<void> }> {
  let holes = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => undefined);
    if (holes) return;
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    upstream.on("close", () => sockets.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    blackhole(on) {
      holes = on;
      // Connections the SDK keeps alive would still work: cut them, new ones go nowhere.
      if (on) for (const socket of sockets) socket.destroy();
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const s3Skip = skipUnlessHaproxy() || skipUnlessS3();

describe("/healthz when the object store stops answering (S3 on Ceph RGW)", { skip: s3Skip }, () => {
  let s3: S3TestServer;
  let set: ReplicaSet;
  let hole: Awaited<ReturnType<typeof relay>>;
  let drop: () => Promise<void>;

  before(async () => {
    if (s3Skip) return;
    s3 = await startS3Server();
    const bucket = await createTestBucket(s3);
    drop = () => bucket.drop();
    hole = await relay(new URL(s3.endpoint));
    const shared = { endpoint: s3.endpoint, bucket: bucket.bucket, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
    // r3 reaches the same bucket through the relay.
    set = await startReplicaSet({ s3: shared, replicaEnv: [undefined, undefined, { FERRY_STORAGE__S3__ENDPOINT: hole.endpoint }] });
  });
  after(async () => {
    await set?.close();
    await hole?.close();
    await drop?.().catch(() => undefined);
    await s3?.close();
  });

  it(`answers 503 naming the blob store within ${ANSWER_WITHIN_MS} ms, never hangs, haproxy routes around it, and it recovers`, async () => {
    const silent = set.replicas[2]!;
    assert.equal((await health(silent.url)).status, 200);
    hole.blackhole(true);
    await new Promise((resolve) => setTimeout(resolve, 600)); // past the reuse of the last result
    const answer = await health(silent.url);
    assert.equal(answer.status, 503, answer.text);
    assert.ok(answer.ms < ANSWER_WITHIN_MS, `answered in ${answer.ms} ms`);
    assert.equal(answer.body.checks.blobs?.ok, false);
    assert.match(answer.body.checks.blobs?.error ?? "", /timed out/);
    assert.ok(!answer.text.includes(hole.endpoint) && !answer.text.includes("127.0.0.1"), "no endpoint in the answer");
    // Concurrent checks while the store is silent share one probe and all answer in time.
    const many = await Promise.all(Array.from({ length: 20 }, () => health(silent.url)));
    assert.ok(many.every((h) => h.status === 503 && h.ms < ANSWER_WITHIN_MS), `slowest ${Math.max(...many.map((h) => h.ms))} ms`);
    // haproxy's checks (every 0.5 s, down after 2 failures) take r3 out of rotation.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const served = new Set<string>();
    for (let i = 0; i < 12; i++) served.add((await fetch(`${set.url}/v2/`)).headers.get("x-ferry-replica") ?? "?");
    assert.deepEqual([...served].sort(), ["r1", "r2"]);
    hole.blackhole(false);
    assert.equal((await healthBecomes(silent.url, 200)).status, 200);
  });
});

const pgSkip = skipUnlessHaproxy() || skipUnlessPostgres();

describe("/healthz when PostgreSQL stops answering", { skip: pgSkip }, () => {
  let set: ReplicaSet;
  let hole: Awaited<ReturnType<typeof relay>>;
  let drop: () => Promise<void>;

  before(async () => {
    if (pgSkip) return;
    const database = await freshDatabaseUrl();
    drop = database.drop;
    const direct = new URL(database.url);
    hole = await relay(new URL(`http://${direct.host}`));
    const relayed = new URL(database.url);
    relayed.host = new URL(hole.endpoint).host;
    // r3 reaches the same database through the relay.
    set = await startReplicaSet({ postgresUrl: database.url, replicaEnv: [undefined, undefined, { FERRY_METADATA__POSTGRES__URL: relayed.toString() }] });
  });
  after(async () => {
    await set?.close();
    await hole?.close();
    await drop?.().catch(() => undefined);
  });

  it(`answers 503 naming the metadata store within ${ANSWER_WITHIN_MS} ms, haproxy routes around it, and it recovers`, async () => {
    const silent = set.replicas[2]!;
    assert.equal((await health(silent.url)).status, 200);
    hole.blackhole(true);
    await new Promise((resolve) => setTimeout(resolve, 600));
    const answer = await health(silent.url);
    assert.equal(answer.status, 503, answer.text);
    assert.ok(answer.ms < ANSWER_WITHIN_MS, `answered in ${answer.ms} ms`);
    assert.equal(answer.body.checks.metadata?.ok, false);
    assert.ok(!/postgres|ferry@|127\.0\.0\.1/.test(answer.text), "no URL in the answer");
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const served = new Set<string>();
    for (let i = 0; i < 12; i++) served.add((await fetch(`${set.url}/v2/`)).headers.get("x-ferry-replica") ?? "?");
    assert.deepEqual([...served].sort(), ["r1", "r2"]);
    hole.blackhole(false);
    assert.equal((await healthBecomes(silent.url, 200)).status, 200);
  });
});
