/**
 * A real client's push produces what a distribution consumer expects: one
 * push event per blob and one for the manifest with its tag, the manifest
 * last (it is pushed last, and one repository's events keep their order),
 * each target matching what the registry stores; and skopeo's pull sends
 * pull events with skopeo's User-Agent.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry } from "../helpers/registry.js";
import { buildImage, writeLayout } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { skopeo } from "../e2e/clients.js";
import { Receiver } from "./receiver.js";

const skip = skipUnless("skopeo");

test("skopeo copy to the registry sends push events for every blob and then the tagged manifest; skopeo inspect a pull", { skip }, async (t) => {
  const hook = await new Receiver().start();
  t.after(() => hook.close());
  const r = await startTestRegistry({
    notifications: { pollInterval: "50ms", endpoints: [{ name: "ci", url: hook.url, allowPrivate: true, events: ["push", "pull"] }] },
  });
  t.after(() => r.close());
  const work = await mkdtemp(join(tmpdir(), "ferry-notify-skopeo-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  const image = await buildImage({ layers: [{ "a.txt": "layer one\n" }, { "b.txt": "layer two\n" }] });
  await writeLayout(join(work, "src"), [{ tag: "v1", image }]);

  await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${r.host}/e2e/app:v1`);
  await hook.until(() => hook.accepted.length >= 4, "3 blob pushes and the manifest push");
  const pushes = hook.accepted.filter((e) => e.action === "push");
  assert.equal(pushes.length, 4);
  const blobs = pushes.slice(0, 3);
  const manifest = pushes[3]!;
  assert.deepEqual(
    blobs.map((e) => e.target.digest).sort(),
    [image.config.digest, ...image.layers.map((l) => l.digest)].sort(),
    "one push event per blob",
  );
  for (const event of blobs) {
    const blob = [image.config, ...image.layers].find((b) => b.digest === event.target.digest)!;
    assert.deepEqual([event.target.size, event.target.length, event.target.mediaType], [blob.size, blob.size, "application/octet-stream"]);
  }
  assert.deepEqual(
    { digest: manifest.target.digest, tag: manifest.target.tag, mediaType: manifest.target.mediaType, size: manifest.target.size, repository: manifest.target.repository },
    { digest: image.manifestDigest, tag: "v1", mediaType: image.mediaType, size: image.manifest.length, repository: "e2e/app" },
  );
  assert.equal(manifest.target.url, `${r.url}/v2/e2e/app/manifests/${image.manifestDigest}`);
  assert.match(manifest.request!.useragent, /skopeo|containers/i);

  await skopeo("inspect", "--tls-verify=false", "--raw", `docker://${r.host}/e2e/app:v1`);
  await hook.until(() => hook.accepted.some((e) => e.action === "pull"), "the manifest pull");
  const pull = hook.accepted.find((e) => e.action === "pull")!;
  assert.deepEqual({ digest: pull.target.digest, tag: pull.target.tag }, { digest: image.manifestDigest, tag: "v1" });
});
