/**
 * distribution-spec (main) "Pushing Manifests", `tag` query parameters:
 *
 *   "When pushing a manifest by digest, the registry MAY support the pushing of
 *   tags specified by addition of `tag` query parameters. If a registry supports
 *   this, it: 1. SHOULD support pushing at least 10 tags per request. 2. MAY
 *   return a `414 Request-URI Too Long` status if too many tags are included in
 *   the request. 3. MUST include an `OCI-Tag` response header ... for each
 *   accepted tag."
 *
 *   PUT /v2/<name>/manifests/<digest>?tag=1.2.3&tag=1.2&tag=1&tag=latest
 *   OCI-Tag: 1.2.3, 1.2, 1
 *   OCI-Tag: latest
 *
 * Plus "The Docker-Content-Digest header returns the digest of the uploaded
 * blob, and MUST be equal to the client provided digest": a sha512 push keeps
 * answering sha512 when pulled by the tags it set (the conformance suite's
 * "Tag Param sha512" group).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { basic, bcryptHash } from "../auth/util.js";
import { OCI_INDEX, OCI_MANIFEST, descriptor, expectError, makeImage, pushManifest, req, resolveLocation, sha256, sha512, uid } from "./client.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

const ACCEPT = [OCI_MANIFEST, OCI_INDEX].join(", ");

/** PUT /v2/<repo>/manifests/<reference>?tag=...&tag=... (tags appended raw, already URL-safe or pre-encoded). */
async function putWithTags(repo: string, reference: string, tags: string[], bytes: Buffer, headers: Record<string, string> = {}): Promise<Response> {
  const query = tags.map((t) => `tag=${t}`).join("&");
  return req(`${reg.url}/v2/${repo}/manifests/${reference}${query ? `?${query}` : ""}`, {
    method: "PUT",
    headers: { "Content-Type": OCI_MANIFEST, ...headers },
    body: new Uint8Array(bytes),
  });
}

/** Every tag named by the OCI-Tag header lines (RFC 9110: repeated lines and comma lists are the same list). */
function ociTags(res: Response): string[] {
  const value = res.headers.get("oci-tag");
  return value === null ? [] : value.split(",").map((t) => t.trim());
}

async function manifest(repo: string, reference: string, method = "GET"): Promise<Response> {
  return req(`${reg.url}/v2/${repo}/manifests/${reference}`, { method, headers: { Accept: ACCEPT } });
}

async function tagList(repo: string): Promise<string[]> {
  const res = await req(`${reg.url}/v2/${repo}/tags/list`);
  if (res.status === 404) return [];
  assert.equal(res.status, 200);
  return ((await res.json()) as { tags: string[] | null }).tags ?? [];
}

/** GET and HEAD by `reference` serve `bytes` with `digest` as Docker-Content-Digest. */
async function assertServedAs(repo: string, reference: string, bytes: Buffer, digest: string): Promise<void> {
  const get = await manifest(repo, reference);
  assert.equal(get.status, 200, `GET ${repo}:${reference}`);
  assert.equal(get.headers.get("docker-content-digest"), digest, `GET ${reference}: Docker-Content-Digest`);
  assert.ok(Buffer.from(await get.arrayBuffer()).equals(bytes), `GET ${reference}: the pushed bytes`);
  const head = await manifest(repo, reference, "HEAD");
  assert.equal(head.status, 200, `HEAD ${repo}:${reference}`);
  assert.equal(head.headers.get("docker-content-digest"), digest, `HEAD ${reference}: Docker-Content-Digest`);
}

async function imageBytes(repo: string): Promise<Buffer> {
  return Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
}

describe("manifest PUT by digest with tag query parameters", () => {
  it("sets every tag, answers OCI-Tag naming each, and each tag pulls the manifest", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    const digest = sha256(bytes);
    const tags = ["1.2.3", "1.2", "1", "latest"];
    const res = await putWithTags(repo, digest, tags, bytes);
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.equal(new URL(resolveLocation(reg.url, res)).pathname, `/v2/${repo}/manifests/${digest}`);
    assert.deepEqual(ociTags(res).sort(), [...tags].sort());
    for (const tag of tags) await assertServedAs(repo, tag, bytes, digest);
    assert.deepEqual((await tagList(repo)).sort(), [...tags].sort());
  });

  it("a sha512 push answers the sha512 digest on PUT, and on HEAD and GET by each tag it set", async () => {
    // The conformance suite's "Tag Param sha512": the digest is the client's, not one the registry picks.
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    const digest = sha512(bytes);
    const res = await putWithTags(repo, digest, ["v512", "also-512"], bytes);
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.equal(new URL(resolveLocation(reg.url, res)).pathname, `/v2/${repo}/manifests/${digest}`);
    assert.deepEqual(ociTags(res).sort(), ["also-512", "v512"]);
    await assertServedAs(repo, "v512", bytes, digest);
    await assertServedAs(repo, "also-512", bytes, digest);
    await assertServedAs(repo, digest, bytes, digest);
    assert.equal((await manifest(repo, sha256(bytes))).status, 404, "no sha256 twin was stored");
  });

  it("an index pushed by sha512 digest with tags answers sha512 too", async () => {
    const repo = uid("tp/");
    const child = await imageBytes(repo);
    await pushManifest(reg.url, repo, sha256(child), child, OCI_MANIFEST);
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [descriptor(OCI_MANIFEST, child)] }));
    const digest = sha512(index);
    const res = await req(`${reg.url}/v2/${repo}/manifests/${digest}?tag=multi`, {
      method: "PUT",
      headers: { "Content-Type": OCI_INDEX },
      body: new Uint8Array(index),
    });
    assert.equal(res.status, 201, await res.clone().text());
    assert.deepEqual(ociTags(res), ["multi"]);
    await assertServedAs(repo, "multi", index, digest);
  });

  it("takes at least 10 tags in one request (the spec's SHOULD) — and 100", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    const tags = Array.from({ length: 100 }, (_, i) => `t${i}-${"x".repeat(100)}`);
    const res = await putWithTags(repo, sha256(bytes), tags, bytes);
    assert.equal(res.status, 201, await res.clone().text());
    assert.deepEqual(ociTags(res).sort(), [...tags].sort());
    assert.equal((await tagList(repo)).length, 100);
    await assertServedAs(repo, tags[99]!, bytes, sha256(bytes));
  });

  it("more tags than the limit answer 414 in the spec's error format, and store nothing", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    const tags = Array.from({ length: 101 }, (_, i) => `t${i}`);
    const errors = await expectError(await putWithTags(repo, sha256(bytes), tags, bytes), 414, "MANIFEST_INVALID");
    assert.match(errors[0]!.message ?? "", /100/);
    assert.equal((await manifest(repo, sha256(bytes))).status, 404, "the manifest was not stored");
    assert.deepEqual(await tagList(repo), []);
  });

  it("a tag repeated in the parameters is set once and named once", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    const res = await putWithTags(repo, sha256(bytes), ["same", "same", "other", "same"], bytes);
    assert.equal(res.status, 201, await res.clone().text());
    assert.deepEqual(ociTags(res).sort(), ["other", "same"]);
    assert.deepEqual((await tagList(repo)).sort(), ["other", "same"]);
  });

  it("moves a tag that pointed at another manifest, like a push by tag does", async () => {
    const repo = uid("tp/");
    const first = await pushManifest(reg.url, repo, "stable", await makeImage(reg.url, repo), OCI_MANIFEST);
    const second = await imageBytes(repo);
    const res = await putWithTags(repo, sha256(second), ["stable"], second);
    assert.equal(res.status, 201, await res.clone().text());
    await assertServedAs(repo, "stable", second, sha256(second));
    await assertServedAs(repo, first.digest, first.bytes, first.digest);
  });

  it("without tag parameters nothing changes: no OCI-Tag, no tag (push by digest and by tag)", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    const byDigest = await putWithTags(repo, sha256(bytes), [], bytes);
    assert.equal(byDigest.status, 201);
    assert.equal(byDigest.headers.get("oci-tag"), null);
    assert.deepEqual(await tagList(repo), []);
    const byTag = await putWithTags(repo, "plain", [], bytes);
    assert.equal(byTag.status, 201);
    assert.equal(byTag.headers.get("oci-tag"), null);
    assert.equal(byTag.headers.get("docker-content-digest"), sha256(bytes), "a push by tag still answers sha256");
  });
});

describe("tag query parameters that are refused", () => {
  const bad: Array<[string, string]> = [
    ["empty", ""],
    ["starting with '.'", ".hidden"],
    ["starting with '-'", "-x"],
    ["129 characters", "a".repeat(129)],
    ["a path", "..%2F..%2Fetc"],
    ["a comma list (one parameter per tag)", "a%2Cb"],
    ["CR LF header injection", "ok%0D%0AX-Injected:%201"],
    ["non-ASCII", "%C3%A9t%C3%A9"],
  ];
  for (const [what, raw] of bad) {
    it(`a tag ${what} answers 400 MANIFEST_INVALID and nothing is stored, not even the valid tags`, async () => {
      const repo = uid("tp/");
      const bytes = await imageBytes(repo);
      const res = await putWithTags(repo, sha256(bytes), ["fine", raw], bytes);
      assert.equal(res.headers.get("x-injected"), null);
      await expectError(res, 400, "MANIFEST_INVALID");
      assert.equal((await manifest(repo, sha256(bytes))).status, 404);
      assert.deepEqual(await tagList(repo), []);
    });
  }

  it("on a push by tag they answer 400 MANIFEST_INVALID: the spec defines them for a push by digest only", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    await expectError(await putWithTags(repo, "main", ["extra"], bytes), 400, "MANIFEST_INVALID");
    assert.deepEqual(await tagList(repo), []);
  });

  it("a digest that does not match the body answers 400 DIGEST_INVALID and sets no tag", async () => {
    const repo = uid("tp/");
    const bytes = await imageBytes(repo);
    await expectError(await putWithTags(repo, sha512(randomBytes(8)), ["t1", "t2"], bytes), 400, "DIGEST_INVALID");
    assert.deepEqual(await tagList(repo), []);
  });

  it("a manifest whose blobs are missing answers MANIFEST_BLOB_UNKNOWN and sets no tag (all or nothing)", async () => {
    const repo = uid("tp/");
    const image = await makeImage(reg.url, repo);
    const broken = Buffer.from(
      JSON.stringify({ ...image, layers: [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", randomBytes(32))] }),
    );
    await pushManifest(reg.url, repo, "keep", image, OCI_MANIFEST);
    await expectError(await putWithTags(repo, sha256(broken), ["keep", "new"], broken), 400, "MANIFEST_BLOB_UNKNOWN");
    assert.deepEqual(await tagList(repo), ["keep"]);
    await assertServedAs(repo, "keep", Buffer.from(JSON.stringify(image)), sha256(JSON.stringify(image)));
  });
});

describe("tag query parameters and access control", () => {
  let secured: TestRegistry;
  const writer = basic("writer", "writer-pw");
  const reader = basic("reader", "reader-pw");
  before(async () => {
    secured = await startTestRegistry({
      auth: {
        users: { writer: { passwordHash: bcryptHash("writer-pw") }, reader: { passwordHash: bcryptHash("reader-pw") } },
        rules: [
          { repositories: ["app/**"], users: ["writer"], actions: ["pull", "push"] },
          { repositories: ["app/**"], users: ["reader"], actions: ["pull"] },
        ],
      },
    });
  });
  after(async () => {
    await secured?.close();
  });

  it("only a caller who may push sets tags: a reader gets 403 DENIED, anonymous 401, and the tag stays where it was", async () => {
    const repo = "app/x";
    const auth = { Authorization: writer };
    const config = Buffer.from(`{"seed":"${randomBytes(4).toString("hex")}"}`);
    const pushBlob = async (data: Buffer) => {
      const res = await fetch(`${secured.url}/v2/${repo}/blobs/uploads/?digest=${sha256(data)}`, {
        method: "POST",
        headers: { ...auth, "Content-Type": "application/octet-stream" },
        body: new Uint8Array(data),
      });
      assert.equal(res.status, 201);
    };
    await pushBlob(config);
    const make = (n: number) =>
      Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor("application/vnd.oci.image.config.v1+json", config), layers: [], annotations: { n: String(n) } }));
    const first = make(1);
    const put = (bytes: Buffer, headers: Record<string, string>) =>
      fetch(`${secured.url}/v2/${repo}/manifests/${sha256(bytes)}?tag=release`, {
        method: "PUT",
        headers: { "Content-Type": OCI_MANIFEST, ...headers },
        body: new Uint8Array(bytes),
      });
    const ok = await put(first, auth);
    assert.equal(ok.status, 201, await ok.clone().text());
    assert.deepEqual(ociTags(ok), ["release"]);

    const second = make(2);
    await expectError(await put(second, { Authorization: reader }), 403, "DENIED");
    await expectError(await put(second, {}), 401, "UNAUTHORIZED");
    const now = await fetch(`${secured.url}/v2/${repo}/manifests/release`, { method: "HEAD", headers: { ...auth, Accept: OCI_MANIFEST } });
    assert.equal(now.headers.get("docker-content-digest"), sha256(first), "the tag still names the writer's manifest");
  });
});
