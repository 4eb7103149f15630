/**
 * The contract every MetaStore driver must keep (SQLite today, PostgreSQL next).
 */
import { describe, test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { MissingReferencesError, type ManifestWrite, type MetaStore } from "../../src/metadata/meta-store.js";

const D = (n: number) => `sha256:${n.toString(16).padStart(64, "0")}`;

/** A minimal manifest record for metadata tests (no references). */
export function manifest(digest: string, extra: Partial<ManifestWrite> = {}): ManifestWrite {
  return {
    digest,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    content: Buffer.from(`{"m":"${digest}"}`),
    subjectDigest: null,
    artifactType: null,
    annotations: null,
    blobs: [],
    manifests: [],
    foreignLayers: [],
    ...extra,
  };
}

export function metaStoreSuite(name: string, create: () => Promise<{ meta: MetaStore; cleanup: () => Promise<void> }>): void {
  describe(`MetaStore contract: ${name}`, () => {
    let meta: MetaStore;
    let cleanup: () => Promise<void>;
    beforeEach(async () => {
      ({ meta, cleanup } = await create());
    });
    afterEach(async () => {
      await meta.close();
      await cleanup();
    });

    test("a blob is visible only in repositories it is linked into", async () => {
      await meta.linkBlob("a/one", D(1), 10);
      assert.deepEqual(await meta.linkedBlob("a/one", D(1)), { size: 10 });
      assert.equal(await meta.linkedBlob("a/two", D(1)), null);
      assert.equal(await meta.blobSize(D(1)), 10);
      assert.deepEqual(await meta.repositoriesWithBlob(D(1), 5), ["a/one"]);
      assert.equal(await meta.linkedBlob("a/one", D(2)), null);
      assert.equal(await meta.unlinkBlob("a/one", D(1)), true);
      assert.equal(await meta.unlinkBlob("a/one", D(1)), false);
      assert.equal(await meta.linkedBlob("a/one", D(1)), null);
    });

    test("manifests are stored byte for byte, tagged, re-tagged and untagged", async () => {
      const m1 = manifest(D(11));
      await meta.putManifest("r", m1, "latest");
      await meta.putManifest("r", m1, "latest"); // idempotent
      const got = await meta.getTaggedManifest("r", "latest");
      assert.ok(got && got.content.equals(m1.content));
      assert.equal(got.digest, D(11));
      await meta.putManifest("r", manifest(D(12)), "latest");
      assert.equal((await meta.getTaggedManifest("r", "latest"))?.digest, D(12));
      assert.ok(await meta.getManifest("r", D(11)), "the old manifest stays reachable by digest");
      assert.equal(await meta.deleteTag("r", "latest"), true);
      assert.equal(await meta.getTaggedManifest("r", "latest"), null);
      assert.equal(await meta.deleteTag("r", "latest"), false);
    });

    test("several tags are set with the manifest in one write (tag query parameters), and none when it is refused", async () => {
      assert.deepEqual((await meta.putManifest("multi", manifest(D(13)), "moved")).previous, new Map([["moved", null]]), "a new repository, a new tag");
      // What each tag named before (the audit log's "before"), read by the write itself.
      const { previous } = await meta.putManifest("multi", manifest(D(14)), ["a", "b", "moved"]);
      assert.deepEqual(previous, new Map([["a", null], ["b", null], ["moved", D(13)]]));
      assert.deepEqual((await meta.putManifest("multi", manifest(D(14)), "a")).previous, new Map([["a", D(14)]]), "re-tagging the same manifest");
      for (const tag of ["a", "b", "moved"]) assert.equal((await meta.getTaggedManifest("multi", tag))?.digest, D(14), tag);
      await meta.putManifest("multi", manifest(D(15)), []);
      assert.ok(await meta.getManifest("multi", D(15)));
      assert.deepEqual(await meta.listTags("multi", { limit: 10 }), ["a", "b", "moved"]);
      await assert.rejects(meta.putManifest("multi", manifest(D(16), { blobs: [D(160)] }), ["a", "c"]), MissingReferencesError);
      assert.equal((await meta.getTaggedManifest("multi", "a"))?.digest, D(14), "a refused write moves no tag");
      assert.equal(await meta.getTaggedManifest("multi", "c"), null);
    });

    test("a manifest whose blobs vanished before commit (GC race) is refused and nothing is stored", async () => {
      await meta.linkBlob("race", D(70), 1);
      await assert.rejects(meta.putManifest("race", manifest(D(71), { blobs: [D(70), D(72)] }), "t"), (error: unknown) => {
        assert.ok(error instanceof MissingReferencesError);
        assert.deepEqual(error.digests, [D(72)]);
        return true;
      });
      assert.equal(await meta.getManifest("race", D(71)), null);
      assert.equal(await meta.getTaggedManifest("race", "t"), null);
      await assert.rejects(meta.putManifest("race", manifest(D(73), { manifests: [D(71)] })), MissingReferencesError);
    });

    test("deleting a manifest removes its tags and the foreign marks only it used", async () => {
      const foreign = { digest: D(30), mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", size: 5, urls: ["https://example.com/x"], verification: "unverified" as const, verifiedAt: null, verificationDetail: null };
      await meta.putManifest("f", manifest(D(21), { foreignLayers: [foreign] }), "a");
      await meta.putManifest("f", manifest(D(22), { foreignLayers: [foreign] }), "b");
      const mark = await meta.getForeignLayer("f", D(30));
      assert.deepEqual(mark?.urls, ["https://example.com/x"]);
      assert.deepEqual([...(mark?.manifests ?? [])].sort(), [D(21), D(22)]);
      assert.equal(await meta.deleteManifest("f", D(21)), true);
      assert.equal(await meta.getTaggedManifest("f", "a"), null);
      assert.ok(await meta.getForeignLayer("f", D(30)), "still used by the other manifest");
      await meta.deleteManifest("f", D(22));
      assert.equal(await meta.getForeignLayer("f", D(30)), null);
      assert.equal(await meta.deleteManifest("f", D(22)), false);
    });

    // Foreign-layer bookkeeping (federation): sources per manifest, proofs, the proxy cache index.
    const foreignLayer = (digest: string, urls: string[], extra: Record<string, unknown> = {}) => ({
      digest,
      mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      size: 5,
      urls,
      verification: "unverified" as const,
      verifiedAt: null,
      verificationDetail: null,
      ...extra,
    });

    test("a foreign layer's URLs are the union over its manifests; each URL leaves with the last manifest naming it", async () => {
      const [u1, u2, u3] = ["https://one.example/l", "https://two.example/l", "https://three.example/l"];
      await meta.putManifest("u", manifest(D(81), { foreignLayers: [foreignLayer(D(80), [u1, u3])] }), "a");
      await meta.putManifest("u", manifest(D(82), { foreignLayers: [foreignLayer(D(80), [u2])] }), "b");
      assert.deepEqual((await meta.getForeignLayer("u", D(80)))?.urls, [u1, u2, u3], "union, not last push wins");
      assert.deepEqual((await meta.listForeignLayers("u"))[0]?.urls, [u1, u2, u3]);
      assert.deepEqual((await meta.listForeignLayers())[0]?.urls, [u1, u2, u3]);
      await meta.putManifest("other", manifest(D(83), { foreignLayers: [foreignLayer(D(80), [u3])] }));
      assert.deepEqual((await meta.getForeignLayer("other", D(80)))?.urls, [u3], "per repository");
      await meta.deleteManifest("u", D(81));
      assert.deepEqual((await meta.getForeignLayer("u", D(80)))?.urls, [u2], "u1 and u3 left with the manifest that named them");
      assert.deepEqual((await meta.getForeignLayer("other", D(80)))?.urls, [u3], "another repository is untouched");
      await meta.deleteManifest("u", D(82));
      assert.equal(await meta.getForeignLayer("u", D(80)), null);
    });

    test("a proof is kept only for a URL the repository names for the layer, and leaves with it", async () => {
      const [u1, u2] = ["https://one.example/p", "https://two.example/p"];
      await meta.putManifest("pr", manifest(D(91), { foreignLayers: [foreignLayer(D(90), [u1], { provenUrls: [u1, u2] })] }));
      assert.deepEqual((await meta.getForeignLayer("pr", D(90)))?.provenUrls, [u1], "u2 is not the repository's URL");
      await meta.putManifest("pr", manifest(D(92), { foreignLayers: [foreignLayer(D(90), [u2])] }));
      assert.equal(await meta.recordForeignProof("pr", D(90), u2, 1), true);
      assert.equal(await meta.recordForeignProof("pr", D(90), "https://elsewhere.example/p", 1), false);
      assert.equal(await meta.recordForeignProof("nobody", D(90), u2, 1), false, "another repository gets no proof from ours");
      assert.deepEqual([...((await meta.getForeignLayer("pr", D(90)))?.provenUrls ?? [])].sort(), [u1, u2]);
      await meta.deleteManifest("pr", D(91));
      assert.deepEqual((await meta.getForeignLayer("pr", D(90)))?.provenUrls, [u2], "the proof of u1 left with u1");
    });

    test("verified through a URL that left, a mark is unverified again", async () => {
      const [u1, u2] = ["https://one.example/v", "https://two.example/v"];
      const detail = { ok: true, mode: "fetch", attempts: [{ url: u1, ok: true, answer: "ok" }] };
      await meta.putManifest("ver", manifest(D(101), { foreignLayers: [foreignLayer(D(100), [u1], { verification: "verified", verifiedAt: 5, verificationDetail: detail })] }));
      await meta.putManifest("ver", manifest(D(102), { foreignLayers: [foreignLayer(D(100), [u2])] }));
      assert.equal((await meta.getForeignLayer("ver", D(100)))?.verification, "verified");
      await meta.deleteManifest("ver", D(101));
      assert.equal((await meta.getForeignLayer("ver", D(100)))?.verification, "unverified");
    });

    test("the foreign layers of a manifest include those of an index's children", async () => {
      await meta.putManifest("ix", manifest(D(111), { foreignLayers: [foreignLayer(D(110), ["https://x.example/a"])] }));
      await meta.putManifest("ix", manifest(D(112), { manifests: [D(111)] }));
      assert.deepEqual((await meta.foreignLayersOfManifest("ix", D(112))).map((m) => m.digest), [D(110)]);
      assert.deepEqual((await meta.foreignLayersOfManifest("ix", D(111))).map((m) => m.digest), [D(110)]);
      assert.deepEqual(await meta.foreignLayersOfManifest("ix", D(113)), []);
    });

    test("the proxy cache index: LRU eviction beyond the budget and after expiry, never a pinned entry", async () => {
      await meta.putForeignCacheEntry({ digest: D(120), size: 10, fetchedAt: 100, pinned: false });
      await meta.putForeignCacheEntry({ digest: D(121), size: 10, fetchedAt: 200, pinned: false });
      await meta.putForeignCacheEntry({ digest: D(122), size: 1000, fetchedAt: 50, pinned: true });
      await meta.touchForeignCacheEntry(D(120), 300); // 120 is now more recently used than 121
      assert.deepEqual(await meta.evictForeignCache(1000, 0), [], "within budget (pinned bytes do not count)");
      await meta.putForeignCacheEntry({ digest: D(123), size: 10, fetchedAt: 400, pinned: false });
      assert.deepEqual(await meta.evictForeignCache(20, 0), [D(121)], "the least recently used goes first");
      assert.equal(await meta.getForeignCacheEntry(D(121)), null);
      assert.deepEqual(await meta.evictForeignCache(1000, 350), [D(120)], "fetched before the expiry cut-off");
      assert.deepEqual(await meta.evictForeignCache(0, Number.MAX_SAFE_INTEGER), [D(123)], "everything unpinned");
      assert.equal((await meta.getForeignCacheEntry(D(122)))?.pinned, true, "pinned entries stay");
      await meta.putForeignCacheEntry({ digest: D(122), size: 1000, fetchedAt: 60, pinned: false });
      assert.equal((await meta.getForeignCacheEntry(D(122)))?.pinned, true, "an unpinned re-fetch does not lower a pin");
      assert.deepEqual((await meta.listForeignCache()).map((e) => e.digest), [D(122)]);
    });

    test("a pin is released when no repository references the layer any more", async () => {
      await meta.putManifest("pin", manifest(D(131), { foreignLayers: [foreignLayer(D(130), ["https://x.example/pin"])] }));
      await meta.putForeignCacheEntry({ digest: D(130), size: 5, fetchedAt: 1, pinned: true });
      await meta.deleteManifest("pin", D(131));
      assert.equal((await meta.getForeignCacheEntry(D(130)))?.pinned, false);
      assert.deepEqual(await meta.evictForeignCache(1000, 2), [D(130)], "then it expires like any entry");
    });

    test("tags and repositories list in lexical order, paged by `after`", async () => {
      for (const tag of ["b", "a", "c", "B"]) await meta.putManifest("p", manifest(D(40)), tag);
      assert.deepEqual(await meta.listTags("p", { limit: 10 }), ["B", "a", "b", "c"]);
      assert.deepEqual(await meta.listTags("p", { limit: 2, after: "a" }), ["b", "c"]);
      for (const repo of ["z/z", "a/a", "m"]) await meta.putManifest(repo, manifest(D(41)));
      await meta.linkBlob("only-blobs", D(42), 1);
      assert.deepEqual(await meta.listRepositories({ limit: 10 }), ["a/a", "m", "p", "z/z"], "repositories without manifests are not in the catalog");
      assert.deepEqual(await meta.listRepositories({ limit: 1, after: "m" }), ["p"]);
      assert.equal(await meta.repositoryExists("only-blobs"), true);
      assert.equal(await meta.repositoryExists("nothing"), false);
    });

    test("referrers are the manifests whose subject is the digest", async () => {
      await meta.putManifest("s", manifest(D(50)));
      await meta.putManifest("s", manifest(D(51), { subjectDigest: D(50), artifactType: "application/x-sig", annotations: { k: "v" } }));
      await meta.putManifest("s", manifest(D(52), { subjectDigest: D(99) }));
      const referrers = await meta.listReferrers("s", D(50));
      assert.equal(referrers.length, 1);
      assert.deepEqual(referrers[0], {
        digest: D(51),
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        size: Buffer.from(`{"m":"${D(51)}"}`).length,
        artifactType: "application/x-sig",
        annotations: { k: "v" },
      });
      assert.deepEqual(await meta.listReferrers("other", D(50)), []);
    });

    test("upload records survive until deleted and can be found when stale", async () => {
      await meta.createUpload({ id: "u1", repository: "r", createdAt: 1000, updatedAt: 1000 });
      await meta.createUpload({ id: "u2", repository: "r", createdAt: 1000, updatedAt: 5000 });
      await meta.touchUpload("u1", 2000);
      assert.equal((await meta.getUpload("u1"))?.updatedAt, 2000);
      assert.deepEqual((await meta.staleUploads(3000)).map((u) => u.id), ["u1"]);
      await meta.deleteUpload("u1");
      assert.equal(await meta.getUpload("u1"), null);
    });

    test("a lease has one holder until released or expired, and only its holder renews or releases it", async () => {
      assert.equal(await meta.acquireLease("upload:x", "h1", 60_000), true);
      assert.equal(await meta.acquireLease("upload:x", "h2", 60_000), false, "held by h1");
      assert.equal(await meta.acquireLease("upload:x", "h1", 60_000), true, "its holder re-acquires (extends)");
      assert.equal((await meta.leaseHolder("upload:x"))?.holder, "h1");
      assert.equal(await meta.renewLease("upload:x", "h2", 60_000), false, "a non-holder cannot renew");
      await meta.releaseLease("upload:x", "h2");
      assert.equal(await meta.acquireLease("upload:x", "h2", 60_000), false, "a non-holder cannot release");
      await meta.releaseLease("upload:x", "h1");
      assert.equal(await meta.leaseHolder("upload:x"), null, "released");
      assert.equal(await meta.acquireLease("upload:x", "h2", 1), true, "free after release");
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.ok((await meta.leaseHolder("upload:x"))!.expiresAt <= Date.now(), "expired, but never released");
      assert.equal(await meta.renewLease("upload:x", "h2", 60_000), true, "an expired lease nobody took can still be renewed by its holder");
      await meta.releaseLease("upload:x", "h2");
      assert.equal(await meta.acquireLease("upload:x", "h3", 1), true);
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(await meta.acquireLease("upload:x", "h4", 60_000), true, "an expired lease can be taken");
      assert.equal(await meta.renewLease("upload:x", "h3", 60_000), false, "and its old holder has lost it");
      assert.equal(await meta.acquireLease("upload:y", "h3", 60_000), true, "leases are per key");
    });

    test("an interrupted commit is remembered on its session and completed in one step", async () => {
      await meta.createUpload({ id: "u1", repository: "a/one", createdAt: 1, updatedAt: 1 });
      assert.equal((await meta.getUpload("u1"))?.committingDigest ?? null, null);
      assert.deepEqual(await meta.untrackedBlobs([D(7), D(8)]), [D(7), D(8)]);
      await meta.markUploadCommitting("u1", D(7));
      assert.equal((await meta.getUpload("u1"))?.committingDigest, D(7));
      assert.deepEqual((await meta.committingUploads()).map((u) => u.id), ["u1"]);
      assert.deepEqual(await meta.untrackedBlobs([D(7), D(8)]), [D(8)], "bytes a session is committing to are not untracked");
      await meta.completeUpload("u1", "a/one", D(7), 70);
      assert.equal(await meta.getUpload("u1"), null);
      assert.deepEqual(await meta.linkedBlob("a/one", D(7)), { size: 70 });
      assert.deepEqual(await meta.committingUploads(), []);
      assert.deepEqual(await meta.untrackedBlobs([D(7), D(8)]), [D(8)], "a known blob is not untracked");
    });

    test("garbage collection keeps referenced and recent blobs and returns orphans", async () => {
      const now = Date.now();
      await meta.linkBlob("g", D(60), 1); // referenced below
      await meta.linkBlob("g", D(61), 1); // unreferenced
      await meta.putManifest("g", manifest(D(62), { blobs: [D(60)] }), "t");
      const young = await meta.collectGarbage({ olderThan: now - 60_000, untagged: false });
      assert.deepEqual(young.orphanBlobs, [], "nothing is older than the grace period");
      const plan = await meta.collectGarbage({ olderThan: now + 60_000, untagged: false });
      assert.deepEqual(plan.orphanBlobs, [D(61)]);
      assert.equal(await meta.linkedBlob("g", D(61)), null);
      assert.ok(await meta.linkedBlob("g", D(60)));
      assert.deepEqual(await meta.forgetBlobs([D(61)]), [D(61)]);
      assert.equal(await meta.blobSize(D(61)), null);
      // untagged manifests go only when asked
      await meta.deleteTag("g", "t");
      const untagged = await meta.collectGarbage({ olderThan: now + 60_000, untagged: true });
      assert.equal(untagged.manifestsDeleted, 1);
      assert.deepEqual(untagged.orphanBlobs, [D(60)]);
    });

    test("failed logins: every failure counts (concurrent ones too), per kind and key, newest `limit` after `since`", async () => {
      assert.ok(meta.recordLoginFailure && meta.loginFailureTimes && meta.pruneLoginFailures, "the driver shares failed logins");
      const at = 5_000_000;
      // Concurrent writers (replicas) must not lose each other's failures.
      await Promise.all(Array.from({ length: 20 }, (_, i) => meta.recordLoginFailure!("user", "alice", at + i)));
      await meta.recordLoginFailure("address", "alice", at + 100);
      await meta.recordLoginFailure("user", "bob", at + 100);
      assert.deepEqual(await meta.loginFailureTimes("user", "alice", 0, 100), Array.from({ length: 20 }, (_, i) => at + i));
      assert.deepEqual(await meta.loginFailureTimes("user", "alice", at + 14, 3), [at + 17, at + 18, at + 19], "the newest, ascending");
      assert.deepEqual(await meta.loginFailureTimes("user", "alice", at + 19, 10), [], "`since` is exclusive");
      assert.deepEqual(await meta.loginFailureTimes("address", "alice", 0, 10), [at + 100], "kinds are separate");
      assert.deepEqual(await meta.loginFailureTimes("user", "nobody", 0, 10), []);
    });

    test("login attempts claimed at once (several replicas): exactly `limit` get through, a released claim frees its place", async () => {
      assert.ok(meta.claimLoginAttempt && meta.releaseLoginAttempt && meta.loginFailureTimes, "the driver claims attempts");
      const at = 7_000_000;
      await meta.recordLoginFailure!("user", "carol", at - 5);
      const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => meta.claimLoginAttempt!("user", "carol", at + i, at - 100, 5)));
      const granted = claims.filter((id): id is number => id !== null);
      assert.equal(granted.length, 4, "one failure was recorded before: four of twelve simultaneous attempts get a claim");
      assert.equal((await meta.loginFailureTimes("user", "carol", at - 100, 100)).length, 5, "claims count as failures");
      await meta.releaseLoginAttempt(granted[0]!);
      assert.equal((await meta.loginFailureTimes("user", "carol", at - 100, 100)).length, 4, "a released claim is no failure");
      assert.notEqual(await meta.claimLoginAttempt("user", "carol", at + 50, at - 100, 5), null, "its place is free again");
      assert.equal(await meta.claimLoginAttempt("user", "carol", at + 51, at - 100, 5), null);
      assert.notEqual(await meta.claimLoginAttempt("user", "carol", at + 52, at + 40, 5), null, "only failures after `since` count");
    });

    test("failed logins are bounded: expired rows go, then single failures of sprayed names before a name under attack", async () => {
      assert.ok(meta.recordLoginFailure && meta.loginFailureTimes && meta.pruneLoginFailures);
      const at = 9_000_000;
      await meta.recordLoginFailure("user", "old", at - 10);
      for (let i = 0; i < 5; i++) await meta.recordLoginFailure("user", "admin", at + i);
      for (let i = 0; i < 8; i++) await meta.recordLoginFailure("user", `sprayed-${i}`, at + 10 + i);
      const deleted = await meta.pruneLoginFailures(at - 1, 7);
      assert.equal(deleted, 7, "one expired row and six sprayed names");
      assert.deepEqual(await meta.loginFailureTimes("user", "old", 0, 10), []);
      assert.equal((await meta.loginFailureTimes("user", "admin", 0, 10)).length, 5, "the attacked name keeps its count");
      assert.deepEqual(await meta.loginFailureTimes("user", "sprayed-0", 0, 10), [], "oldest single failures first");
      assert.deepEqual(await meta.loginFailureTimes("user", "sprayed-7", 0, 10), [at + 17]);
      assert.equal(await meta.pruneLoginFailures(at - 1, 3), 4, "the last single failures, then the oldest rows whatever their key");
      assert.deepEqual(await meta.loginFailureTimes("user", "admin", 0, 10), [at + 2, at + 3, at + 4]);
      assert.deepEqual(await meta.loginFailureTimes("user", "sprayed-7", 0, 10), []);
    });

    test("token signing keys: a generation is inserted once (two starters agree), listed in order with the PEM intact", async () => {
      assert.ok(meta.listSigningKeys && meta.addSigningKey, "the driver keeps the signing key set");
      assert.deepEqual(await meta.listSigningKeys(), []);
      const key = (generation: number, kid: string) => ({ generation, kid, algorithm: "ES256" as const, privateKey: `-----BEGIN PRIVATE KEY-----\n${kid}\n-----END PRIVATE KEY-----\n`, createdAt: 1000 * generation });
      const results = await Promise.all([meta.addSigningKey(key(1, "first")), meta.addSigningKey(key(1, "rival"))]);
      assert.deepEqual(results.sort(), [false, true], "exactly one of two concurrent inserts of generation 1 wins");
      const [only] = await meta.listSigningKeys();
      assert.ok(only && ["first", "rival"].includes(only.kid));
      assert.equal(await meta.addSigningKey(key(2, "second")), true);
      assert.equal(await meta.addSigningKey(key(3, "second")), false, "a kid is never reused");
      const keys = await meta.listSigningKeys();
      assert.deepEqual(keys.map((k) => k.generation), [1, 2]);
      assert.deepEqual(keys[1], key(2, "second"));
    });

    test("source health is kept per URL: counts, the latest outcomes, consecutive failures", async () => {
      assert.ok(meta.recordSourceHealth && meta.listSourceHealth && meta.forgetSourceHealth, "the driver keeps source health");
      const a = "https://cdn.example.com/a";
      const b = "https://cdn.example.com/b";
      const at = 1_000_000;
      await meta.recordSourceHealth({ url: a, host: "cdn.example.com", ok: true, at, latencyMs: 10, error: null });
      await meta.recordSourceHealth({ url: a, host: "cdn.example.com", ok: false, at: at + 1, latencyMs: null, error: "HTTP 503" });
      await meta.recordSourceHealth({ url: a, host: "cdn.example.com", ok: false, at: at + 2, latencyMs: 30, error: "HTTP 502" });
      await meta.recordSourceHealth({ url: b, host: "cdn.example.com", ok: true, at: at + 3, latencyMs: 5, error: null });
      const [ra, rb] = await meta.listSourceHealth();
      assert.deepEqual(ra, {
        url: a, host: "cdn.example.com", successes: 1, failures: 2, consecutiveFailures: 2, recent: "001",
        lastSuccessAt: at, lastFailureAt: at + 2, lastError: "HTTP 502", lastLatencyMs: 30, averageLatencyMs: 20,
      });
      assert.equal(rb?.url, b);
      assert.equal(rb?.consecutiveFailures, 0);
      await meta.recordSourceHealth({ url: a, host: "cdn.example.com", ok: true, at: at + 4, latencyMs: null, error: null });
      const again = (await meta.listSourceHealth()).find((r) => r.url === a);
      assert.equal(again?.consecutiveFailures, 0, "a success ends the run of failures");
      assert.equal(again?.lastError, "HTTP 502", "the last error is kept for operators");
      for (let i = 0; i < 12; i++) await meta.recordSourceHealth({ url: a, host: "cdn.example.com", ok: true, at: at + 10 + i, latencyMs: null, error: null });
      assert.equal((await meta.listSourceHealth()).find((r) => r.url === a)?.recent, "1111111111", "only the latest 10 outcomes");
      await meta.forgetSourceHealth([a]);
      assert.deepEqual((await meta.listSourceHealth()).map((r) => r.url), [b]);
    });

    test("re-check rounds: one holder per interval, a running round blocks others until its lease expires", async () => {
      assert.ok(meta.claimRecheckRound && meta.renewRecheckRound && meta.finishRecheckRound && meta.lastRecheckRound, "the driver keeps the claim row");
      const t0 = 10_000_000;
      assert.equal(await meta.lastRecheckRound(), null);
      assert.equal(await meta.claimRecheckRound("p1", t0, 1_000, 5_000), true, "the first round");
      assert.equal(await meta.claimRecheckRound("p2", t0 + 10, 1_000, 5_000), false, "within the interval");
      assert.equal(await meta.claimRecheckRound("p2", t0 + 2_000, 1_000, 5_000), false, "p1 still runs under its lease");
      assert.equal(await meta.renewRecheckRound("p2", t0 + 9_000), false, "only the holder renews");
      assert.equal(await meta.renewRecheckRound("p1", t0 + 9_000), true);
      assert.equal(await meta.claimRecheckRound("p2", t0 + 6_000, 1_000, 5_000), false, "the renewed lease holds");
      await meta.finishRecheckRound("p1", t0 + 6_500, 3);
      assert.deepEqual(await meta.lastRecheckRound(), { holder: "p1", startedAt: t0, finishedAt: t0 + 6_500, leaseUntil: t0 + 9_000, checked: 3 });
      assert.equal(await meta.claimRecheckRound("p2", t0 + 6_600, 1_000, 5_000), true, "finished and the interval passed");
      assert.equal(await meta.claimRecheckRound("p1", t0 + 6_700, 0, 5_000), false, "even with no interval, not while p2 runs");
      // p2 dies without finishing: its lease runs out and p1 takes over.
      assert.equal(await meta.claimRecheckRound("p1", t0 + 6_600 + 5_000, 1_000, 5_000), true);
      assert.equal((await meta.lastRecheckRound())?.holder, "p1");
    });

    // Concurrency: on PostgreSQL these run side by side on a pool of connections
    // (SQLite serialises them); the guarantees must hold either way.
    test("concurrent pushes and garbage collection: a stored manifest never lacks a blob it references", async () => {
      for (let round = 0; round < 15; round++) {
        const blob = D(5000 + round);
        await meta.linkBlob("gcrace", blob, 10);
        const [pushed] = await Promise.allSettled([
          meta.putManifest("gcrace", manifest(D(6000 + round), { blobs: [blob] }), `t${round}`),
          meta.collectGarbage({ olderThan: Date.now() + 60_000, untagged: false }),
        ]);
        const stored = await meta.getManifest("gcrace", D(6000 + round));
        const linked = await meta.linkedBlob("gcrace", blob);
        if (pushed.status === "fulfilled") {
          assert.ok(stored, "the push was acknowledged");
          assert.ok(linked, `round ${round}: GC removed a blob a stored manifest references`);
        } else {
          assert.ok(pushed.reason instanceof MissingReferencesError, String(pushed.reason));
          assert.equal(stored, null, "a refused push stores nothing");
        }
      }
    });

    test("concurrent lease and re-check claims: exactly one winner", async () => {
      const leases = await Promise.all(Array.from({ length: 12 }, (_, i) => meta.acquireLease("race:key", `h${i}`, 60_000)));
      assert.equal(leases.filter(Boolean).length, 1);
      const winner = `h${leases.indexOf(true)}`;
      assert.equal((await meta.leaseHolder("race:key"))?.holder, winner);
      const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => meta.claimRecheckRound!(`p${i}`, 50_000_000, 1_000, 5_000)));
      assert.equal(claims.filter(Boolean).length, 1);
    });

    test("concurrent pushes naming one foreign layer with different URLs keep the union of all", async () => {
      const urls = Array.from({ length: 8 }, (_, i) => `https://m${i}.example/layer`);
      const layer = { digest: D(7000), mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", size: 5, verification: "unverified" as const, verifiedAt: null, verificationDetail: null };
      await Promise.all(urls.map((url, i) => meta.putManifest("fl", manifest(D(7001 + i), { foreignLayers: [{ ...layer, urls: [url] }] }), `t${i}`)));
      assert.deepEqual([...((await meta.getForeignLayer("fl", D(7000)))?.urls ?? [])].sort(), [...urls].sort());
      assert.equal((await meta.getForeignLayer("fl", D(7000)))?.manifests.length, 8);
    });

    test("concurrent commits of one blob into one repository, and concurrent session writes, all succeed once", async () => {
      await Promise.all(Array.from({ length: 8 }, (_, i) => meta.createUpload({ id: `cu${i}`, repository: "cr", createdAt: 1, updatedAt: 1 })));
      await Promise.all(Array.from({ length: 8 }, (_, i) => meta.completeUpload(`cu${i}`, "cr", D(7100), 42)));
      assert.equal(await meta.countUploads(), 0);
      assert.deepEqual(await meta.linkedBlob("cr", D(7100)), { size: 42 });
      assert.deepEqual(await meta.repositoriesWithBlob(D(7100), 5), ["cr"]);
    });

    test("web UI listings: summaries per repository (tags, held bytes, last push), filtered, searched and paged", async () => {
      assert.ok(meta.listRepositorySummaries && meta.listTagDetails, "the driver serves the UI's listings");
      const before = Date.now();
      await meta.linkBlob("ui/a", D(1), 100);
      await meta.linkBlob("ui/a", D(2), 50);
      await meta.putManifest("ui/a", manifest(D(10), { blobs: [D(1), D(2)] }), "v1");
      await meta.putManifest("ui/a", manifest(D(11)), "v2");
      await meta.putManifest("ui/b", manifest(D(12)), "latest");
      await meta.putManifest("secret/c", manifest(D(13)));
      await meta.linkBlob("ui/empty", D(3), 7); // blobs but no manifest: not listed, like the catalog
      const all = await meta.listRepositorySummaries({ limit: 10 }, () => true);
      assert.deepEqual(all.repositories.map((r) => r.name), ["secret/c", "ui/a", "ui/b"]);
      assert.equal(all.total, 3);
      assert.equal(all.next, undefined);
      const a = all.repositories.find((r) => r.name === "ui/a")!;
      assert.deepEqual([a.tags, a.size], [2, 150]);
      assert.ok(a.lastPush !== null && a.lastPush >= before);
      assert.equal(all.repositories.find((r) => r.name === "secret/c")!.tags, 0);
      const visible = (name: string) => !name.startsWith("secret/");
      const first = await meta.listRepositorySummaries({ limit: 1 }, visible);
      assert.deepEqual([first.repositories.map((r) => r.name), first.total, first.next], [["ui/a"], 2, "ui/a"]);
      const second = await meta.listRepositorySummaries({ limit: 1, after: first.next }, visible);
      assert.deepEqual([second.repositories.map((r) => r.name), second.next], [["ui/b"], undefined]);
      const searched = await meta.listRepositorySummaries({ limit: 10, search: "/b" }, visible);
      assert.deepEqual([searched.repositories.map((r) => r.name), searched.total], [["ui/b"], 1]);
      assert.equal((await meta.listRepositorySummaries({ limit: 10, search: "%" }, () => true)).total, 0, "search text is literal");

      const tags = await meta.listTagDetails("ui/a", 10);
      assert.deepEqual(tags.map((t) => [t.tag, t.digest]), [["v1", D(10)], ["v2", D(11)]]);
      assert.deepEqual(tags[0]!.content, manifest(D(10)).content);
      assert.ok(tags[0]!.pushedAt >= tags[0]!.createdAt);
      assert.equal((await meta.listTagDetails("ui/a", 1)).length, 1);
      assert.deepEqual(await meta.listTagDetails("ui/none", 10), []);
    });
  });
}
