/**
 * Tag lists and the catalog are served from a cache of rendered responses.
 * Whatever the cache does, a client must see every change on its very next
 * request: a tag pushed or deleted here, by another connection to the same
 * SQLite file, or by another registry process on the same data directory;
 * pages with n/last stay exact; and the catalog stays filtered per caller.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process.js";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { manifest as manifestRecord } from "../metadata/meta-store-suite.js";
import { buildImage, type TestImage } from "../helpers/images.js";
import { OCI_MANIFEST, expectError, makeImage, pushManifest, req, uid } from "./client.js";
import { basic, bcryptHash, pushImageAs } from "../auth/util.js";

interface Listing {
  status: number;
  items: string[];
  next?: string;
}

/** One GET of a tag list or catalog page; `next` is the absolute rel="next" URL. */
async function list(url: string, field: "tags" | "repositories", authorization?: string): Promise<Listing> {
  const res = await req(url, authorization ? { headers: { authorization } } : {});
  if (res.status !== 200) {
    await res.arrayBuffer();
    return { status: res.status, items: [] };
  }
  const body = (await res.json()) as Record<string, unknown>;
  const items = body[field];
  assert.ok(Array.isArray(items), `${url}: "${field}" is an array`);
  const link = res.headers.get("link");
  const match = link ? /^<([^>]+)>;\s*rel="next"$/.exec(link) : null;
  if (link) assert.ok(match, `Link header ${link}`);
  return { status: 200, items: items as string[], next: match ? new URL(match[1]!, url).toString() : undefined };
}

/** Follows Link headers to the end; checks every page has at most n entries. */
async function walk(firstUrl: string, field: "tags" | "repositories", n?: number, authorization?: string): Promise<string[]> {
  const all: string[] = [];
  let url: string | undefined = firstUrl;
  for (let pages = 0; url; pages++) {
    assert.ok(pages < 1000, "Link loop");
    const page: Listing = await list(url, field, authorization);
    assert.equal(page.status, 200, url);
    if (n !== undefined) assert.ok(page.items.length <= n, `${url}: ${page.items.length} > n=${n}`);
    all.push(...page.items);
    url = page.next;
  }
  return all;
}

const tagsOf = async (base: string, repo: string): Promise<string[]> => (await list(`${base}/v2/${repo}/tags/list`, "tags")).items;
const catalogOf = async (base: string, authorization?: string): Promise<string[]> =>
  walk(`${base}/v2/_catalog`, "repositories", undefined, authorization);

/** Every way a client reads a tag list: whole, and walked with small pages. All must agree with `expected`. */
async function assertTags(base: string, repo: string, expected: string[]): Promise<void> {
  const sorted = [...expected].sort();
  assert.deepEqual(await tagsOf(base, repo), sorted, "whole list");
  for (const n of [1, 2, 3]) assert.deepEqual(await walk(`${base}/v2/${repo}/tags/list?n=${n}`, "tags", n), sorted, `walk n=${n}`);
  if (sorted.length > 1) {
    const rest = await list(`${base}/v2/${repo}/tags/list?n=100&last=${encodeURIComponent(sorted[0]!)}`, "tags");
    assert.deepEqual(rest.items, sorted.slice(1), "after the first tag");
  }
}

async function assertCatalogHas(base: string, present: string[], absent: string[]): Promise<void> {
  for (const catalog of [await catalogOf(base), await walk(`${base}/v2/_catalog?n=1`, "repositories", 1)]) {
    for (const repo of present) assert.ok(catalog.includes(repo), `${repo} in the catalog`);
    for (const repo of absent) assert.ok(!catalog.includes(repo), `${repo} not in the catalog`);
    assert.deepEqual(catalog, [...catalog].sort(), "sorted");
  }
}

describe("listing after changes through this registry", () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry();
  });
  after(async () => {
    await reg?.close();
  });

  it("a pushed tag is in the very next tag list, whole and in every page", async () => {
    const repo = uid("cache/push-");
    const image = await makeImage(reg.url, repo);
    for (const tag of ["b", "d", "f"]) await pushManifest(reg.url, repo, tag, image, OCI_MANIFEST);
    await assertTags(reg.url, repo, ["b", "d", "f"]); // fills the cache
    await assertTags(reg.url, repo, ["b", "d", "f"]); // served from it
    await pushManifest(reg.url, repo, "a", image, OCI_MANIFEST); // sorts first: every page shifts
    await assertTags(reg.url, repo, ["a", "b", "d", "f"]);
    await pushManifest(reg.url, repo, "e", image, OCI_MANIFEST);
    await assertTags(reg.url, repo, ["a", "b", "d", "e", "f"]);
  });

  it("a deleted tag, or every tag of a deleted manifest, is gone from the very next list", async () => {
    const repo = uid("cache/delete-");
    const first = await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    await pushManifest(reg.url, repo, "latest", first.bytes, OCI_MANIFEST);
    const second = await pushManifest(reg.url, repo, "v2", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertTags(reg.url, repo, ["latest", "v1", "v2"]);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/v2`, { method: "DELETE" })).status, 202);
    await assertTags(reg.url, repo, ["latest", "v1"]);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/${first.digest}`, { method: "DELETE" })).status, 202);
    await assertTags(reg.url, repo, []);
    // The repository still holds the untagged second manifest.
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/${second.digest}`, { method: "HEAD" })).status, 200);
  });

  it("a repository appears in the very next catalog when pushed and leaves it with its last manifest", async () => {
    const repo = uid("cache/catalog-");
    await assertCatalogHas(reg.url, [], [repo]);
    const pushed = await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertCatalogHas(reg.url, [repo], []);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/${pushed.digest}`, { method: "DELETE" })).status, 202);
    await assertCatalogHas(reg.url, [], [repo]);
  });

  it("an unknown repository stays NAME_UNKNOWN until its first push, then lists", async () => {
    const repo = uid("cache/unknown-");
    await expectError(await req(`${reg.url}/v2/${repo}/tags/list`), 404, "NAME_UNKNOWN");
    await expectError(await req(`${reg.url}/v2/${repo}/tags/list`), 404, "NAME_UNKNOWN");
    await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertTags(reg.url, repo, ["v1"]);
  });
});

describe("listing after changes by another connection to the same database", () => {
  let reg: TestRegistry;
  let other: SqliteMetaStore;
  const manifest = (seed: string) => manifestRecord(`sha256:${Buffer.from(seed).toString("hex").padEnd(64, "0").slice(0, 64)}`);
  before(async () => {
    reg = await startTestRegistry();
    other = new SqliteMetaStore(join(reg.dataDir, "metadata.db"));
  });
  after(async () => {
    await other?.close();
    await reg?.close();
  });

  it("sees tags and repositories written or deleted through the other connection on the next list", async () => {
    const repo = uid("cache/conn-");
    await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertTags(reg.url, repo, ["v1"]);
    await assertCatalogHas(reg.url, [repo], []);

    await other.putManifest(repo, manifest("a1"), "v2");
    await assertTags(reg.url, repo, ["v1", "v2"]);
    await other.deleteTag(repo, "v1");
    await assertTags(reg.url, repo, ["v2"]);

    const newRepo = uid("cache/conn-new-");
    await other.putManifest(newRepo, manifest("b2"), "x");
    await assertCatalogHas(reg.url, [repo, newRepo], []);
    await other.deleteManifest(newRepo, manifest("b2").digest);
    await assertCatalogHas(reg.url, [repo], [newRepo]);
  });
});

describe("listing after changes by another registry process on the same data directory", () => {
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

  it("each process lists what the other pushed or deleted, on the very next request", async () => {
    const repo = uid("cache/proc-");
    await pushManifest(reg.url, repo, "v1", await makeImage(reg.url, repo), OCI_MANIFEST);
    for (const base of [reg.url, otherUrl]) {
      await assertTags(base, repo, ["v1"]); // both caches warm
      await assertCatalogHas(base, [repo], []);
    }
    const image = await makeImage(otherUrl, repo);
    await pushManifest(otherUrl, repo, "v2", image, OCI_MANIFEST);
    await assertTags(reg.url, repo, ["v1", "v2"]);
    await assertTags(otherUrl, repo, ["v1", "v2"]);

    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/v1`, { method: "DELETE" })).status, 202);
    await assertTags(otherUrl, repo, ["v2"]);
    await assertTags(reg.url, repo, ["v2"]);

    const newRepo = uid("cache/proc-new-");
    const pushed = await pushManifest(otherUrl, newRepo, "x", await makeImage(otherUrl, newRepo), OCI_MANIFEST);
    await assertCatalogHas(reg.url, [repo, newRepo], []);
    assert.equal((await req(`${otherUrl}/v2/${newRepo}/manifests/${pushed.digest}`, { method: "DELETE" })).status, 202);
    await assertCatalogHas(reg.url, [repo], [newRepo]);
    assert.equal(otherProcess.stderr(), "", "the second process logged no errors");
  });
});

describe("listing under access control", () => {
  const PASSWORD = { admin: "admin-pw", alice: "alice-pw", bob: "bob-pw" } as const;
  const AUTH = {
    users: {
      admin: { passwordHash: bcryptHash(PASSWORD.admin) },
      alice: { passwordHash: bcryptHash(PASSWORD.alice) },
      bob: { passwordHash: bcryptHash(PASSWORD.bob) },
    },
    rules: [
      { repositories: ["alice/**"], users: ["alice"], actions: ["*"] },
      { repositories: ["bob/**"], users: ["bob"], actions: ["*"] },
    ],
    public: ["pub/*"],
    admins: { users: ["admin"] },
  };
  const admin = basic("admin", PASSWORD.admin);
  const alice = basic("alice", PASSWORD.alice);
  const bob = basic("bob", PASSWORD.bob);
  let reg: TestRegistry;
  let image: TestImage;
  before(async () => {
    reg = await startTestRegistry({ auth: AUTH });
    image = await buildImage({ layers: [{ "f.txt": "listing under auth\n" }] });
    for (const repo of ["alice/a1", "alice/a2", "bob/b1", "pub/p1", "secret/s1"]) await pushImageAs(reg.url, repo, "v1", image, admin);
  });
  after(async () => {
    await reg?.close();
  });

  it("each caller's catalog holds only what they may pull, however the calls interleave", async () => {
    const expected: Array<[string, string[]]> = [
      [alice, ["alice/a1", "alice/a2", "pub/p1"]],
      [bob, ["bob/b1", "pub/p1"]],
      [admin, ["alice/a1", "alice/a2", "bob/b1", "pub/p1", "secret/s1"]],
    ];
    for (let round = 0; round < 3; round++) {
      for (const [who, repos] of expected) {
        assert.deepEqual(await catalogOf(reg.url, who), repos);
        assert.deepEqual(await walk(`${reg.url}/v2/_catalog?n=1`, "repositories", 1, who), repos);
      }
    }
    await pushImageAs(reg.url, "alice/a0", "v1", image, alice);
    assert.deepEqual(await catalogOf(reg.url, alice), ["alice/a0", "alice/a1", "alice/a2", "pub/p1"]);
    assert.deepEqual(await catalogOf(reg.url, bob), ["bob/b1", "pub/p1"]);
  });

  it("a tag list someone else read is still refused to a caller without pull", async () => {
    assert.deepEqual((await list(`${reg.url}/v2/secret/s1/tags/list`, "tags", admin)).items, ["v1"]);
    assert.equal((await list(`${reg.url}/v2/secret/s1/tags/list`, "tags", admin)).status, 200);
    assert.equal((await list(`${reg.url}/v2/secret/s1/tags/list`, "tags", bob)).status, 403);
    assert.equal((await list(`${reg.url}/v2/secret/s1/tags/list`, "tags")).status, 401);
    assert.deepEqual((await list(`${reg.url}/v2/bob/b1/tags/list`, "tags", bob)).items, ["v1"]);
    assert.equal((await list(`${reg.url}/v2/bob/b1/tags/list`, "tags", alice)).status, 403);
  });
});
