/**
 * Mirrors of real upstream registries on loopback: CNCF distribution 2.8
 * (Debian's docker-registry) with htpasswd, and another Ferry with token
 * auth; skopeo and podman pull through the mirror; a foreign-layer image
 * keeps its urls and its digest; the mirror's own auth stays deny-by-default.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { buildImage, sha256, type TestImage } from "../helpers/images.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { skipUnless } from "../helpers/tools.js";
import { skopeo, podmanRunner } from "../e2e/clients.js";
import { startDistribution, type Target } from "../client/harness.js";
import { RegistryClient } from "../../src/client/registry.js";
import { basic, bcryptHash, pushImageAs } from "../auth/util.js";
import { FakeSource } from "../federation/helpers.js";

const ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/** Pushes an image with the client library (Basic or token auth as the registry asks). */
async function pushWithClient(client: RegistryClient, repository: string, tag: string, image: TestImage): Promise<void> {
  for (const blob of [image.config, ...image.layers.filter((l) => !l.urls)]) {
    await client.uploadBlob(repository, blob.digest, blob.size, Readable.from([blob.bytes]));
  }
  await client.putManifest(repository, tag, { bytes: image.manifest, mediaType: image.mediaType, digest: image.manifestDigest });
}

describe("mirror of CNCF distribution 2.8 with htpasswd", { skip: skipUnless("docker-registry") }, () => {
  let distribution: Target;
  let mirror: TestRegistry;
  let source: FakeSource;
  let image: TestImage;
  let foreignImage: TestImage;

  before(async () => {
    distribution = await startDistribution({ users: { puller: "dist-secret" } });
    source = await new FakeSource().start();
    const client = new RegistryClient({ registry: distribution.host, credentials: { username: "puller", password: "dist-secret" } });
    image = await buildImage({ docker: true, layers: [{ "etc/hello": "hello through a mirror\n" }, { "usr/share/data": Buffer.alloc(300_000, 7) }] });
    await pushWithClient(client, "team/app", "v1", image);
    const foreignBytes = { "windows/base": Buffer.alloc(5000, 3) };
    const staged = await buildImage({ foreign: [{ files: foreignBytes, urls: [] }] });
    const url = source.put("/base.tar.gz", staged.layers[1]!.bytes);
    foreignImage = await buildImage({ foreign: [{ files: foreignBytes, urls: [url] }] });
    await pushWithClient(client, "team/foreign", "v1", foreignImage);
    mirror = await startTestRegistry({
      mirrors: [{ prefix: "dist/", upstream: distribution.url, credentials: { username: "puller", password: "dist-secret" } }],
      federation: { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "redirect" }], proxy: { allowPrivateNetworks: true, timeout: "1s" } },
    });
  });
  after(async () => {
    await mirror?.close();
    await distribution?.close();
    await source?.close();
  });

  test("skopeo copies an image through the mirror, byte for byte", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-mirror-skopeo-"));
    try {
      await skopeo("copy", "--src-tls-verify=false", `docker://${mirror.host}/dist/team/app:v1`, `oci:${dir}:v1`);
      const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
      // skopeo converts nothing when the destination accepts the format: the stored manifest is the upstream's.
      const layerBlobs = await Promise.all(image.layers.map((l) => readFile(join(dir, "blobs", "sha256", l.digest.slice(7)))));
      for (const [i, bytes] of layerBlobs.entries()) assert.equal(sha256(bytes), image.layers[i]!.digest);
      assert.equal(index.manifests.length, 1);
      const inspect = JSON.parse(await skopeo("inspect", "--tls-verify=false", `docker://${mirror.host}/dist/team/app:v1`)) as { Digest: string };
      assert.equal(inspect.Digest, image.manifestDigest);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("podman pulls an image through the mirror", { skip: skipUnless("podman") }, async () => {
    const podman = await podmanRunner();
    await podman("pull", "--tls-verify=false", `${mirror.host}/dist/team/app:v1`);
    const digest = (await podman("image", "inspect", "--format", "{{.Digest}}", `${mirror.host}/dist/team/app:v1`)).trim();
    assert.equal(digest, image.manifestDigest);
  });

  test("a foreign-layer image is mirrored with its urls intact and its digest unchanged; the layer is answered by federation, not fetched from the upstream", async () => {
    const response = await fetch(`${mirror.url}/v2/dist/team/foreign/manifests/v1`, { headers: { Accept: ACCEPT } });
    assert.equal(response.status, 200);
    const bytes = Buffer.from(await response.arrayBuffer());
    assert.deepEqual(bytes, foreignImage.manifest);
    assert.equal(response.headers.get("docker-content-digest"), foreignImage.manifestDigest);
    const foreign = foreignImage.layers[1]!;
    const layer = await fetch(`${mirror.url}/v2/dist/team/foreign/blobs/${foreign.digest}`, { redirect: "manual" });
    assert.equal(layer.status, 307, "federation's rule (redirect) answers the foreign layer");
    assert.equal(layer.headers.get("location"), foreign.urls![0]);
  });

  test("containerd's ns= parameter names the upstream host: /v2/team/app?ns=<host> is the mirror's dist/team/app", async () => {
    const response = await fetch(`${mirror.url}/v2/team/app/manifests/v1?ns=${encodeURIComponent(distribution.host)}`, { headers: { Accept: ACCEPT } });
    assert.equal(response.status, 200);
    assert.equal(sha256(Buffer.from(await response.arrayBuffer())), image.manifestDigest);
  });
});

describe("mirror of a Ferry upstream with token auth, behind the mirror's own auth", () => {
  let upstream: TestRegistry;
  let mirror: TestRegistry;
  let image: TestImage;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ferry-mirror-auth-"));
    await writeFile(join(dir, "up.htpasswd"), `bot:${bcryptHash("bot-pw")}\nroot:${bcryptHash("root-pw")}\n`);
    upstream = await startTestRegistry({
      auth: { htpasswd: join(dir, "up.htpasswd"), rules: [{ repositories: ["team/**"], users: ["bot"], actions: ["pull"] }], admins: { users: ["root"] } },
    });
    image = await buildImage({ layers: [{ "tok.txt": "token auth upstream\n" }] });
    await pushImageAs(upstream.url, "team/app", "v1", image, basic("root", "root-pw"));
    await writeFile(join(dir, "mirror.htpasswd"), `alice:${bcryptHash("alice-pw")}\nops:${bcryptHash("ops-pw")}\n`);
    mirror = await startTestRegistry({
      auth: { htpasswd: join(dir, "mirror.htpasswd"), rules: [{ repositories: ["up/**"], users: ["alice"], actions: ["pull"] }], admins: { users: ["ops"] } },
      mirrors: [{ prefix: "up/", upstream: upstream.url, credentials: { username: "bot", password: "bot-pw" } }],
    });
  });
  after(async () => {
    await mirror?.close();
    await upstream?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("the mirror gets bearer tokens for the pull scope from the upstream and serves the image to its own users", async () => {
    const client = new RegistryClient({ registry: mirror.host, credentials: { username: "alice", password: "alice-pw" } });
    const manifest = await client.getManifest("up/team/app", "v1");
    assert.deepEqual(manifest.bytes, image.manifest);
    for (const blob of [image.config, ...image.layers]) {
      const chunks: Buffer[] = [];
      for await (const chunk of await client.openBlob("up/team/app", blob.digest)) chunks.push(chunk as Buffer);
      assert.equal(sha256(Buffer.concat(chunks)), blob.digest);
    }
  });

  test("anonymous clients and users without pull on the prefix are refused before the upstream is asked", async () => {
    const anonymous = await fetch(`${mirror.url}/v2/up/team/app/manifests/v1`);
    assert.equal(anonymous.status, 401);
    await anonymous.arrayBuffer();
    const ops = new RegistryClient({ registry: mirror.host, credentials: { username: "ops", password: "ops-pw" } });
    // Admins may do everything; a user without a rule for the repository may not.
    await assert.rejects(
      new RegistryClient({ registry: mirror.host, credentials: { username: "alice", password: "alice-pw" } }).getManifest("elsewhere/app", "v1"),
      (error: Error & { status?: number }) => error.status === 403 || error.status === 401,
    );
    await ops.getManifest("up/team/app", "v1");
  });

  test("/ferry/v1/mirrors is for admins only: anonymous 401, a puller 403, an admin sees counters and upstream health", async () => {
    assert.equal((await fetch(`${mirror.url}/ferry/v1/mirrors`)).status, 401);
    assert.equal((await fetch(`${mirror.url}/ferry/v1/mirrors`, { headers: { Authorization: basic("alice", "alice-pw") } })).status, 403);
    const status = await fetch(`${mirror.url}/ferry/v1/mirrors`, { headers: { Authorization: basic("ops", "ops-pw") } });
    assert.equal(status.status, 200);
    const body = (await status.json()) as { mirrors: Array<{ upstream: string; counters: { manifestMisses: number }; upstreamHealth: { ok: boolean } }> };
    assert.equal(body.mirrors[0]!.upstream, upstream.url);
    assert.ok(body.mirrors[0]!.counters.manifestMisses >= 1);
    assert.equal(body.mirrors[0]!.upstreamHealth.ok, true);
    assert.ok(!JSON.stringify(body).includes("bot-pw"), "upstream credentials are never shown");
  });
});
