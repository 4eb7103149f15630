/**
 * Three real `ferry serve` replicas behind haproxy (round-robin, no
 * stickiness), sharing one metadata store and one blob store: any request may
 * land on any replica, and a replica may die at any moment (docs/deployment.md).
 *
 * Metadata is PostgreSQL (a schema of its own per replica set) when it can
 * be had (CI), else SQLite in the shared directory (WAL, one host). Blobs are
 * in an RGW bucket when FERRY_TEST_S3_ENDPOINT names one (CI), else in the
 * shared directory.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { sharedMetadata, skipUnlessHaproxy, startReplicaSet, type ReplicaS3, type ReplicaSet } from "../helpers/replicas.js";
import { createTestBucket, startS3Server } from "../helpers/s3-rgw.js";
import { newStats, pulledIntact, pushWithRetries, randomImage, sha256, OCI_MANIFEST, type Image } from "./push.js";

const skip = skipUnlessHaproxy();

/** PostgreSQL when it can be had (cleaned up with the set), else SQLite in the shared directory. */
async function metadataUrl(cleanups: Array<() => Promise<unknown>>): Promise<string | undefined> {
  const metadata = await sharedMetadata();
  if (metadata) cleanups.push(() => metadata.drop());
  return metadata?.url;
}

/** An RGW bucket when CI runs one for the suite, else blobs stay in the shared directory. */
async function sharedBlobStore(cleanups: Array<() => Promise<unknown>>): Promise<ReplicaS3 | undefined> {
  if (!process.env.FERRY_TEST_S3_ENDPOINT) return undefined;
  const server = await startS3Server();
  const bucket = await createTestBucket(server);
  cleanups.push(() => bucket.drop());
  return { endpoint: server.endpoint, bucket: bucket.bucket, accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
}

function replicaOf(response: Response): string {
  return response.headers.get("x-ferry-replica") ?? "?";
}

async function putManifest(base: string, repository: string, tag: string, image: Image): Promise<Response> {
  return fetch(`${base}/v2/${repository}/manifests/${tag}`, { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body: new Uint8Array(image.manifest) });
}

describe("three replicas behind haproxy", { skip }, () => {
  let set: ReplicaSet;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    if (skip) return;
    set = await startReplicaSet({ s3: await sharedBlobStore(cleanups), postgresUrl: await metadataUrl(cleanups) });
  });
  after(async () => {
    await set?.close();
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("spreads requests over every replica (no stickiness on one keep-alive connection)", async () => {
    const served = new Set<string>();
    for (let i = 0; i < 9; i++) served.add(replicaOf(await fetch(`${set.url}/v2/`)));
    assert.deepEqual([...served].sort(), ["r1", "r2", "r3"]);
  });

  it("a tag pushed through one replica is served by the others at once: manifest by tag, tag list and catalog (60 rounds)", async () => {
    const [a, b, c] = set.replicas.map((r) => r.url) as [string, string, string];
    const repository = `ha/fresh-${randomBytes(3).toString("hex")}`;
    const images = [randomImage(repository, "x", 1, 512), randomImage(repository, "x", 1, 512)];
    for (const image of images) await pushWithRetries(a, image, newStats());
    for (let round = 0; round < 60; round++) {
      // Roles rotate so that every replica writes and every other one reads right after.
      const [writer, reader, lister] = round % 3 === 0 ? [a, b, c] : round % 3 === 1 ? [b, c, a] : [c, a, b];
      const image = images[round % 2]!;
      const put = await putManifest(writer, repository, "moving", image);
      assert.equal(put.status, 201);
      const tag = `t${round}`;
      assert.equal((await putManifest(writer, repository, tag, image)).status, 201);
      const got = await fetch(`${reader}/v2/${repository}/manifests/moving`, { headers: { Accept: OCI_MANIFEST } });
      assert.equal(got.headers.get("docker-content-digest"), image.manifestDigest, `round ${round}: the moved tag, read on another replica`);
      const tags = (await (await fetch(`${lister}/v2/${repository}/tags/list`)).json()) as { tags: string[] };
      assert.ok(tags.tags.includes(tag), `round ${round}: the new tag in another replica's tag list`);
      if (round % 10 === 0) {
        const fresh = `ha/new-${round}-${randomBytes(3).toString("hex")}`;
        await pushWithRetries(writer, randomImage(fresh, "v1", 1, 256), newStats());
        const catalog = (await (await fetch(`${reader}/v2/_catalog?n=10000`)).json()) as { repositories: string[] };
        assert.ok(catalog.repositories.includes(fresh), `round ${round}: a new repository in another replica's catalog`);
      }
      const deleted = await fetch(`${reader}/v2/${repository}/manifests/${tag}`, { method: "DELETE" });
      assert.equal(deleted.status, 202);
      const tagsAfter = (await (await fetch(`${writer}/v2/${repository}/tags/list`)).json()) as { tags: string[] };
      assert.ok(!tagsAfter.tags.includes(tag), `round ${round}: a tag deleted on one replica is gone from another's list`);
    }
  });

  it("a chunked upload continues on whichever replica each PATCH lands on, and the blob is intact", async () => {
    const repository = "ha/chunks";
    const bytes = randomBytes(6 * 256 * 1024 + 17);
    const started = await fetch(`${set.url}/v2/${repository}/blobs/uploads/`, { method: "POST" });
    assert.equal(started.status, 202);
    const served = [replicaOf(started)];
    let location = new URL(started.headers.get("location")!, set.url).href;
    const chunk = 256 * 1024;
    for (let offset = 0; offset < bytes.length; offset += chunk) {
      const part = bytes.subarray(offset, Math.min(offset + chunk, bytes.length));
      const patched = await fetch(location, {
        method: "PATCH",
        headers: { "Content-Type": "application/octet-stream", "Content-Range": `${offset}-${offset + part.length - 1}` },
        body: new Uint8Array(part),
      });
      assert.equal(patched.status, 202, `PATCH at ${offset}: ${await patched.clone().text()}`);
      served.push(replicaOf(patched));
      location = new URL(patched.headers.get("location")!, set.url).href;
    }
    const status = await fetch(location);
    assert.equal(status.status, 204);
    assert.equal(status.headers.get("range"), `0-${bytes.length - 1}`);
    served.push(replicaOf(status));
    const url = new URL(location);
    url.searchParams.set("digest", sha256(bytes));
    const done = await fetch(url, { method: "PUT" });
    assert.equal(done.status, 201, await done.clone().text());
    served.push(replicaOf(done));
    assert.deepEqual([...new Set(served)].sort(), ["r1", "r2", "r3"], `requests of the session landed on ${served.join(",")}`);
    const pulled = await fetch(`${set.url}/v2/${repository}/blobs/${sha256(bytes)}`);
    assert.equal(sha256(Buffer.from(await pulled.arrayBuffer())), sha256(bytes));
  });

  it("two writers to one session on two replicas: one append wins, the other is refused, the blob is the winner's bytes", async () => {
    const [a, b] = set.replicas.map((r) => r.url) as [string, string];
    for (let round = 0; round < 5; round++) {
      const started = await fetch(`${a}/v2/ha/writers/blobs/uploads/`, { method: "POST" });
      const path = started.headers.get("location")!;
      const bodies = [randomBytes(2 * 1024 * 1024), randomBytes(2 * 1024 * 1024)];
      const answers = await Promise.all(
        [a, b].map((base, i) =>
          fetch(new URL(path, base), {
            method: "PATCH",
            headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${bodies[i]!.length - 1}` },
            body: new Uint8Array(bodies[i]!),
          }),
        ),
      );
      const statuses = answers.map((r) => r.status);
      const winners = statuses.flatMap((s, i) => (s === 202 ? [i] : []));
      assert.equal(winners.length, 1, `round ${round}: exactly one PATCH at offset 0 succeeds (got ${statuses})`);
      assert.equal(statuses[1 - winners[0]!], 416, `round ${round}: the other is refused with 416`);
      const url = new URL(path, b);
      url.searchParams.set("digest", sha256(bodies[winners[0]!]!));
      const done = await fetch(url, { method: "PUT" });
      assert.equal(done.status, 201, `round ${round}: the session holds exactly the winner's bytes: ${await done.clone().text()}`);
    }
  });
});

describe("kill -9 of one replica during 20 concurrent pushes", { skip }, () => {
  let set: ReplicaSet;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    if (skip) return;
    set = await startReplicaSet({ s3: await sharedBlobStore(cleanups), postgresUrl: await metadataUrl(cleanups) });
  });
  after(async () => {
    await set?.close();
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("every push succeeds through the load balancer, every acknowledged image is intact, no session is wedged", async () => {
    const stats = newStats();
    const images = Array.from({ length: 20 }, (_, i) => randomImage(`ha/kill-${i}`, "v1", 3, 1024 * 1024 + i));
    const started = Date.now();
    let killedAt = 0;
    const acknowledged: Image[] = [];
    const lastSuccessAfterKill: number[] = [];
    const pushes = images.map(async (image) => {
      await pushWithRetries(set.url, image, stats, { chunkBytes: 128 * 1024 });
      acknowledged.push(image);
      lastSuccessAfterKill.push(Date.now());
    });
    // Kill once pushes are well under way (some sessions have bytes on the victim).
    await new Promise((resolve) => setTimeout(resolve, 700));
    killedAt = Date.now();
    await set.kill(1);
    const outcome = await Promise.allSettled(pushes);
    const finished = Date.now();
    const failed = outcome.filter((o) => o.status === "rejected").map((o) => String((o as PromiseRejectedResult).reason));
    assert.deepEqual(failed, [], "every client's push eventually succeeds");

    // Every acknowledged manifest and blob, pulled by digest through the balancer (the victim still down).
    let intact = 0;
    for (const image of acknowledged) if (await pulledIntact(set.url, image)) intact++;
    const failuresAfterKill = stats.failures.filter((t) => t >= killedAt);
    const recovery = failuresAfterKill.length ? Math.max(...failuresAfterKill) - killedAt : 0;

    // No session is wedged: each one a failure interrupted can still be continued (or was finished or
    // cancelled) within the lease's life; the victim's leases are broken at once (its pid is gone).
    let wedged = 0;
    for (const session of stats.interrupted) {
      const status = await fetch(session, { signal: AbortSignal.timeout(35_000) });
      if (status.status === 404) continue;
      if (status.status !== 204) {
        console.log(`wedged session: GET status ${status.status} ${await status.text()}`);
        wedged++;
        continue;
      }
      // No Content-Range: appended at the session's end, whatever the dead writer left there.
      const more = await fetch(session, {
        method: "PATCH",
        headers: { "Content-Type": "application/octet-stream" },
        body: new Uint8Array([1]),
        signal: AbortSignal.timeout(35_000),
      });
      if (more.status !== 202) {
        console.log(`wedged session: PATCH answered ${more.status} ${await more.clone().text()}`);
        wedged++;
      }
      await fetch(new URL(more.headers.get("location") ?? session, set.url), { method: "DELETE" });
    }
    const report = {
      pushes: images.length,
      acknowledged: acknowledged.length,
      intact,
      retries: stats.retries,
      failedRequests: stats.failures.length,
      interruptedSessions: stats.interrupted.size,
      wedged,
      lastFailureAfterKillMs: recovery,
      totalMs: finished - started,
      killedAfterMs: killedAt - started,
    };
    console.log(`HA kill -9 numbers: ${JSON.stringify(report)}`);
    assert.equal(acknowledged.length, 20);
    assert.equal(intact, acknowledged.length, "every acknowledged image is intact");
    assert.equal(wedged, 0, "no interrupted session is wedged");
    assert.ok(lastSuccessAfterKill.some((t) => t > killedAt), "pushes were still running when the replica died");

    // The victim comes back and serves what the others stored meanwhile.
    await set.restart(1);
    assert.ok(await pulledIntact(set.replicas[1]!.url, acknowledged[0]!));
  });
});

describe("garbage collection on one replica while the others take pushes", { skip }, () => {
  let set: ReplicaSet;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    if (skip) return;
    // A short grace period so that collections really delete while pushes run.
    set = await startReplicaSet({ s3: await sharedBlobStore(cleanups), postgresUrl: await metadataUrl(cleanups), env: { FERRY_GC__GRACE_PERIOD: "1s", FERRY_GC__UNTAGGED: "true" } });
  });
  after(async () => {
    await set?.close();
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  it("loses nothing a tag references, and collects what became garbage", async () => {
    const [collector, a, b] = set.replicas.map((r) => r.url) as [string, string, string];
    const stats = newStats();
    let stop = false;
    let collected = 0;
    let runs = 0;
    const gcLoop = (async () => {
      while (!stop) {
        const response = await fetch(`${collector}/ferry/v1/gc`, { method: "POST" });
        assert.equal(response.status, 200, await response.clone().text());
        const report = (await response.json()) as { last?: { report?: { blobsDeleted?: number }; blobsDeleted?: number } };
        collected += report.last?.report?.blobsDeleted ?? report.last?.blobsDeleted ?? 0;
        runs++;
      }
    })();
    const kept: Image[] = [];
    const pushers = [a, b].map(async (base, p) => {
      for (let i = 0; i < 12; i++) {
        const image = randomImage(`ha/gc-${p}`, `v${i}`, 2, 64 * 1024);
        await pushWithRetries(base, image, stats);
        kept.push(image);
        // Garbage: an image whose tag moves on at once (untagged, collectable after the grace period).
        const churn = randomImage(`ha/gc-${p}`, "churn", 1, 32 * 1024);
        await pushWithRetries(base, churn, stats);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    await Promise.all(pushers);
    // Let the last garbage age past the grace period and be collected.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    stop = true;
    await gcLoop;
    await fetch(`${collector}/ferry/v1/gc`, { method: "POST" });
    let intact = 0;
    for (const image of kept) if (await pulledIntact(set.url, image)) intact++;
    console.log(`HA gc numbers: ${JSON.stringify({ pushed: kept.length, intact, gcRuns: runs, blobsCollected: collected, pushRetries: stats.retries })}`);
    assert.equal(intact, kept.length, "every tagged image is intact");
    assert.ok(runs >= 2, "collections ran during the pushes");
    assert.ok(collected > 0, "the collector did delete garbage (the test is not vacuous)");
  });
});
