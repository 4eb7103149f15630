/**
 * Real clients against a real server: skopeo copy/inspect/list-tags/delete
 * round trips must preserve manifests byte for byte (so pull-by-digest and
 * signatures keep working) in OCI and Docker formats. Run on the filesystem
 * driver and on `ferry serve` with storage.driver s3 (Ceph RGW).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startFerryServeOnS3, startFilesystemRegistry, type RunningRegistry } from "../helpers/s3-serve.js";
import { skipUnlessS3 } from "../helpers/s3-rgw.js";
import { startReplicasBehindHaproxy } from "../helpers/replicas.js";
import { buildImage, writeLayout, sha256, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { skopeo } from "./clients.js";

const variants: Array<[string, () => Promise<RunningRegistry>, string | false]> = [
  ["the filesystem driver", startFilesystemRegistry, skipUnless("skopeo")],
  ["ferry serve on S3", startFerryServeOnS3, skipUnless("skopeo") || skipUnlessS3()],
  ["three replicas behind haproxy", startReplicasBehindHaproxy, skipUnless("skopeo", "haproxy")],
];

for (const [label, start, skip] of variants) {
  describe(`skopeo against Ferry on ${label}`, { skip }, () => {
    let registry: RunningRegistry;
    let work: string;
    let image: TestImage;

    before(async () => {
      if (skip) return;
      registry = await start();
      work = await mkdtemp(join(tmpdir(), "ferry-e2e-"));
      // A layer over one S3 part (5 MiB there): it is pushed as a multipart upload.
      image = await buildImage({ layers: [{ "a.txt": "layer one\n" }, { "b.txt": "layer two\n" }, { "big.bin": randomBytes(6 * 1024 * 1024 + 123) }] });
      await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    });

    after(async () => {
      await registry?.close();
    });

    const tls = "--tls-verify=false";

    test("skopeo push by tag keeps the manifest byte for byte, and inspect/pull by tag and digest return it", async () => {
      await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${registry.host}/e2e/app:v1`);
      const raw = await skopeo("inspect", tls, "--raw", `docker://${registry.host}/e2e/app:v1`);
      assert.equal(raw, image.manifest.toString());
      const inspected = JSON.parse(await skopeo("inspect", tls, `docker://${registry.host}/e2e/app:v1`)) as { Digest: string; Layers: string[] };
      assert.equal(inspected.Digest, image.manifestDigest);
      assert.deepEqual(inspected.Layers, image.layers.map((l) => l.digest));

      for (const ref of ["e2e/app:v1", `e2e/app@${image.manifestDigest}`]) {
        const out = join(work, `pulled-${ref.replace(/[^a-z0-9]/g, "")}`);
        await skopeo("copy", "--src-tls-verify=false", `docker://${registry.host}/${ref}`, `oci:${out}:x`);
        const index = JSON.parse(await readFile(join(out, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
        assert.equal(index.manifests[0]!.digest, image.manifestDigest, `pulled manifest digest for ${ref}`);
        const pulledManifest = await readFile(join(out, "blobs", "sha256", image.manifestDigest.slice(7)));
        assert.ok(pulledManifest.equals(image.manifest));
        for (const layer of image.layers) {
          const bytes = await readFile(join(out, "blobs", "sha256", layer.digest.slice(7)));
          assert.equal(sha256(bytes), layer.digest);
        }
      }
    });

    test("skopeo pushes and pulls Docker schema 2 images with their media type", async () => {
      await skopeo("copy", "--format", "v2s2", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${registry.host}/e2e/docker:v1`);
      const raw = await skopeo("inspect", tls, "--raw", `docker://${registry.host}/e2e/docker:v1`);
      const manifest = JSON.parse(raw) as { mediaType: string };
      assert.equal(manifest.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
      const response = await fetch(`${registry.url}/v2/e2e/docker/manifests/v1`, { method: "HEAD" });
      assert.equal(response.headers.get("content-type"), "application/vnd.docker.distribution.manifest.v2+json");
      assert.equal(response.headers.get("docker-content-digest"), sha256(raw));
      const out = join(work, "docker-pulled");
      await skopeo("copy", "--src-tls-verify=false", `docker://${registry.host}/e2e/docker:v1`, `dir:${out}`);
      assert.equal(await readFile(join(out, "manifest.json"), "utf8"), raw);
    });

    test("skopeo list-tags lists every tag, sorted, and delete removes the manifest and its tags", async () => {
      for (const tag of ["b", "a", "c-1"]) {
        await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${registry.host}/e2e/tags:${tag}`);
      }
      const listed = JSON.parse(await skopeo("list-tags", tls, `docker://${registry.host}/e2e/tags`)) as { Tags: string[] };
      assert.deepEqual(listed.Tags, ["a", "b", "c-1"]);
      await skopeo("delete", tls, `docker://${registry.host}/e2e/tags@${image.manifestDigest}`);
      const after = JSON.parse(await skopeo("list-tags", tls, `docker://${registry.host}/e2e/tags`)) as { Tags: string[] };
      assert.deepEqual(after.Tags, []);
      const gone = await fetch(`${registry.url}/v2/e2e/tags/manifests/${image.manifestDigest}`);
      assert.equal(gone.status, 404);
    });

    test("skopeo copies between repositories of the same registry (blobs mounted, content intact)", async () => {
      await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${registry.host}/e2e/mount-src:v1`);
      await skopeo("copy", tls.replace("tls", "src-tls"), "--dest-tls-verify=false", `docker://${registry.host}/e2e/mount-src:v1`, `docker://${registry.host}/team/mount-dst:v1`);
      const raw = await skopeo("inspect", tls, "--raw", `docker://${registry.host}/team/mount-dst:v1`);
      assert.equal(raw, image.manifest.toString());
      for (const layer of image.layers) {
        const response = await fetch(`${registry.url}/v2/team/mount-dst/blobs/${layer.digest}`);
        assert.equal(response.status, 200);
        assert.equal(sha256(Buffer.from(await response.arrayBuffer())), layer.digest);
      }
    });

    test("skopeo copy --all round-trips a multi-platform OCI index unchanged", async () => {
      const amd64 = await buildImage({ architecture: "amd64", layers: [{ "arch.txt": "amd64\n" }] });
      const arm64 = await buildImage({ architecture: "arm64", layers: [{ "arch.txt": "arm64\n" }] });
      const index = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: [
            { mediaType: amd64.mediaType, digest: amd64.manifestDigest, size: amd64.manifest.length, platform: { os: "linux", architecture: "amd64" } },
            { mediaType: arm64.mediaType, digest: arm64.manifestDigest, size: arm64.manifest.length, platform: { os: "linux", architecture: "arm64" } },
          ],
        }),
      );
      const dir = join(work, "multi");
      await writeLayout(dir, [
        { tag: "amd64", image: amd64 },
        { tag: "arm64", image: arm64 },
      ]);
      // Add the index itself under tag "multi".
      const { writeFile } = await import("node:fs/promises");
      await writeFile(join(dir, "blobs", "sha256", sha256(index).slice(7)), index);
      await writeFile(
        join(dir, "index.json"),
        JSON.stringify({
          schemaVersion: 2,
          manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", digest: sha256(index), size: index.length, annotations: { "org.opencontainers.image.ref.name": "multi" } }],
        }),
      );
      await skopeo("copy", "--all", "--dest-tls-verify=false", `oci:${dir}:multi`, `docker://${registry.host}/e2e/multi:latest`);
      const raw = await skopeo("inspect", tls, "--raw", `docker://${registry.host}/e2e/multi:latest`);
      assert.equal(raw, index.toString());
      const child = await skopeo("inspect", tls, "--raw", `docker://${registry.host}/e2e/multi@${arm64.manifestDigest}`);
      assert.equal(child, arm64.manifest.toString());
      const out = join(work, "multi-pulled");
      await skopeo("copy", "--all", "--src-tls-verify=false", `docker://${registry.host}/e2e/multi:latest`, `oci:${out}:m`);
      const names = await readdir(join(out, "blobs", "sha256"));
      for (const digest of [sha256(index), amd64.manifestDigest, arm64.manifestDigest]) assert.ok(names.includes(digest.slice(7)));
    });
  });
}
