/**
 * The pieces behind the listing cache: the token-checked LRU, and the SQLite
 * change token it relies on (it must change on every write seen from this
 * connection, including commits by another connection on the same file).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TokenCache } from "../../src/registry/listing-cache.js";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { manifest as manifestRecord } from "../metadata/meta-store-suite.js";

describe("TokenCache", () => {
  it("serves an entry only under the token it was stored with", () => {
    const cache = new TokenCache<string>(1000);
    assert.equal(cache.get("k", "t1"), undefined);
    cache.set("k", "t1", "v1", 10);
    assert.equal(cache.get("k", "t1"), "v1");
    assert.equal(cache.get("k", "t2"), undefined, "a new token empties the cache");
    assert.equal(cache.size, 0);
    assert.equal(cache.get("k", "t1"), undefined, "going back to an old token finds nothing either");
  });

  it("drops a result computed under a token that is no longer the newest", () => {
    const cache = new TokenCache<string>(1000);
    cache.get("k", "t1"); // request A reads t1, then queries...
    cache.get("other", "t2"); // ...meanwhile a write happened and request B saw t2
    cache.set("k", "t1", "stale", 10); // A's result must not be kept
    assert.equal(cache.get("k", "t2"), undefined);
    assert.equal(cache.get("k", "t1"), undefined);
  });

  it("stays within its byte budget, evicting the least recently used", () => {
    const cache = new TokenCache<string>(100);
    cache.get("a", "t");
    cache.set("a", "t", "A", 20);
    cache.set("b", "t", "B", 20);
    cache.set("c", "t", "C", 20);
    cache.set("d", "t", "D", 20);
    assert.equal(cache.get("a", "t"), "A"); // a is now the most recently used
    cache.set("e", "t", "E", 25); // 105 bytes: b goes
    assert.ok(cache.usedBytes <= 100, `used ${cache.usedBytes}`);
    assert.equal(cache.get("b", "t"), undefined);
    for (const [key, value] of [["a", "A"], ["c", "C"], ["d", "D"], ["e", "E"]] as const) assert.equal(cache.get(key, "t"), value);
    cache.set("c", "t", "C2", 20); // replacing an entry does not count it twice
    assert.equal(cache.usedBytes, 20 + 20 + 20 + 25);
    cache.set("huge", "t", "H", 60); // more than a quarter of the budget: not cached
    assert.equal(cache.get("huge", "t"), undefined);
    assert.equal(cache.get("a", "t"), "A");
  });
});

describe("TokenCache scopes", () => {
  it("a new token for one scope drops that scope's entries only", () => {
    const cache = new TokenCache<string>(1000);
    for (const scope of ["one", "two"]) {
      cache.get(`${scope}\nk`, "t1", scope);
      cache.set(`${scope}\nk`, "t1", scope, 10, scope);
    }
    assert.equal(cache.get("one\nk", "t2", "one"), undefined, "one moved on");
    assert.equal(cache.get("two\nk", "t1", "two"), "two", "two is untouched");
    assert.equal(cache.size, 1);
    assert.equal(cache.usedBytes, 10);
  });

  it("a result computed under a scope's older token is not stored", () => {
    const cache = new TokenCache<string>(1000);
    cache.get("k", "t1", "s");
    cache.get("other", "t2", "s");
    cache.set("k", "t1", "stale", 10, "s");
    assert.equal(cache.get("k", "t2", "s"), undefined);
  });
});

describe("SqliteMetaStore.changeToken", () => {
  let dir: string;
  let first: SqliteMetaStore;
  let second: SqliteMetaStore;
  const manifest = (n: number) => manifestRecord(`sha256:${n.toString(16).padStart(64, "0")}`);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ferry-token-"));
    first = new SqliteMetaStore(join(dir, "metadata.db"));
    second = new SqliteMetaStore(join(dir, "metadata.db"));
  });
  after(async () => {
    await first?.close();
    await second?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("stays the same while nothing is written, whatever is read", async () => {
    await first.putManifest("token/a", manifest(1), "v1");
    const token = await first.changeToken();
    await first.listTags("token/a", { limit: 10 });
    await first.listRepositories({ limit: 10 });
    await first.getTaggedManifest("token/a", "v1");
    await second.listTags("token/a", { limit: 10 });
    assert.equal(await first.changeToken(), token);
  });

  it("changes on every write through the same store", async () => {
    const seen = new Set([await first.changeToken()]);
    const writes: Array<() => Promise<unknown>> = [
      () => first.putManifest("token/a", manifest(2), "v2"),
      () => first.deleteTag("token/a", "v2"),
      () => first.putManifest("token/a", manifest(2), "v2"), // the same tag again
      () => first.deleteManifest("token/a", manifest(2).digest),
      () => first.linkBlob("token/b", `sha256:${"b".repeat(64)}`, 3),
      () => first.unlinkBlob("token/b", `sha256:${"b".repeat(64)}`),
    ];
    for (const write of writes) {
      await write();
      const token = await first.changeToken();
      assert.ok(!seen.has(token), `token ${token} after write ${seen.size} is new`);
      seen.add(token);
    }
  });

  it("changes when another connection to the same file commits", async () => {
    const before = await first.changeToken();
    await second.putManifest("token/c", manifest(3), "v1");
    const afterPut = await first.changeToken();
    assert.notEqual(afterPut, before);
    assert.deepEqual(await first.listTags("token/c", { limit: 10 }), ["v1"]);
    await second.deleteTag("token/c", "v1");
    assert.notEqual(await first.changeToken(), afterPut);
    assert.deepEqual(await first.listTags("token/c", { limit: 10 }), []);
  });
});
