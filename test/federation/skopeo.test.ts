/**
 * End to end with skopeo 1.9.3 (containers/image): push an image whose layer
 * is foreign from an OCI layout written here (skopeo keeps the URL and
 * uploads nothing), then pull it in every serve mode with the source up and
 * down. Measured skopeo behaviour this relies on (docs/federation.md): on pull
 * it tries the layer's `urls` itself first; a connection error moves on to
 * the registry, an HTTP error status fails the pull. So sources here either
 * serve everyone, serve no one (down), or drop skopeo's own connections
 * (a source only the registry can reach, or one that serves signed URLs only)
 * so that the registry's answer is what skopeo gets.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { skipUnless } from "../helpers/tools.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { FakeSource, sha256, NONDISTRIBUTABLE, OCI_MANIFEST } from "./helpers.js";

const skip = skipUnless("skopeo");
type After = { after(fn: () => Promise<void>): void };

function skopeo(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn("skopeo", args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, output }));
  });
}

interface Scenario {
  r: TestRegistry;
  s: FakeSource;
  layer: Buffer;
  layerDigest: string;
  manifestDigest: string;
  pull(): Promise<{ code: number; output: string; layer: Buffer | null }>;
  /** The registry still serves exactly the pushed manifest. */
  assertManifestUnchanged(): Promise<void>;
}

async function scenario(t: After, federation: Record<string, unknown>): Promise<Scenario> {
  const work = await mkdtemp(join(tmpdir(), "ferry-skopeo-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: { ...federation, proxy: { allowPrivateNetworks: true, timeout: "5s", ...(federation.proxy as object) } } });
  t.after(() => r.close());

  const layer = gzipSync(Buffer.from("a foreign layer that lives on someone else's server\n".repeat(2000)));
  const layerDigest = sha256(layer);
  const url = s.put("/layers/base.tar.gz", layer);
  // An OCI layout with the config and manifest but not the layer's bytes: only the URL knows them.
  const layout = join(work, "layout");
  await mkdir(join(layout, "blobs", "sha256"), { recursive: true });
  const store = async (bytes: Buffer) => {
    const digest = sha256(bytes);
    await writeFile(join(layout, "blobs", "sha256", digest.slice(7)), bytes);
    return digest;
  };
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [sha256("tar")] } }));
  const configDigest = await store(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: [{ mediaType: NONDISTRIBUTABLE, digest: layerDigest, size: layer.length, urls: [url] }],
    }),
  );
  const manifestDigest = await store(manifest);
  await writeFile(join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(
    join(layout, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifest.length, annotations: { "org.opencontainers.image.ref.name": "v1" } }] }),
  );

  const pushed = await skopeo(["copy", "--dest-tls-verify=false", `oci:${layout}:v1`, `docker://${r.host}/federated/app:v1`]);
  assert.equal(pushed.code, 0, pushed.output);
  assert.equal(s.requests.length, 0, "pushing must not touch the layer's source");

  let pulls = 0;
  const assertManifestUnchanged = async () => {
    const res = await fetch(`${r.url}/v2/federated/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST, "Ferry-Foreign-Layers": "supported" } });
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(res.headers.get("docker-content-digest"), manifestDigest);
    assert.deepEqual(bytes, manifest);
  };
  await assertManifestUnchanged();
  return {
    r,
    s,
    layer,
    layerDigest,
    manifestDigest,
    assertManifestUnchanged,
    async pull() {
      const out = join(work, `pull-${++pulls}`);
      const result = await skopeo(["copy", "--src-tls-verify=false", `docker://${r.host}/federated/app:v1`, `dir:${out}`]);
      const bytes = result.code === 0 ? await readFile(join(out, layerDigest.slice(7))) : null;
      if (bytes) assert.equal(sha256(bytes), layerDigest);
      return { ...result, layer: bytes };
    },
  };
}

const fromSkopeo = (s: FakeSource) => s.requests.filter((q) => /skopeo/.test(q.headers["user-agent"] ?? "")).length;
const fromRegistry = (s: FakeSource) => s.requests.filter((q) => /ferry-registry/.test(q.headers["user-agent"] ?? "")).length;

test("skopeo push keeps the foreign layer's URL and uploads nothing", { skip }, async (t) => {
  const sc = await scenario(t, {});
  const head = await fetch(`${sc.r.url}/v2/federated/app/blobs/${sc.layerDigest}`, { method: "HEAD" });
  assert.equal(head.status, 404, "the registry holds no bytes for the layer");
  const mark = await sc.r.registry.deps.meta.getForeignLayer("federated/app", sc.layerDigest);
  assert.deepEqual(mark?.manifests, [sc.manifestDigest]);
});

test("error mode: skopeo pulls from the URL while the source is up, and fails with the registry's 404 when it is down", { skip }, async (t) => {
  const sc = await scenario(t, {});
  const up = await sc.pull();
  assert.equal(up.code, 0, up.output);
  assert.equal(fromSkopeo(sc.s), 1);
  await sc.s.down();
  const down = await sc.pull();
  assert.notEqual(down.code, 0);
  assert.match(down.output, /404/);
  await sc.assertManifestUnchanged();
});

test("redirect mode: skopeo follows the registry's signed 307 to a source that serves signed URLs only; fails when it is down", { skip }, async (t) => {
  const secret = "cdn-shared-secret-0123456789";
  const sc = await scenario(t, { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "redirect", sign: { secret, expires: "5m" } }] });
  const direct = await sc.pull();
  assert.equal(direct.code, 0, direct.output);

  sc.s.requireSignature = secret; // skopeo's own unsigned attempt is dropped, so it asks the registry
  const before = sc.s.requests.length;
  const viaRegistry = await sc.pull();
  assert.equal(viaRegistry.code, 0, viaRegistry.output);
  const attempts = sc.s.requests.slice(before);
  assert.ok(attempts.some((q) => !q.path.includes("ferry-signature")), "skopeo tried the URL itself first");
  assert.ok(attempts.some((q) => /ferry-expires=\d+&ferry-signature=/.test(q.path)), "then followed the registry's signed redirect");
  assert.equal(fromRegistry(sc.s), 0, "redirect mode never fetches");

  await sc.s.down();
  const down = await sc.pull();
  assert.notEqual(down.code, 0);
  await sc.assertManifestUnchanged();
});

test("proxy mode without cache: the registry fetches for skopeo when skopeo cannot reach the source; 502 when no one can", { skip }, async (t) => {
  const sc = await scenario(t, { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "proxy" }] });
  sc.s.dropUserAgent = /skopeo/;
  for (let i = 0; i < 2; i++) {
    const pulled = await sc.pull();
    assert.equal(pulled.code, 0, pulled.output);
  }
  assert.equal(fromRegistry(sc.s), 2, "no cache: every pull is fetched again");
  await sc.s.down();
  const down = await sc.pull();
  assert.notEqual(down.code, 0);
  assert.match(down.output, /502/);
  await sc.assertManifestUnchanged();
});

test("proxy mode with cache: one fetch, then skopeo pulls from the cache even with the source down", { skip }, async (t) => {
  const sc = await scenario(t, { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "proxy", cache: true }] });
  sc.s.dropUserAgent = /skopeo/;
  const first = await sc.pull();
  assert.equal(first.code, 0, first.output);
  await sc.s.down();
  const second = await sc.pull();
  assert.equal(second.code, 0, second.output);
  assert.deepEqual(second.layer, sc.layer);
  assert.equal(fromRegistry(sc.s), 1);
  await sc.assertManifestUnchanged();
});

test("requireClientSupport: skopeo, which does not declare support, is told why it cannot have the manifest", { skip }, async (t) => {
  const sc = await scenario(t, { requireClientSupport: true });
  const refused = await sc.pull();
  assert.notEqual(refused.code, 0);
  assert.match(refused.output, /foreign layer/);
  assert.match(refused.output, /Ferry-Foreign-Layers: supported/);
  assert.equal(sc.s.requests.length, 0);
  await sc.assertManifestUnchanged();
});
