/**
 * `ferry migrate --from sqlite:PATH --to postgres://…`: an embedded
 * installation's metadata arrives in PostgreSQL whole (tags, manifests byte
 * for byte, links, referrers, foreign-layer records, proxy cache index), a
 * non-empty target is refused unless --force, and the copy keeps working.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { PostgresMetaStore } from "../../src/metadata/postgres.js";
import type { MetaStore } from "../../src/metadata/meta-store.js";
import { freshDatabaseUrl, skipUnlessPostgres } from "../helpers/postgres.js";
import { manifest } from "./meta-store-suite.js";

const run = promisify(execFile);
const skip = skipUnlessPostgres();
const sha = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

async function snapshot(meta: MetaStore) {
  const repositories = await meta.listRepositories({ limit: 1000 });
  const out: Record<string, unknown> = { repositories };
  for (const repo of repositories) {
    const tags = await meta.listTags(repo, { limit: 1000 });
    out[repo] = {
      tags: await Promise.all(tags.map(async (tag) => [tag, (await meta.getTaggedManifest(repo, tag))?.content.toString("base64")])),
      foreign: await meta.listForeignLayers(repo),
      blobs: await Promise.all(["a", "b"].map((n) => meta.linkedBlob(repo, sha(Buffer.from(n))))),
    };
  }
  return out;
}

describe("ferry migrate", { skip }, () => {
  test("copies a seeded SQLite store into an empty PostgreSQL schema, refuses a non-empty one, and --force replaces it", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-migrate-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const { url, drop } = await freshDatabaseUrl();
    t.after(drop);
    const path = join(dir, "metadata.db");
    const source = await SqliteMetaStore.open(path);
    const [a, b] = [Buffer.from("a"), Buffer.from("b")];
    await source.linkBlob("team/app", sha(a), 1);
    await source.linkBlob("team/app", sha(b), 1);
    const digests: string[] = [];
    for (let i = 0; i < 30; i++) {
      // Bytes that JSON would not round-trip (a BOM, a NUL, invalid UTF-8): they must arrive unchanged.
      const content = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`{"n":${i}}`), Buffer.from([0, 0xff])]);
      digests.push(sha(content));
      await source.putManifest(`repo${i % 3}`, manifest(sha(content), { content, blobs: [] }), [`v${i}`, "latest"]);
    }
    const image = Buffer.from('{"layers":[]}');
    await source.putManifest("team/app", manifest(sha(image), { content: image, blobs: [sha(a), sha(b)], foreignLayers: [{ digest: sha(Buffer.from("f")), mediaType: LAYER, size: 1, urls: ["https://x.example/f"], verification: "verified", verifiedAt: 5, verificationDetail: { ok: true }, provenUrls: ["https://x.example/f"] }] }), "1.0");
    const sig = Buffer.from('{"sig":1}');
    await source.putManifest("team/app", manifest(sha(sig), { content: sig, subjectDigest: sha(image), artifactType: "application/x-sig", annotations: { k: "v" } }));
    await source.putForeignCacheEntry({ digest: sha(Buffer.from("f")), size: 1, fetchedAt: 9, pinned: true });
    const before = await snapshot(source);
    const referrers = await source.listReferrers("team/app", sha(image));
    await source.close();

    const cli = (args: string[]) => run(process.execPath, ["dist/src/cli/main.js", "migrate", "--from", `sqlite:${path}`, "--to", url, ...args], { env: { PATH: process.env.PATH ?? "" } });
    const first = await cli([]);
    assert.match(first.stdout, /manifests: 32/);
    assert.match(first.stdout, /verified: row counts equal, manifest bytes equal/);
    assert.match(first.stdout, /s per 10,000 manifests/);

    const target = await PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 });
    t.after(() => target.close());
    assert.deepEqual(await snapshot(target), before);
    assert.deepEqual(await target.listReferrers("team/app", sha(image)), referrers);
    assert.equal((await target.getForeignCacheEntry(sha(Buffer.from("f"))))?.pinned, true);
    for (const [i, digest] of digests.entries()) assert.equal(sha((await target.getManifest(`repo${i % 3}`, digest))!.content), digest);
    // The copy is a working store: a new repository gets an id of its own.
    await target.putManifest("new/repo", manifest(sha(Buffer.from("{}")), { content: Buffer.from("{}") }), "x");
    assert.equal((await target.getTaggedManifest("team/app", "1.0"))?.digest, sha(image));
    assert.equal((await target.getTaggedManifest("new/repo", "x"))?.digest, sha(Buffer.from("{}")));

    await assert.rejects(cli([]), (error: { stderr?: string; code?: number }) => {
      assert.match(error.stderr ?? "", /already holds metadata.*--force/);
      return true;
    });
    const forced = await cli(["--force"]);
    assert.match(forced.stdout, /manifests: 32/);
    assert.equal(await target.getTaggedManifest("new/repo", "x"), null, "--force replaced the target's metadata");
  });
});
