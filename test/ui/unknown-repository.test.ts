/**
 * ui.md: a repository the caller may not pull answers 404 NAME_UNKNOWN
 * "exactly as for a name that was never pushed". A never-pushed name used to
 * answer 200 with no tags, so a mistyped URL in the UI showed an empty
 * repository (with a delete column) instead of "not found". A repository whose
 * manifests are all untagged still exists and answers 200.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { OCI_MANIFEST, expectError, makeImage, pushManifest, req } from "../http/client.js";

test("a never-pushed name is 404 NAME_UNKNOWN; an untagged repository is 200 with no tags", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const errors = await expectError(await req(`${r.url}/ferry/v1/repository?name=never/pushed`), 404, "NAME_UNKNOWN");
  assert.deepEqual(errors[0]!.detail, { name: "never/pushed" });
  // The same answer as the distribution API gives for the same name.
  await expectError(await req(`${r.url}/v2/never/pushed/tags/list`), 404, "NAME_UNKNOWN");

  const pushed = await pushManifest(r.url, "team/untagged", "v1", await makeImage(r.url, "team/untagged"), OCI_MANIFEST);
  assert.equal((await req(`${r.url}/v2/team/untagged/manifests/v1`, { method: "DELETE" })).status, 202);
  assert.equal((await req(`${r.url}/v2/team/untagged/manifests/${pushed.digest}`, { method: "HEAD" })).status, 200, "the manifest is still there, untagged");
  const res = await req(`${r.url}/ferry/v1/repository?name=team/untagged`);
  assert.equal(res.status, 200);
  assert.deepEqual(((await res.json()) as { tags: unknown[] }).tags, []);
});
