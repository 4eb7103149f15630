/**
 * "The payload is the distribution notification envelope (so existing
 * consumers work)": the same skopeo push to the reference registry (CNCF
 * distribution 2.8, configured to notify the same kind of receiver) and to
 * Ferry, then a pull and a delete, produce events with the same shape — the same action, the same
 * target fields with the same values (the URL aside, which names each
 * registry), and the same request, actor and source fields.
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
import { startDistribution } from "../client/harness.js";
import { Receiver, type ReceivedEvent } from "./receiver.js";

const skip = skipUnless("skopeo", "docker-registry");

/** The field names of an object, nested ones as a.b, sorted. */
function shape(value: unknown, prefix = ""): string[] {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [prefix];
  return Object.entries(value as Record<string, unknown>).flatMap(([key, inner]) => shape(inner, prefix ? `${prefix}.${key}` : key)).sort();
}

test("Ferry's events have the shape and values of distribution's for the same skopeo push, pull and delete", { skip }, async (t) => {
  const theirs = await new Receiver().start();
  const ours = await new Receiver().start();
  t.after(async () => {
    await theirs.close();
    await ours.close();
  });
  const distribution = await startDistribution({
    extraConfig: ["notifications:", "  endpoints:", "    - name: test", `      url: ${theirs.url}`, "      timeout: 2s", "      threshold: 5", "      backoff: 100ms"],
  });
  t.after(() => distribution.close());
  const ferry = await startTestRegistry({ notifications: { pollInterval: "50ms", endpoints: [{ name: "test", url: ours.url, allowPrivate: true, events: ["push", "pull", "delete", "mount"] }] } });
  t.after(() => ferry.close());
  const work = await mkdtemp(join(tmpdir(), "ferry-notify-compat-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  const image = await buildImage({ layers: [{ "a.txt": "compat layer\n" }] });
  await writeLayout(join(work, "src"), [{ tag: "v1", image }]);

  for (const target of [distribution, ferry]) {
    await skopeo("copy", "--dest-tls-verify=false", `oci:${join(work, "src")}:v1`, `docker://${target.host}/compat/app:v1`);
  }
  const manifestPush = (events: ReceivedEvent[]) => events.find((e) => e.action === "push" && e.target.digest === image.manifestDigest && e.target.tag === "v1");
  await theirs.until(() => manifestPush(theirs.accepted) !== undefined, "distribution's manifest push event");
  await ours.until(() => manifestPush(ours.accepted) !== undefined, "Ferry's manifest push event");
  const reference = manifestPush(theirs.accepted)!;
  const event = manifestPush(ours.accepted)!;
  assert.equal(theirs.deliveries[0]!.headers["content-type"], ours.deliveries[0]!.headers["content-type"]);

  const { url: theirUrl, ...theirTarget } = reference.target;
  const { url: ourUrl, ...ourTarget } = event.target;
  // distribution 2.8 also lists `references` (the manifest's descriptors) — optional in its envelope; every field Ferry sends must be one it sends.
  const comparable = Object.fromEntries(Object.entries(theirTarget).filter(([key]) => key in ourTarget));
  assert.deepEqual(ourTarget, comparable, "target fields and values");
  for (const key of ["mediaType", "size", "digest", "length", "repository", "tag"]) assert.ok(key in ourTarget, `target.${key}`);
  assert.equal(String(theirUrl).replace(distribution.host, "HOST"), String(ourUrl).replace(ferry.host, "HOST"), "the same URL form");
  assert.deepEqual(shape(event.request), shape(reference.request), "request fields");
  assert.deepEqual(shape(event.source), shape(reference.source), "source fields");
  // distribution writes the client's address as host:port (Go's RemoteAddr), and source.addr as hostname:port.
  assert.match(reference.request!.addr!, /^127\.0\.0\.1:\d+$/);
  assert.match(event.request!.addr!, /^127\.0\.0\.1:\d+$/);
  assert.equal(event.source.addr.replace(/:\d+$/, ""), reference.source.addr.replace(/:\d+$/, ""));
  assert.deepEqual(Object.keys(event).filter((k) => k !== "ferry").sort(), Object.keys(reference).sort(), "event fields");
  // Then a pull by tag and a delete by digest.
  for (const target of [distribution, ferry]) {
    await skopeo("inspect", "--tls-verify=false", "--raw", `docker://${target.host}/compat/app:v1`);
    await skopeo("delete", "--tls-verify=false", `docker://${target.host}/compat/app@${image.manifestDigest}`);
  }
  // Every event, blobs included, in both: the same actions, digests, media types, sizes and tags.
  await theirs.until(() => theirs.accepted.some((e) => e.action === "delete"), "distribution's delete event");
  await ours.until(() => ours.accepted.some((e) => e.action === "delete"), "Ferry's delete event");
  await new Promise((resolve) => setTimeout(resolve, 300));
  const summary = (events: ReceivedEvent[]) =>
    events.map((e) => [e.action, e.target.digest, e.target.mediaType, e.target.size, e.target.repository, e.target.tag ?? "", e.action === "delete" ? `url=${e.target.url ?? "none"}` : ""].join(" ")).sort();
  assert.deepEqual(summary(ours.accepted), summary(theirs.accepted));
  assert.match(event.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
});
