/**
 * podman (no daemon, vfs storage) pulls what skopeo pushed and pushes back into another
 * repository, on the filesystem driver and on `ferry serve` with storage.driver s3.
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFerryServeOnS3, startFilesystemRegistry, type RunningRegistry } from "../helpers/s3-serve.js";
import { skipUnlessS3 } from "../helpers/s3-rgw.js";
import { startReplicasBehindHaproxy } from "../helpers/replicas.js";
import { buildImage, writeLayout, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { podmanRunner, skopeo } from "./clients.js";

const variants: Array<[string, () => Promise<RunningRegistry>, string | false]> = [
  ["the filesystem driver", startFilesystemRegistry, skipUnless("skopeo", "podman")],
  ["ferry serve on S3", startFerryServeOnS3, skipUnless("skopeo", "podman") || skipUnlessS3()],
  ["three replicas behind haproxy", startReplicasBehindHaproxy, skipUnless("skopeo", "podman", "haproxy")],
];

for (const [label, start, skip] of variants) {
  describe(`podman against Ferry on ${label}`, { skip }, () => {
    let registry: RunningRegistry;
    let image: TestImage;
    let layout: string;

    before(async () => {
      if (skip) return;
      registry = await start();
      image = await buildImage({ layers: [{ "etc/motd": "ferried by podman\n" }] });
      layout = join(await mkdtemp(join(tmpdir(), "ferry-podman-src-")), "layout");
      await writeLayout(layout, [{ tag: "v1", image }]);
      await skopeo("copy", "--dest-tls-verify=false", `oci:${layout}:v1`, `docker://${registry.host}/podman/src:v1`);
    });

    after(async () => {
      await registry?.close();
    });

    test("podman pull, tag and push work against Ferry over plain HTTP", async () => {
      const podman = await podmanRunner();
      await podman("pull", "--tls-verify=false", `${registry.host}/podman/src:v1`);
      const id = (await podman("images", "--format", "{{.ID}}", `${registry.host}/podman/src:v1`)).trim();
      assert.ok(image.config.digest.slice(7).startsWith(id), `image id ${id} is the config digest`);
      await podman("tag", `${registry.host}/podman/src:v1`, `${registry.host}/podman/dst:v2`);
      await podman("push", "--tls-verify=false", `${registry.host}/podman/dst:v2`);
      const tags = await (await fetch(`${registry.url}/v2/podman/dst/tags/list`)).json();
      assert.deepEqual(tags, { name: "podman/dst", tags: ["v2"] });
      const inspected = JSON.parse(await skopeo("inspect", "--tls-verify=false", `docker://${registry.host}/podman/dst:v2`)) as { Layers: string[] };
      assert.equal(inspected.Layers.length, 1);
    });
  });
}
