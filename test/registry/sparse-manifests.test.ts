/**
 * OCI "sparse" manifests (config `manifests.sparse`): an image manifest may
 * be pushed before some of its layers, an index before some of its children.
 * Off by default: then both are refused with MANIFEST_BLOB_UNKNOWN as the
 * spec's default behaviour requires. What arrives later is kept by GC.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { buildImage, pushBlob, sha256 } from "../helpers/images.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";

type After = { after(fn: () => Promise<void>): void };

async function registry(t: After, sparse?: boolean): Promise<TestRegistry> {
  const r = await startTestRegistry(sparse === undefined ? {} : { manifests: { sparse } });
  t.after(() => r.close());
  return r;
}

async function put(r: TestRegistry, repository: string, reference: string, body: Buffer, mediaType: string): Promise<{ status: number; code?: string }> {
  const response = await fetch(`${r.url}/v2/${repository}/manifests/${reference}`, { method: "PUT", headers: { "Content-Type": mediaType }, body: new Uint8Array(body) });
  const text = await response.text();
  return { status: response.status, code: response.status >= 400 ? (JSON.parse(text) as { errors: Array<{ code: string }> }).errors[0]!.code : undefined };
}

function index(children: Array<{ digest: string; size: number }>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: children.map((c, i) => ({ mediaType: "application/vnd.oci.image.manifest.v1+json", ...c, platform: { os: "linux", architecture: i === 0 ? "amd64" : "arm64" } })),
    }),
  );
}

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";

test("by default a manifest whose layer or child is missing is refused (MANIFEST_BLOB_UNKNOWN), with manifests.sparse: false too", async (t) => {
  for (const r of [await registry(t), await registry(t, false)]) {
    const image = await buildImage({ layers: [{ "a.txt": "a" }] });
    await pushBlob(r.url, "app", image.config.bytes);
    assert.deepEqual(await put(r, "app", "v1", image.manifest, image.mediaType), { status: 400, code: "MANIFEST_BLOB_UNKNOWN" });
    assert.deepEqual(await put(r, "app", "multi", index([{ digest: sha256("nope"), size: 4 }]), OCI_INDEX), { status: 400, code: "MANIFEST_BLOB_UNKNOWN" });
  }
});

test("with manifests.sparse an image is stored before its layers and an index before its children; pulls return the bytes as pushed", async (t) => {
  const r = await registry(t, true);
  const image = await buildImage({ layers: [{ "a.txt": "sparse" }] });
  assert.equal((await put(r, "app", "v1", image.manifest, image.mediaType)).status, 201, "nothing pushed but the manifest");
  const pulled = await fetch(`${r.url}/v2/app/manifests/v1`, { headers: { Accept: image.mediaType } });
  assert.deepEqual(Buffer.from(await pulled.arrayBuffer()), image.manifest);
  // The missing layer is still unknown as a blob, not invented.
  assert.equal((await fetch(`${r.url}/v2/app/blobs/${image.layers[0]!.digest}`, { method: "HEAD" })).status, 404);

  const absentChild = { digest: sha256(randomBytes(32)), size: 1024 };
  const presentChild = { digest: image.manifestDigest, size: image.manifest.length };
  const idx = index([presentChild, absentChild]);
  assert.equal((await put(r, "app", "multi", idx, OCI_INDEX)).status, 201);
  const got = await fetch(`${r.url}/v2/app/manifests/multi`, { headers: { Accept: OCI_INDEX } });
  assert.equal(got.headers.get("docker-content-digest"), sha256(idx));
  assert.equal((await fetch(`${r.url}/v2/app/manifests/${absentChild.digest}`)).status, 404);
});

test("with manifests.sparse a held blob still has to match its descriptor's size", async (t) => {
  const r = await registry(t, true);
  const image = await buildImage({ layers: [{ "a.txt": "size" }] });
  await pushBlob(r.url, "app", image.config.bytes);
  const lying = JSON.parse(image.manifest.toString()) as { config: { size: number } };
  lying.config.size += 1;
  assert.deepEqual(await put(r, "app", "v1", Buffer.from(JSON.stringify(lying)), image.mediaType), { status: 400, code: "MANIFEST_INVALID" });
});

test("layers and children that arrive after a sparse manifest are referenced by it: garbage collection keeps them", async (t) => {
  const r = await registry(t, true);
  const image = await buildImage({ layers: [{ "late.txt": "late layer" }] });
  const idx = index([{ digest: image.manifestDigest, size: image.manifest.length }]);
  assert.equal((await put(r, "app", "multi", idx, OCI_INDEX)).status, 201);
  assert.equal((await put(r, "app", image.manifestDigest, image.manifest, image.mediaType)).status, 201);
  for (const blob of [image.config, ...image.layers]) await pushBlob(r.url, "app", blob.bytes);
  await r.registry.gc({ gracePeriodMs: 0, untagged: true });
  assert.equal((await fetch(`${r.url}/v2/app/manifests/${image.manifestDigest}`, { method: "HEAD", headers: { Accept: image.mediaType } })).status, 200, "the child is kept: the tagged index references it");
  for (const blob of [image.config, ...image.layers]) {
    assert.equal((await fetch(`${r.url}/v2/app/blobs/${blob.digest}`, { method: "HEAD" })).status, 200, `blob ${blob.digest} kept`);
  }
  // Untagging the index lets GC take everything: references do not pin content for ever.
  assert.equal((await fetch(`${r.url}/v2/app/manifests/multi`, { method: "DELETE" })).status, 202);
  await r.registry.gc({ gracePeriodMs: 0, untagged: true });
  await r.registry.gc({ gracePeriodMs: 0, untagged: true });
  assert.equal((await fetch(`${r.url}/v2/app/blobs/${image.layers[0]!.digest}`, { method: "HEAD" })).status, 404);
});
