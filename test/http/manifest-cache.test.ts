/**
 * Manifest GET and HEAD are served from an in-memory cache of hot manifests.
 * Whatever the cache does, a client must get what the registry holds on its
 * very next request: a tag moved, a tag or manifest deleted, a tag pushed
 * after a miss — through this registry, another connection to the same SQLite
 * file, or another registry process on the same data directory. Access
 * control still applies to every cached answer.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process.js";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { manifest as manifestRecord } from "../metadata/meta-store-suite.js";
import { OCI_MANIFEST, expectError, makeImage, pushManifest, req, sha256, uid } from "./client.js";
import { basic, bcryptHash, pushImageAs } from "../auth/util.js";
import { buildImage } from "../helpers/images.js";

/** GET and HEAD of a manifest, each asked twice (the second from the cache), all four must agree. */
async function assertManifest(base: string, repo: string, reference: string, expected: Buffer | null, authorization?: string): Promise<void> {
  const headers: Record<string, string> = { accept: OCI_MANIFEST };
  if (authorization) headers.authorization = authorization;
  for (let round = 0; round < 2; round++) {
    const get = await req(`${base}/v2/${repo}/manifests/${reference}`, { headers });
    const head = await req(`${base}/v2/${repo}/manifests/${reference}`, { method: "HEAD", headers });
    if (expected === null) {
      await expectError(get, 404, "MANIFEST_UNKNOWN");
      assert.equal(head.status, 404, `HEAD ${repo}:${reference}`);
      continue;
    }
    assert.equal(get.status, 200, `GET ${repo}:${reference}`);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), expected, `GET ${repo}:${reference} body (round ${round})`);
    assert.equal(get.headers.get("docker-content-digest"), sha256(expected));
    assert.equal(head.status, 200, `HEAD ${repo}:${reference}`);
    assert.equal(head.headers.get("docker-content-digest"), sha256(expected));
    assert.equal(head.headers.get("content-length"), String(expected.length));
  }
}

describe("manifest GET after changes through this registry", () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry();
  });
  after(async () => {
    await reg?.close();
  });

  it("a tag moved to another manifest answers the new one on the very next GET and HEAD", async () => {
    const repo = uid("mcache/move-");
    const first = await pushManifest(reg.url, repo, "latest", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertManifest(reg.url, repo, "latest", first.bytes);
    const second = await pushManifest(reg.url, repo, "latest", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertManifest(reg.url, repo, "latest", second.bytes);
    await assertManifest(reg.url, repo, first.digest, first.bytes);
  });

  it("a deleted tag or manifest is unknown on the very next request", async () => {
    const repo = uid("mcache/delete-");
    const pushed = await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    await pushManifest(reg.url, repo, "v2", pushed.bytes, OCI_MANIFEST);
    await assertManifest(reg.url, repo, "v1", pushed.bytes);
    await assertManifest(reg.url, repo, pushed.digest, pushed.bytes);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/v1`, { method: "DELETE" })).status, 202);
    await assertManifest(reg.url, repo, "v1", null);
    await assertManifest(reg.url, repo, "v2", pushed.bytes);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/${pushed.digest}`, { method: "DELETE" })).status, 202);
    await assertManifest(reg.url, repo, "v2", null);
    await assertManifest(reg.url, repo, pushed.digest, null);
  });

  it("a tag asked for before it existed is there on the first GET after its push (a remembered miss ends with the push)", async () => {
    const repo = uid("mcache/miss-");
    const image = await makeImage(reg.url, repo);
    await assertManifest(reg.url, repo, "soon", null);
    const pushed = await pushManifest(reg.url, repo, "soon", image, OCI_MANIFEST);
    await assertManifest(reg.url, repo, "soon", pushed.bytes);
  });

  it("the same tag in two repositories, or a digest in a repository that lacks it, never crosses over", async () => {
    const a = uid("mcache/a-");
    const b = uid("mcache/b-");
    const inA = await pushManifest(reg.url, a, "t", await makeImage(reg.url, a), OCI_MANIFEST);
    const inB = await pushManifest(reg.url, b, "t", await makeImage(reg.url, b), OCI_MANIFEST);
    await assertManifest(reg.url, a, "t", inA.bytes);
    await assertManifest(reg.url, b, "t", inB.bytes);
    await assertManifest(reg.url, b, inA.digest, null);
  });
});

describe("manifest GET after changes by another connection to the same database", () => {
  let reg: TestRegistry;
  let other: SqliteMetaStore;
  before(async () => {
    reg = await startTestRegistry();
    other = new SqliteMetaStore(join(reg.dataDir, "metadata.db"));
  });
  after(async () => {
    await other?.close();
    await reg?.close();
  });

  it("sees a tag moved or deleted through the other connection on the next GET", async () => {
    const repo = uid("mcache/conn-");
    const pushed = await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertManifest(reg.url, repo, "v1", pushed.bytes);
    const written = manifestRecord(`sha256:${"a1".padEnd(64, "0")}`);
    await other.putManifest(repo, written, "v1");
    // Written directly, so its digest is made up: compare the bytes the other connection stored.
    const res = await req(`${reg.url}/v2/${repo}/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), written.digest);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), written.content);
    await other.deleteTag(repo, "v1");
    await assertManifest(reg.url, repo, "v1", null);
  });
});

describe("manifest GET after changes by another registry process on the same data directory", () => {
  let reg: TestRegistry;
  let otherProcess: ServeProcess;
  let otherUrl: string;
  before(async () => {
    reg = await startTestRegistry();
    otherProcess = await startServeProcess({ data: reg.dataDir, env: { FERRY_LOG__LEVEL: "error" } });
    otherUrl = otherProcess.url;
  });
  after(async () => {
    await otherProcess?.stop();
    await reg?.close();
  });

  it("a tag pushed, moved or deleted through one process is what the other serves next", async () => {
    const repo = uid("mcache/proc-");
    const first = await pushManifest(reg.url, repo, "latest", await makeImage(reg.url, repo), OCI_MANIFEST);
    for (const base of [reg.url, otherUrl]) await assertManifest(base, repo, "latest", first.bytes); // both caches warm
    const second = await pushManifest(otherUrl, repo, "latest", await makeImage(otherUrl, repo), OCI_MANIFEST);
    await assertManifest(reg.url, repo, "latest", second.bytes);
    await assertManifest(otherUrl, repo, "latest", second.bytes);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/latest`, { method: "DELETE" })).status, 202);
    await assertManifest(otherUrl, repo, "latest", null);
    await assertManifest(reg.url, repo, "latest", null);
    assert.equal(otherProcess.stderr(), "", "the second process logged no errors");
  });
});

describe("cached manifests under access control", () => {
  const PASSWORD = { admin: "admin-pw", bob: "bob-pw" } as const;
  const AUTH = {
    users: { admin: { passwordHash: bcryptHash(PASSWORD.admin) }, bob: { passwordHash: bcryptHash(PASSWORD.bob) } },
    rules: [{ repositories: ["bob/**"], users: ["bob"], actions: ["*"] }],
    admins: { users: ["admin"] },
  };
  const admin = basic("admin", PASSWORD.admin);
  const bob = basic("bob", PASSWORD.bob);
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry({ auth: AUTH });
  });
  after(async () => {
    await reg?.close();
  });

  it("a manifest someone allowed just read is still refused to a caller without pull", async () => {
    const image = await buildImage({ layers: [{ "f.txt": "cached under auth\n" }] });
    await pushImageAs(reg.url, "secret/s1", "v1", image, admin);
    for (let i = 0; i < 2; i++) {
      const ok = await req(`${reg.url}/v2/secret/s1/manifests/v1`, { headers: { accept: OCI_MANIFEST, authorization: admin } });
      assert.equal(ok.status, 200);
      await ok.arrayBuffer();
    }
    await expectError(await req(`${reg.url}/v2/secret/s1/manifests/v1`, { headers: { accept: OCI_MANIFEST, authorization: bob } }), 403);
    await expectError(await req(`${reg.url}/v2/secret/s1/manifests/v1`, { headers: { accept: OCI_MANIFEST } }), 401);
  });
});
