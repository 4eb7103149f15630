/**
 * Knowing a digest is never enough to read a cached foreign layer. With
 * access control on, alice (team a/**) may not pull b/secret, whose cached
 * foreign layer L she tries to reach by pushing to a/x a manifest that names
 * L's digest and size with a URL that answers 404, or a URL that answers a
 * HEAD with the right size but other bytes on GET. The permission matrix
 * below is written by hand: who gets what for L in each repository.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { basic, bcryptHash, pushBlobAs, putManifestAs } from "../auth/util.js";
import { FakeSource, NONDISTRIBUTABLE, OCI_MANIFEST, blob, sha256, parseErrors } from "./helpers.js";
import { RangeSource } from "./range-source.js";

const PASSWORD = { admin: "admin-pw", alice: "alice-pw", bob: "bob-pw" } as const;
type Who = "anonymous" | keyof typeof PASSWORD;
const auth = (who: Who): Record<string, string> => (who === "anonymous" ? {} : { authorization: basic(who, PASSWORD[who]) });

/** Pushes an image whose only layer is foreign, as `who`. */
async function pushForeignImage(url: string, repository: string, tag: string, layers: Array<{ digest: string; size: number; urls: string[] }>, headers: Record<string, string>) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const uploaded = await pushBlobAs(url, repository, config, headers.authorization ?? null);
  assert.equal(uploaded.status, 201, await uploaded.text());
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: NONDISTRIBUTABLE, digest: l.digest, size: l.size, urls: l.urls })),
    }),
  );
  const res = await putManifestAs(url, repository, tag, OCI_MANIFEST, manifest, headers.authorization ?? null);
  return { status: res.status, body: await res.text() };
}

let registry: TestRegistry;
let secretSource: FakeSource;
let lying: RangeSource;
const layer = blob(4000);

before(async () => {
  secretSource = await new FakeSource().start();
  lying = await new RangeSource().start();
  registry = await startTestRegistry({
    auth: {
      users: {
        admin: { passwordHash: bcryptHash(PASSWORD.admin) },
        alice: { passwordHash: bcryptHash(PASSWORD.alice) },
        bob: { passwordHash: bcryptHash(PASSWORD.bob) },
      },
      rules: [
        { repositories: ["a/**"], users: ["alice"], actions: ["*"] },
        { repositories: ["b/**"], users: ["bob"], actions: ["*"] },
      ],
      admins: { users: ["admin"] },
    },
    federation: {
      rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "proxy", cache: true }],
      privateRepositories: "allow",
      proxy: { allowPrivateNetworks: true, timeout: "1s" },
    },
  });
  // bob's private repository references L at a working URL; one pull puts L in the cache.
  const secretUrl = secretSource.put("/licensed.tar.gz", layer.bytes);
  const pushed = await pushForeignImage(registry.url, "b/secret", "v1", [{ ...layer, urls: [secretUrl] }], auth("bob"));
  assert.equal(pushed.status, 201, pushed.body);
  const filled = await fetch(`${registry.url}/v2/b/secret/blobs/${layer.digest}`, { headers: auth("bob") });
  assert.equal(filled.status, 200);
  assert.equal(sha256(Buffer.from(await filled.arrayBuffer())), layer.digest);
  assert.equal(secretSource.gets(), 1);

  // alice names L's digest and size with a URL that answers 404 ...
  const missing = await pushForeignImage(registry.url, "a/x", "v1", [{ ...layer, urls: [secretSource.url("/nothing-here")] }], auth("alice"));
  assert.equal(missing.status, 201, "the push is accepted (verification is off): the defence is at serving time");
  // ... and with a URL whose HEAD has the right size but whose GET sends other bytes.
  lying.put("/fake.tar.gz", layer.bytes);
  lying.behave("/fake.tar.gz", { kind: "wrong-bytes" });
  const headOnly = await pushForeignImage(registry.url, "a/y", "v1", [{ ...layer, urls: [lying.url("/fake.tar.gz")] }], auth("alice"));
  assert.equal(headOnly.status, 201);
});

after(async () => {
  await registry?.close();
  await secretSource?.close();
  await lying?.close();
});

// What each principal gets for GET /v2/<repo>/blobs/<L>. 200 = L's bytes; 502 = no source of that repository delivered.
const EXPECTED: Record<Who, Record<"a/x" | "a/y" | "b/secret", number>> = {
  anonymous: { "a/x": 401, "a/y": 401, "b/secret": 401 },
  alice: { "a/x": 502, "a/y": 502, "b/secret": 403 },
  bob: { "a/x": 403, "a/y": 403, "b/secret": 200 },
  admin: { "a/x": 502, "a/y": 502, "b/secret": 200 },
};

for (const who of Object.keys(EXPECTED) as Who[]) {
  test(`cached foreign layer permission matrix: ${who}`, async () => {
    for (const [repository, status] of Object.entries(EXPECTED[who])) {
      const res = await fetch(`${registry.url}/v2/${repository}/blobs/${layer.digest}`, { headers: auth(who) });
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(res.status, status, `${who} GET ${repository}: ${body.toString().slice(0, 300)}`);
      if (status === 200) assert.equal(sha256(body), layer.digest);
      else assert.ok(!body.includes(layer.bytes.subarray(0, 64)), "not a byte of L");
    }
  });
}

test("a repository without its own proof gets a 502 naming only its own URLs, even while L sits in the cache", async () => {
  const res = await fetch(`${registry.url}/v2/a/x/blobs/${layer.digest}`, { headers: auth("alice") });
  assert.equal(res.status, 502);
  const [error] = parseErrors(await res.text());
  assert.deepEqual((error!.detail?.attempts as Array<{ url: string; error: string }>).map((a) => [a.url, a.error]), [[secretSource.url("/nothing-here"), "HTTP 404"]]);
  const layers = (await (await fetch(`${registry.url}/ferry/v1/foreign/layers`, { headers: auth("admin") })).json()) as {
    layers: Array<{ repository: string; cached: boolean; provenUrls: string[] }>;
  };
  const byRepo = Object.fromEntries(layers.layers.map((l) => [l.repository, l]));
  assert.equal(byRepo["b/secret"]!.cached, true);
  assert.equal(byRepo["a/x"]!.cached, false, "the admin view says a/x gets no cached bytes");
  assert.deepEqual(byRepo["a/y"]!.provenUrls, [], "a HEAD-sized lie is no proof");
});

test("a repository that references a URL that really delivers L gets its own proof, and then the cache", async () => {
  // carol's case, played by alice in a/z: the same public URL as b/secret, fetched for a/z itself.
  const url = secretSource.url("/licensed.tar.gz");
  assert.equal((await pushForeignImage(registry.url, "a/z", "v1", [{ ...layer, urls: [url] }], auth("alice"))).status, 201);
  const before = secretSource.gets("/licensed.tar.gz");
  const first = await fetch(`${registry.url}/v2/a/z/blobs/${layer.digest}`, { headers: auth("alice") });
  assert.equal(first.status, 200);
  assert.equal(sha256(Buffer.from(await first.arrayBuffer())), layer.digest);
  assert.equal(secretSource.gets("/licensed.tar.gz"), before + 1, "a/z had no proof: it fetched from its own URL");
  const second = await fetch(`${registry.url}/v2/a/z/blobs/${layer.digest}`, { headers: auth("alice") });
  assert.equal(sha256(Buffer.from(await second.arrayBuffer())), layer.digest);
  assert.equal(secretSource.gets("/licensed.tar.gz"), before + 1, "now proven: served from the cache");
  // a/x still has no proof, whatever a/z did.
  assert.equal((await fetch(`${registry.url}/v2/a/x/blobs/${layer.digest}`, { headers: auth("alice") })).status, 502);
});
