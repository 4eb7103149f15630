/**
 * Archives written and read by `ferry`, checked with skopeo and podman:
 * a docker-archive pulled from a foreign-layer image and pushed back must give
 * a manifest whose media types belong to one format (skopeo and podman refuse
 * a Docker schema 2 manifest with an OCI non-distributable layer type), and
 * `oci-archive:` is read and written compatibly with skopeo's.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, sha256, writeLayout, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { podmanRunner, skopeo } from "./clients.js";
import { ferry, startForeignServer, type ForeignServer } from "../client/harness.js";

const skip = skipUnless("skopeo", "podman");
let registry: TestRegistry;
let foreign: ForeignServer;
let work: string;

before(async () => {
  if (skip) return;
  registry = await startTestRegistry();
  foreign = await startForeignServer();
  work = await mkdtemp(join(tmpdir(), "ferry-client-archives-"));
});

after(async () => {
  await registry?.close();
  await foreign?.close();
});

/** An OCI image with one regular layer and one non-distributable layer served by the foreign host. */
async function foreignImage(): Promise<TestImage> {
  const base = await buildImage({ layers: [{ "etc/motd": "regular layer\n" }], foreign: [{ files: { "opt/base.bin": randomBytes(4000) }, urls: [] }] });
  const url = foreign.add(`layer-${Date.now()}`, base.layers[1]!.bytes);
  const manifest = JSON.parse(base.manifest.toString()) as { layers: Array<{ urls?: string[] }> };
  manifest.layers[1]!.urls = [url];
  const bytes = Buffer.from(JSON.stringify(manifest));
  return { ...base, manifest: bytes, manifestDigest: sha256(bytes), layers: [base.layers[0]!, { ...base.layers[1]!, urls: [url] }] };
}

test("docker-archive of a foreign-layer image round-trips through ferry into a manifest skopeo and podman accept", { skip }, async () => {
  const image = await foreignImage();
  await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
  const push = await ferry(["push", "-q", `oci:${join(work, "src")}:v1`, `${registry.host}/arch/src:v1`]);
  assert.equal(push.code, 0, push.stderr);
  const archive = join(work, "saved.tar");
  const pull = await ferry(["pull", "-q", `${registry.host}/arch/src:v1`, `docker-archive:${archive}`]);
  assert.equal(pull.code, 0, pull.stderr);
  const again = await ferry(["push", "-q", `docker-archive:${archive}`, `${registry.host}/arch/back:v1`]);
  assert.equal(again.code, 0, again.stderr);

  const raw = JSON.parse(await skopeo("inspect", "--tls-verify=false", "--raw", `docker://${registry.host}/arch/back:v1`)) as {
    mediaType: string;
    layers: Array<{ mediaType: string; urls?: string[] }>;
  };
  assert.equal(raw.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
  assert.deepEqual(
    raw.layers.map((l) => l.mediaType),
    ["application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"],
    "every layer type is a Docker one",
  );
  assert.deepEqual(raw.layers[1]!.urls, image.layers[1]!.urls);

  // skopeo copies it (fetching the foreign layer from its URL) and reads ferry's archive directly.
  await skopeo("copy", "--src-tls-verify=false", `docker://${registry.host}/arch/back:v1`, `oci:${join(work, "skopeo-out")}:v1`);
  await skopeo("copy", `docker-archive:${archive}`, `oci:${join(work, "skopeo-archive")}:v1`);
  // podman pulls it.
  const podman = await podmanRunner();
  await podman("pull", "--tls-verify=false", `${registry.host}/arch/back:v1`);
  const listed = await podman("images", "--format", "{{.Repository}}:{{.Tag}}");
  assert.match(listed, new RegExp(`${registry.host.replace(/\./g, "\\.")}/arch/back:v1`));
});

test("oci-archive: written by ferry, read by skopeo; written by skopeo, read by ferry", { skip }, async () => {
  const image = await buildImage({ layers: [{ "a.txt": "oci archive\n" }, { "b.bin": randomBytes(100_000) }] });
  await writeLayout(join(work, "plain"), [{ tag: "v1", image }]);
  assert.equal((await ferry(["push", "-q", `oci:${join(work, "plain")}:v1`, `${registry.host}/arch/oci:v1`])).code, 0);

  const mine = join(work, "ferry.tar");
  const pull = await ferry(["pull", "-q", `${registry.host}/arch/oci:v1`, `oci-archive:${mine}:v1`]);
  assert.equal(pull.code, 0, pull.stderr);
  assert.equal(await skopeo("inspect", "--raw", `oci-archive:${mine}:v1`), image.manifest.toString(), "skopeo reads the same manifest bytes");

  const theirs = join(work, "skopeo.tar");
  await skopeo("copy", `oci:${join(work, "plain")}:v1`, `oci-archive:${theirs}:v1`);
  const push = await ferry(["push", "-q", `oci-archive:${theirs}:v1`, `${registry.host}/arch/from-skopeo:v1`]);
  assert.equal(push.code, 0, push.stderr);
  assert.equal(push.stdout.trim(), image.manifestDigest);
  const copied = await ferry(["copy", "-q", `oci-archive:${mine}:v1`, `oci-archive:${join(work, "copy.tar")}:v2`]);
  assert.equal(copied.code, 0, copied.stderr);
  assert.equal(await skopeo("inspect", "--raw", `oci-archive:${join(work, "copy.tar")}:v2`), image.manifest.toString());
});
