/**
 * The web UI's JSON API (/ferry/v1/session, repositories, repository, image,
 * gc) over real HTTP against a registry with an access policy: what each
 * caller sees is what they may pull, bad input is a 4xx in the spec's
 * format, and the numbers (tag count, size, platforms) are the ones pushed.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, sha256, type TestImage } from "../helpers/images.js";
import { PASSWORD, AUTH } from "./accounts.js";
import { basic, bearer, errorCode, fetchToken, pushBlobAs, pushImageAs, putManifestAs } from "../auth/util.js";


const OCI_INDEX = "application/vnd.oci.image.index.v1+json";

let registry: TestRegistry;
let amd64: TestImage;
let arm64: TestImage;
let index: Buffer;
const admin = basic("admin", PASSWORD.admin);
const alice = basic("alice", PASSWORD.alice);
const bob = basic("bob", PASSWORD.bob);

before(async () => {
  registry = await startTestRegistry({ auth: AUTH });
  amd64 = await buildImage({ layers: [{ "a.txt": "amd64\n" }, { "b.txt": "two layers\n" }] });
  arm64 = await buildImage({ layers: [{ "a.txt": "arm64\n" }], architecture: "arm64" });
  await pushImageAs(registry.url, "base/alpine", "3.20", amd64, admin);
  await pushImageAs(registry.url, "team-a/app", "1.0", amd64, admin);
  await pushImageAs(registry.url, "team-a/app", "arm", arm64, admin);
  index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: amd64.mediaType, digest: amd64.manifestDigest, size: amd64.manifest.length, platform: { os: "linux", architecture: "amd64" } },
        { mediaType: arm64.mediaType, digest: arm64.manifestDigest, size: arm64.manifest.length, platform: { os: "linux", architecture: "arm64" } },
      ],
    }),
  );
  const put = await putManifestAs(registry.url, "team-a/app", "multi", OCI_INDEX, index, admin);
  assert.equal(put.status, 201);
  await pushImageAs(registry.url, "team-b/secret", "1", amd64, admin);
});

after(() => registry.close());

async function get(path: string, authorization: string | null): Promise<Response> {
  return fetch(`${registry.url}${path}`, { headers: authorization ? { authorization } : {} });
}

async function json<T>(path: string, authorization: string | null): Promise<T> {
  const response = await get(path, authorization);
  assert.equal(response.status, 200, `${path}: ${response.status} ${await response.clone().text()}`);
  assert.match(response.headers.get("cache-control") ?? "", /no-store/);
  return (await response.json()) as T;
}

interface Page {
  repositories: Array<{ name: string; tags: number; size: number; lastPush: number | null }>;
  total: number;
  next?: string;
}

test("each caller lists exactly the repositories they may pull", async () => {
  const names = async (who: string | null) => (await json<Page>("/ferry/v1/repositories", who)).repositories.map((r) => r.name);
  assert.deepEqual(await names(null), ["base/alpine"]);
  assert.deepEqual(await names(bob), ["base/alpine"]);
  assert.deepEqual(await names(alice), ["base/alpine", "team-a/app"]);
  assert.deepEqual(await names(admin), ["base/alpine", "team-a/app", "team-b/secret"]);
  // The UI signs in with a token from /token: its subject's policy applies, like the catalog.
  const token = await fetchToken(registry.url, alice, ["registry:catalog:*"]);
  assert.deepEqual(await names(bearer(token.token)), ["base/alpine", "team-a/app"]);
});

test("repository summaries count tags, add up blob sizes and show the last push", async () => {
  const started = Date.now();
  const page = await json<Page>("/ferry/v1/repositories", admin);
  const app = page.repositories.find((r) => r.name === "team-a/app")!;
  assert.equal(app.tags, 3);
  // Blobs held by team-a/app: both configs and all three layers (manifests are not blobs).
  const blobs = new Set([amd64.config, ...amd64.layers, arm64.config, ...arm64.layers].map((b) => `${b.digest} ${b.size}`));
  const expected = [...blobs].reduce((sum, entry) => sum + Number(entry.split(" ")[1]), 0);
  assert.equal(app.size, expected);
  assert.ok(app.lastPush !== null && app.lastPush <= started && app.lastPush > started - 120_000);
  assert.equal(page.total, 3);
});

test("pagination: n and last walk the list with a cursor; search narrows it and counts what matches", async () => {
  const first = await json<Page>("/ferry/v1/repositories?n=2", admin);
  assert.deepEqual(first.repositories.map((r) => r.name), ["base/alpine", "team-a/app"]);
  assert.equal(first.next, "team-a/app");
  const second = await json<Page>(`/ferry/v1/repositories?n=2&last=${first.next}`, admin);
  assert.deepEqual(second.repositories.map((r) => r.name), ["team-b/secret"]);
  assert.equal(second.next, undefined);
  const search = await json<Page>("/ferry/v1/repositories?q=team-", alice);
  assert.deepEqual(search.repositories.map((r) => r.name), ["team-a/app"]);
  assert.equal(search.total, 1);
  // Search text is literal: % and _ are not wildcards.
  assert.equal((await json<Page>("/ferry/v1/repositories?q=%25", admin)).total, 0);
  assert.equal((await json<Page>("/ferry/v1/repositories?q=_", admin)).total, 0);
});

test("tags: digest, sizes, platforms (from the config or the index), times; delete offered only to who may delete", async () => {
  interface Repo {
    canDelete: boolean;
    tags: Array<{ tag: string; digest: string; kind: string; size: number; platforms: string[]; createdAt: number; pushedAt: number }>;
  }
  const repo = await json<Repo>("/ferry/v1/repository?name=team-a/app", alice);
  assert.equal(repo.canDelete, true);
  const byTag = Object.fromEntries(repo.tags.map((t) => [t.tag, t]));
  const imageSize = (i: TestImage) => i.manifest.length + i.config.size + i.layers.reduce((s, l) => s + l.size, 0);
  assert.equal(byTag["1.0"]!.digest, amd64.manifestDigest);
  assert.equal(byTag["1.0"]!.size, imageSize(amd64));
  assert.deepEqual(byTag["1.0"]!.platforms, ["linux/amd64"]);
  assert.deepEqual(byTag.arm!.platforms, ["linux/arm64"]);
  assert.equal(byTag.multi!.kind, "index");
  assert.equal(byTag.multi!.digest, sha256(index));
  assert.deepEqual(byTag.multi!.platforms, ["linux/amd64", "linux/arm64"]);
  assert.equal(byTag.multi!.size, index.length + imageSize(amd64) + imageSize(arm64));
  assert.ok(byTag.multi!.pushedAt >= byTag.multi!.createdAt);
  // bob may pull base/alpine (public) but not delete it.
  assert.equal((await json<Repo>("/ferry/v1/repository?name=base/alpine", bob)).canDelete, false);
});

test("a repository the caller may not pull does not exist for them (404), anonymous callers get 401", async () => {
  for (const path of ["/ferry/v1/repository?name=team-b/secret", "/ferry/v1/image?repository=team-b/secret&reference=1"]) {
    const asAlice = await get(path, alice);
    assert.equal(asAlice.status, 404, path);
    assert.equal(await errorCode(asAlice), "NAME_UNKNOWN");
    const anonymous = await get(path, null);
    assert.equal(anonymous.status, 401, path);
    // No Basic challenge: a browser would pop up its own password dialog over the UI.
    assert.doesNotMatch(anonymous.headers.get("www-authenticate") ?? "", /^Basic/i);
  }
  // The same answer for a repository that does not exist at all: no probing for names.
  const missing = await get("/ferry/v1/repository?name=team-b/nothing", alice);
  assert.equal(missing.status, 404);
  assert.equal(await errorCode(missing), "NAME_UNKNOWN");
});

test("image: an index as platforms → manifests → config and layers, raw bytes exactly as pushed", async () => {
  interface Node {
    digest: string;
    kind: string;
    raw: string;
    tags: string[];
    canDelete: boolean;
    children: Array<{ platform: string; present: boolean; image?: { kind: string; config: { architecture: string; os: string }; layers: Array<{ digest: string; size: number }> } }>;
  }
  const view = await json<Node>("/ferry/v1/image?repository=team-a/app&reference=multi", alice);
  assert.equal(view.kind, "index");
  assert.equal(view.raw, index.toString("utf8"));
  assert.deepEqual(view.tags, ["multi"]);
  assert.deepEqual(view.children.map((c) => c.platform), ["linux/amd64", "linux/arm64"]);
  const arm = view.children[1]!.image!;
  assert.equal(arm.config.architecture, "arm64");
  assert.deepEqual(arm.layers.map((l) => l.digest), arm64.layers.map((l) => l.digest));
  const byDigest = await json<Node>(`/ferry/v1/image?repository=team-a/app&reference=${amd64.manifestDigest}`, alice);
  assert.deepEqual(byDigest.tags.sort(), ["1.0"]);
});

test("bad input answers 4xx in the spec's error format, never 500", async () => {
  const cases: Array<[string, number, string]> = [
    ["/ferry/v1/repositories?n=0", 400, "UNSUPPORTED"],
    ["/ferry/v1/repositories?n=abc", 400, "UNSUPPORTED"],
    ["/ferry/v1/repositories?n=100000", 400, "UNSUPPORTED"],
    ["/ferry/v1/repository", 400, "UNSUPPORTED"],
    ["/ferry/v1/repository?name=../../etc", 400, "NAME_INVALID"],
    ["/ferry/v1/repository?name=UPPER", 400, "NAME_INVALID"],
    ["/ferry/v1/image?repository=team-a/app", 400, "UNSUPPORTED"],
    ["/ferry/v1/image?repository=team-a/app&reference=bad%20tag", 400, "MANIFEST_INVALID"],
    ["/ferry/v1/image?repository=team-a/app&reference=sha256:nothex", 400, "DIGEST_INVALID"],
    ["/ferry/v1/image?repository=team-a/app&reference=gone", 404, "MANIFEST_UNKNOWN"],
  ];
  for (const [path, status, code] of cases) {
    const response = await get(path, admin);
    assert.equal(response.status, status, `${path}: ${await response.clone().text()}`);
    assert.equal(await errorCode(response), code, path);
  }
  const badToken = await get("/ferry/v1/repositories", bearer("not.a.token"));
  assert.equal(badToken.status, 401);
});

test("session says who the caller is and whether they are an admin", async () => {
  assert.deepEqual(await json("/ferry/v1/session", null), { user: null, admin: false, authRequired: true, tokenService: true });
  assert.deepEqual(await json("/ferry/v1/session", alice), { user: "alice", admin: false, authRequired: true, tokenService: true });
  assert.deepEqual(await json("/ferry/v1/session", admin), { user: "admin", admin: true, authRequired: true, tokenService: true });
});

test("GC: admins run it and see the last result; others are refused", async () => {
  for (const method of ["GET", "POST"]) {
    const refused = await fetch(`${registry.url}/ferry/v1/gc`, { method, headers: { authorization: alice } });
    assert.equal(refused.status, 403, method);
    const anonymous = await fetch(`${registry.url}/ferry/v1/gc`, { method });
    assert.equal(anonymous.status, 401, method);
  }
  const before = await (await fetch(`${registry.url}/ferry/v1/gc`, { headers: { authorization: admin } })).json();
  assert.deepEqual(before, { running: false, last: null });
  const run = await fetch(`${registry.url}/ferry/v1/gc`, { method: "POST", headers: { authorization: admin } });
  assert.equal(run.status, 200);
  const body = (await run.json()) as { last: { report: { blobsDeleted: number; skipped: boolean }; finishedAt: number } };
  assert.equal(body.last.report.skipped, false);
  assert.equal(body.last.report.blobsDeleted, 0);
  const after = (await (await fetch(`${registry.url}/ferry/v1/gc`, { headers: { authorization: admin } })).json()) as typeof body;
  assert.equal(after.last.finishedAt, body.last.finishedAt);
});

test("image: referrers (signatures, SBOMs) grouped by artifact type", async () => {
  const empty = Buffer.from("{}");
  const payload = Buffer.from("signature bytes");
  for (const bytes of [empty, payload]) assert.equal((await pushBlobAs(registry.url, "team-a/app", bytes, admin)).status, 201);
  const referrer = (artifactType: string, n: number) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        artifactType,
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: sha256(empty), size: empty.length },
        layers: [{ mediaType: "application/octet-stream", digest: sha256(payload), size: payload.length }],
        subject: { mediaType: amd64.mediaType, digest: amd64.manifestDigest, size: amd64.manifest.length },
        annotations: { n: String(n) },
      }),
    );
  const signatures = [referrer("application/vnd.example.sig", 1), referrer("application/vnd.example.sig", 2)];
  const sbom = referrer("application/spdx+json", 3);
  for (const body of [...signatures, sbom]) {
    const put = await putManifestAs(registry.url, "team-a/app", sha256(body), "application/vnd.oci.image.manifest.v1+json", body, admin);
    assert.equal(put.status, 201, await put.text());
  }
  const view = await json<{ referrers: Record<string, Array<{ digest: string }>> }>(`/ferry/v1/image?repository=team-a/app&reference=1.0`, alice);
  assert.deepEqual(Object.keys(view.referrers).sort(), ["application/spdx+json", "application/vnd.example.sig"]);
  assert.deepEqual(view.referrers["application/vnd.example.sig"]!.map((r) => r.digest).sort(), signatures.map((b) => sha256(b)).sort());
  assert.deepEqual(view.referrers["application/spdx+json"]!.map((r) => r.digest), [sha256(sbom)]);
  // The artifact itself opens as an image whose artifact type is shown.
  const artifact = await json<{ artifactType: string; layers: unknown[] }>(`/ferry/v1/image?repository=team-a/app&reference=${sha256(sbom)}`, alice);
  assert.equal(artifact.artifactType, "application/spdx+json");
  assert.equal(artifact.layers.length, 1);
});
