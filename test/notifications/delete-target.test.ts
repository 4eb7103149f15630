/**
 * notifications.md: a delete's target is "`repository` and `digest`, or `tag`
 * for a tag delete". Deleting a manifest by digest (`skopeo delete`) used to
 * send target.url = .../v2/NAME/blobs/<manifest digest>: a receiver that
 * follows it, or tells blobs from manifests by it, was misled. A delete has
 * no url (distribution sends none either); pushes keep theirs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { OCI_MANIFEST, makeImage, pushBlob, pushManifest, req } from "../http/client.js";
import { Receiver } from "./receiver.js";

test("manifest, tag and blob deletes name the content without a url; the push before them has one", async (t) => {
  const hook = await new Receiver().start();
  t.after(() => hook.close());
  const r = await startTestRegistry({
    notifications: { pollInterval: "50ms", endpoints: [{ name: "t", url: hook.url, allowPrivate: true, events: ["push", "delete"], timeout: "500ms", backoff: "50ms" }] },
  });
  t.after(() => r.close());

  const pushed = await pushManifest(r.url, "team/app", "v1", await makeImage(r.url, "team/app"), OCI_MANIFEST);
  const blob = await pushBlob(r.url, "team/other", "a blob to delete");
  assert.equal((await req(`${r.url}/v2/team/app/manifests/${pushed.digest}`, { method: "DELETE" })).status, 202);
  assert.equal((await req(`${r.url}/v2/team/other/blobs/${blob}`, { method: "DELETE" })).status, 202);

  await hook.until(() => hook.accepted.filter((e) => e.action === "delete").length >= 3, "manifest, tag and blob deletes");
  const deletes = hook.accepted.filter((e) => e.action === "delete");
  const manifestDelete = deletes.find((e) => e.target.digest === pushed.digest);
  assert.ok(manifestDelete, "the manifest delete");
  assert.equal(manifestDelete.target.url, undefined, `no url for a deleted manifest, got ${String(manifestDelete.target.url)}`);
  assert.ok(deletes.some((e) => e.target.tag === "v1" && e.target.url === undefined), "the tag delete, without url");
  const blobDelete = deletes.find((e) => e.target.digest === blob);
  assert.ok(blobDelete, "the blob delete");
  assert.equal(blobDelete.target.url, undefined);

  const manifestPush = hook.accepted.find((e) => e.action === "push" && e.target.digest === pushed.digest);
  assert.equal(manifestPush?.target.url, `${r.url}/v2/team/app/manifests/${pushed.digest}`, "a push still says where to fetch it");
});
