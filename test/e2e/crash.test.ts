/**
 * Crash safety with real processes and SIGKILL (hardening defect 9 and the
 * standing crash test): whatever instant the registry dies at, after a
 * restart every acknowledged blob and manifest is intact, no blob's bytes
 * differ from its digest, an interrupted commit can be retried, and garbage
 * collection leaves no bytes that no metadata record names.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import { readBlobFiles, startServeProcess } from "../helpers/serve-process.js";

function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

function gcNow(data: string): string {
  const result = spawnSync(process.execPath, ["dist/src/cli/main.js", "gc", "--data", data, "--grace", "0s"], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", FERRY_LOG__LEVEL: "warn" },
  });
  assert.equal(result.status, 0, `ferry gc failed: ${result.stderr}`);
  return result.stdout;
}

/** Digests of every blob the metadata store knows. */
function trackedBlobs(data: string): Set<string> {
  const db = new Database(join(data, "metadata.db"), { readonly: true });
  try {
    return new Set(db.prepare<[], { digest: string }>("SELECT digest FROM blobs").all().map((row) => row.digest));
  } finally {
    db.close();
  }
}

async function assertNoUntrackedBytes(data: string): Promise<void> {
  const tracked = trackedBlobs(data);
  for (const { digest, bytes } of await readBlobFiles(data)) {
    assert.equal(sha256(bytes), digest, `blob file ${digest} holds other bytes`);
    assert.ok(tracked.has(digest), `blob file ${digest} is not named by any metadata record (orphan)`);
  }
}

test("a crash between moving a verified blob and linking it: the retried PUT answers 201 and GC leaves no orphan", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-crash-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const crashing = await startServeProcess({ data, env: { FERRYTEST_CRASH_POINT: "commit-after-move" } });
  const bytes = randomBytes(300_000);
  const digest = sha256(bytes);
  const start = await fetch(`${crashing.url}/v2/crash/a/blobs/uploads/`, { method: "POST" });
  const location = start.headers.get("location")!;
  const patch = await fetch(new URL(location, crashing.url), { method: "PATCH", body: new Uint8Array(bytes) });
  assert.equal(patch.status, 202);
  const complete = `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
  await assert.rejects(fetch(new URL(complete, crashing.url), { method: "PUT" }), "the registry died mid-commit");
  await crashing.kill();

  const restarted = await startServeProcess({ data, port: crashing.port });
  t.after(() => restarted.stop());
  const retry = await fetch(new URL(complete, restarted.url), { method: "PUT" });
  assert.equal(retry.status, 201, "the client's retried PUT completes the interrupted commit");
  assert.equal(retry.headers.get("docker-content-digest"), digest);
  const pulled = Buffer.from(await (await fetch(`${restarted.url}/v2/crash/a/blobs/${digest}`)).arrayBuffer());
  assert.equal(sha256(pulled), digest);
  const again = await fetch(new URL(complete, restarted.url), { method: "PUT" });
  assert.equal(again.status, 404, "the session is gone once completed");
  gcNow(data);
  await assertNoUntrackedBytes(data);
});

test("a crash mid-commit of a monolithic push leaves bytes that garbage collection removes", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-crash-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const crashing = await startServeProcess({ data, env: { FERRYTEST_CRASH_POINT: "commit-after-move" } });
  const bytes = randomBytes(100_000);
  await assert.rejects(fetch(`${crashing.url}/v2/crash/b/blobs/uploads/?digest=${sha256(bytes)}`, { method: "POST", body: new Uint8Array(bytes) }));
  await crashing.kill();
  assert.equal((await readBlobFiles(data)).length, 1, "the verified bytes were moved before the crash");
  const restarted = await startServeProcess({ data });
  t.after(() => restarted.stop());
  // Never acknowledged, so never visible.
  assert.equal((await fetch(`${restarted.url}/v2/crash/b/blobs/${sha256(bytes)}`)).status, 404);
  gcNow(data);
  assert.equal((await readBlobFiles(data)).length, 0, "garbage collection removed the bytes no record names");
});

interface Acknowledged {
  blobs: Array<{ repo: string; digest: string }>;
  manifests: Array<{ repo: string; tag: string; bytes: Buffer; blobs: string[] }>;
}

/** One client pushing images in a loop until the registry goes away; records what was acknowledged. */
async function pushUntilDead(base: string, client: number, acked: Acknowledged): Promise<void> {
  for (let round = 0; ; round++) {
    const repo = `crash/c${client}`;
    try {
      const layers = [randomBytes(20_000 + Math.floor(Math.random() * 400_000)), Buffer.from(`shared layer ${round % 3}`)];
      const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, round, client }));
      for (const [index, bytes] of [config, ...layers].entries()) {
        const digest = sha256(bytes);
        let status: number;
        if (index === 1 && round % 2 === 0) {
          // Chunked: POST, two PATCHes, PUT.
          const started = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: "POST" });
          const location = new URL(started.headers.get("location")!, base);
          const half = Math.floor(bytes.length / 2);
          for (const [from, to] of [[0, half], [half, bytes.length]] as const) {
            const patched = await fetch(location, {
              method: "PATCH",
              headers: { "Content-Range": `${from}-${to - 1}` },
              body: new Uint8Array(bytes.subarray(from, to)),
            });
            await patched.arrayBuffer();
          }
          location.searchParams.set("digest", digest);
          const put = await fetch(location, { method: "PUT" });
          status = put.status;
          await put.arrayBuffer();
        } else {
          const put = await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(bytes) });
          status = put.status;
          await put.arrayBuffer();
        }
        if (status === 201) acked.blobs.push({ repo, digest });
      }
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
          layers: layers.map((bytes) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(bytes), size: bytes.length })),
        }),
      );
      const tag = `r${round}`;
      const put = await fetch(`${base}/v2/${repo}/manifests/${tag}`, {
        method: "PUT",
        headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
        body: new Uint8Array(manifest),
      });
      await put.arrayBuffer();
      if (put.status === 201) acked.manifests.push({ repo, tag, bytes: manifest, blobs: [config, ...layers].map((b) => sha256(b)) });
    } catch {
      return; // the registry is gone
    }
  }
}

test("kill -9 during concurrent pushes: everything acknowledged survives, nothing is corrupt, GC leaves no orphan", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-crash-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  for (let run = 0; run < 2; run++) {
    const server = await startServeProcess({ data });
    const acked: Acknowledged = { blobs: [], manifests: [] };
    const clients = Array.from({ length: 6 }, (_, client) => pushUntilDead(server.url, client + run * 10, acked));
    await new Promise((resolve) => setTimeout(resolve, 1_200 + Math.random() * 800));
    await server.kill();
    await Promise.all(clients);
    assert.ok(acked.manifests.length > 0, "some pushes were acknowledged before the crash");

    const restarted = await startServeProcess({ data });
    try {
      for (const { repo, digest } of acked.blobs) {
        const response = await fetch(`${restarted.url}/v2/${repo}/blobs/${digest}`);
        assert.equal(response.status, 200, `acknowledged blob ${digest} in ${repo}`);
        assert.equal(sha256(Buffer.from(await response.arrayBuffer())), digest);
      }
      for (const { repo, tag, bytes } of acked.manifests) {
        const response = await fetch(`${restarted.url}/v2/${repo}/manifests/${tag}`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
        assert.equal(response.status, 200, `acknowledged manifest ${repo}:${tag}`);
        assert.deepEqual(Buffer.from(await response.arrayBuffer()), bytes);
      }
      gcNow(data);
      await assertNoUntrackedBytes(data);
      // Blobs that acknowledged manifests reference survive garbage collection.
      for (const { repo, blobs } of acked.manifests) {
        for (const digest of blobs) assert.equal((await fetch(`${restarted.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" })).status, 200);
      }
      t.diagnostic(`run ${run}: ${acked.blobs.length} blobs and ${acked.manifests.length} manifests acknowledged before SIGKILL`);
    } finally {
      await restarted.stop();
    }
  }
});
