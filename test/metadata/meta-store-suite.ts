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
  });
}
