/**
 * Interoperability with skopeo, both ways, on Ferry and on the reference
 * registry: what `ferry push` writes skopeo pulls byte for byte, and what
 * skopeo pushes `ferry pull` reads; a docker-archive written by `ferry pull`
 * is readable by skopeo.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { buildImage, writeLayout, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { skipUnlessS3 } from "../helpers/s3-rgw.js";
import { startReplicasBehindHaproxy } from "../helpers/replicas.js";
import { skopeo } from "../e2e/clients.js";
import { ferry, readBlob, startDistribution, startFerry, startFerryServeOnS3Target, tempDir, type Target } from "./harness.js";

const targets: Array<[string, () => Promise<Target>, string | false]> = [
  ["Ferry", startFerry, skipUnless("skopeo")],
  ["Ferry on S3 (ferry serve, Ceph RGW)", startFerryServeOnS3Target, skipUnless("skopeo") || skipUnlessS3()],
  ["three Ferry replicas behind haproxy", async () => ({ name: "ferry-ha", ...(await startReplicasBehindHaproxy()) }), skipUnless("skopeo", "haproxy")],
  ["distribution", () => startDistribution(), skipUnless("skopeo", "docker-registry")],
];

for (const [label, start, skip] of targets) {
  describe(`ferry and skopeo on ${label}`, { skip }, () => {
    let target: Target;
    let work: string;
    let image: TestImage;

    before(async () => {
      target = await start();
      work = await tempDir();
      image = await buildImage({ layers: [{ "one.txt": "one\n" }, { "two.bin": randomBytes(100_000) }] });
      await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    });
    after(() => target.close());

    test("skopeo pulls what ferry pushed, with the same manifest bytes and blobs", async () => {
      const push = await ferry(["push", `oci:${join(work, "src")}:v1`, `${target.host}/interop/ferry:v1`]);
      assert.equal(push.code, 0, push.stderr);
      const raw = await skopeo("inspect", "--tls-verify=false", "--raw", `docker://${target.host}/interop/ferry:v1`);
      assert.equal(raw, image.manifest.toString());
      const out = join(work, "by-skopeo");
      await skopeo("copy", "--src-tls-verify=false", `docker://${target.host}/interop/ferry:v1`, `oci:${out}:v1`);
      for (const blob of [image.config, ...image.layers]) assert.deepEqual(await readBlob(out, blob.digest), blob.bytes);
    });

    test("ferry pulls what skopeo pushed", async () => {
      await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${target.host}/interop/skopeo:v1`);
      const digest = (await skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${target.host}/interop/skopeo:v1`)).trim();
      const out = join(work, "by-ferry");
      const pull = await ferry(["pull", `${target.host}/interop/skopeo:v1`, `oci:${out}:v1`]);
      assert.equal(pull.code, 0, pull.stderr);
      assert.equal(pull.stdout.trim(), digest);
      for (const blob of [image.config, ...image.layers]) assert.deepEqual(await readBlob(out, blob.digest), blob.bytes);
    });

    test("skopeo reads the docker-archive ferry writes", async () => {
      const file = join(work, "ferry.tar");
      const pull = await ferry(["pull", `${target.host}/interop/ferry:v1`, `docker-archive:${file}`]);
      assert.equal(pull.code, 0, pull.stderr);
      const out = join(work, "from-archive");
      await skopeo("copy", `docker-archive:${file}`, `oci:${out}:v1`);
      const index = JSON.parse(await readFile(join(out, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
      const manifest = JSON.parse((await readBlob(out, index.manifests[0]!.digest)).toString()) as { config: { digest: string } };
      assert.equal(manifest.config.digest, image.config.digest, "the image config survives the archive unchanged");
    });
  });
}
